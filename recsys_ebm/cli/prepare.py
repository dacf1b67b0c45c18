"""``recsys-ebm prepare``: flags of :class:`recsys_ebm.jobs.prepare.PrepareJob`."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_job_options, run_job_command
from recsys_ebm.data.prepare_options import FORMATS, SPLITS
from recsys_ebm.jobs.prepare import PrepareJob, format_summary

__all__ = ["FORMATS", "SPLITS", "add_parser", "format_summary"]

#: the order of the options in the usage line (the grouped ones in field order)
_ORDER = ("input", "format", "out", "overwrite")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="read, clean, filter, split and index an interaction log",
        description="Read an interaction log, drop duplicates, aggregate repeated (user, item) "
        "pairs (latest rating, earliest timestamp), k-core filter, split without leakage and "
        "write a dataset directory (Parquet interactions, CSR matrices, vocabularies, manifest). "
        "Without --input the bundled MovieLens ml-latest-small is used.",
    )
    grouped = [
        f
        for f in PrepareJob.__dataclass_fields__
        if PrepareJob.__dataclass_fields__[f].metadata.get("group")
    ]
    add_job_options(p, PrepareJob, order=[*_ORDER, *grouped, "quiet"])
    p.set_defaults(func=run_job_command)
