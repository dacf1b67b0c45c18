"""``recsys-ebm`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Exit codes: 0 success, 2 bad input or configuration (message on stderr), 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["build_parser", "main"]

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
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"recsys_ebm.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    # MLflow's per-file artifact progress bars flood logs of batch jobs and pipelines; a user
    # who wants them sets the variable to true
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"recsys-ebm {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only or full disk, a directory where a file goes, ...
        print(f"recsys-ebm {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2


def os_error_message(exc: OSError) -> str:
    """One line naming the path and the cause: 'cannot write /x/y: No space left on device'."""
    import errno

    hint = {
        errno.ENOSPC: " (free some space or choose another --out)",
        errno.EDQUOT: " (disk quota exceeded: free some space or choose another --out)",
        errno.EROFS: " (read-only file system: choose another --out)",
        errno.EACCES: " (permission denied: choose a writable --out)",
        errno.EPERM: " (not permitted: choose a writable --out)",
    }.get(exc.errno or 0, "")
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}{hint}" if where else f"{reason}{hint}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
