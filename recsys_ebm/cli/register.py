"""``recsys-ebm register``: flags of :class:`recsys_ebm.jobs.register.RegisterJob`."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_job_options, run_job_command
from recsys_ebm.jobs.register import RegisterJob


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "register",
        help="register a trained model in the MLflow model registry",
        description="Log a train run's model once into that run as an MLflow pyfunc model "
        "(servable with `mlflow models serve -m models:/NAME@champion`) and register it as a new "
        "version of NAME that points at that one copy. A run registers its own model only: if "
        "its model directory was retrained or changed since, registration is refused and names "
        "the run that trained the directory's current contents. With --promote-if-better "
        "METRIC the 'champion' alias moves to the new version only "
        "if it beats the champion on METRIC on the same dataset fingerprint; the metric is read "
        "from the latest `recsys-ebm evaluate` run of that model directory, else from the train "
        "run's own metrics.",
    )
    add_job_options(p, RegisterJob)
    p.set_defaults(func=run_job_command)
