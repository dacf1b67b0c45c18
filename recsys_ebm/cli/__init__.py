"""``recsys-ebm`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Exit codes: 0 success, 2 bad input or configuration (message on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from recsys_ebm.cli.common import add_threads_option
from recsys_ebm.jobs._base import os_error_message

__all__ = ["build_parser", "main", "os_error_message"]

#: subcommand -> module under recsys_ebm.cli; each defines add_parser(subparsers) and run(args).
SUBCOMMANDS = [
    "prepare",
    "train",
    "evaluate",
    "recommend",
    "run",
    "register",
    "anomalies",
]


def build_parser() -> argparse.ArgumentParser:
    from recsys_ebm import __version__

    parser = argparse.ArgumentParser(
        prog="recsys-ebm",
        description=(
            "Energy-based recommender systems. Every model assigns an energy E(user, item), "
            "lower = better; recommending serves the lowest-energy items."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "typical flow:\n"
            "  recsys-ebm prepare --out runs/data            # bundled ml-latest-small\n"
            "  recsys-ebm train --data runs/data --model rbm --out runs/rbm\n"
            "  recsys-ebm evaluate --data runs/data --model runs/rbm --report runs/report\n"
            "  recsys-ebm recommend --model runs/rbm --data runs/data --out recs.parquet\n"
            "\nrun `recsys-ebm SUBCOMMAND --help` for each subcommand's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"recsys-ebm {__version__}")
    add_threads_option(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"recsys_ebm.cli.{name}")
        module.add_parser(sub)
        # also after the subcommand; SUPPRESS: an absent flag there keeps the one before it
        add_threads_option(sub.choices[name], argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    from recsys_ebm.cli.common import apply_threads, translate
    from recsys_ebm.device import prepare_openmp
    from recsys_ebm.jobs import BAD_INPUT, error_message

    # MLflow's per-file artifact progress bars flood logs of batch jobs and pipelines; a user
    # who wants them sets the variable to true
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # OpenMP's idle threads spin briefly, then sleep (read once, when torch loads OpenMP)
    prepare_openmp()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not getattr(args, "threads_later", False):  # `run` waits for its pipeline file
            apply_threads(args)
        return int(args.func(args) or 0)
    except BAD_INPUT as exc:  # bad input; OSError: read-only or full disk, ...
        # the jobs name their Python arguments (out: ...); the user typed flags (--out: ...)
        msg = translate(error_message(exc), args)
        print(f"recsys-ebm {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
