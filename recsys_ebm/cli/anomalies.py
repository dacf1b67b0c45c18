"""``recsys-ebm anomalies``: flags of :class:`recsys_ebm.jobs.anomalies.AnomaliesJob`."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_job_options, run_job_command
from recsys_ebm.jobs.anomalies import AnomaliesJob


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anomalies",
        help="score user profiles by RBM free energy (bots, shilling profiles first)",
        description="Compute the free energy F(v) of every user's profile under a trained RBM "
        "(F = -log p(v) + const) and write users ranked from most to least anomalous.",
    )
    add_job_options(p, AnomaliesJob)
    p.set_defaults(func=run_job_command)
