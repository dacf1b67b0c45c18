"""``recsys-ebm train``: flags of :class:`recsys_ebm.jobs.train.TrainJob`."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_job_options, run_job_command
from recsys_ebm.jobs.train import TrainJob


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a prepared dataset",
        description="Fit a model on the train split (valid for early stopping) and save it. "
        "The test split is never read.",
    )
    add_job_options(p, TrainJob)
    p.set_defaults(func=run_job_command)
