"""``recsys-ebm evaluate``: flags of :class:`recsys_ebm.jobs.evaluate.EvaluateJob`."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_job_options, run_job_command
from recsys_ebm.jobs.evaluate import EvaluateJob


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from exc
    if not ks or min(ks) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive cut-offs, got {text!r}")
    return ks


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate models on the test (or valid) split and write a report",
        description="Rank the whole catalogue for every test user from their history (train, + "
        "valid, + fold-in), masking history items at call time, and score against the held-out "
        "split. Writes report.html (plots embedded), report.md and metrics.json.",
    )
    add_job_options(p, EvaluateJob, parse={"k": _ks, "bootstrap": _positive_int})
    p.set_defaults(func=run_job_command)
