"""The stages a user runs, as typed jobs: one module per stage, each with a frozen config (a
:class:`~recsys_ebm.config.Config`) and a plain function that takes it and returns a typed
result, e.g. ``train(TrainJob(...)) -> TrainResult``.

The CLI builds its flags from the config fields and calls the function; pipelines load their TOML
tables straight into the same configs. Errors name the config's fields (``out: ...``); the CLI
translates them to its flags. Importing a config is cheap (no numpy, torch, polars or mlflow).

    from recsys_ebm.jobs.train import TrainJob, train
    result = train(TrainJob(data="runs/data", model="ease", out="runs/ease", no_mlflow=True))
"""

from __future__ import annotations

import importlib
from typing import Any

from recsys_ebm.jobs._base import BAD_INPUT, JobConfig, error_message

__all__ = ["BAD_INPUT", "JOBS", "JobConfig", "error_message", "job_config", "run_job"]

#: stage -> (module under recsys_ebm.jobs, config class, job function)
JOBS: dict[str, tuple[str, str, str]] = {
    "prepare": ("prepare", "PrepareJob", "prepare"),
    "train": ("train", "TrainJob", "train"),
    "evaluate": ("evaluate", "EvaluateJob", "evaluate"),
    "recommend": ("recommend", "RecommendJob", "recommend"),
    "register": ("register", "RegisterJob", "register"),
    "anomalies": ("anomalies", "AnomaliesJob", "anomalies"),
}


def _part(kind: str, index: int) -> Any:
    if kind not in JOBS:
        raise ValueError(f"kind: expected one of {sorted(JOBS)}, got {kind!r}")
    module = importlib.import_module(f"recsys_ebm.jobs.{JOBS[kind][0]}")
    return getattr(module, JOBS[kind][index])


def job_config(kind: str) -> type[JobConfig]:
    """The config class of a stage (``"train"`` -> :class:`~recsys_ebm.jobs.train.TrainJob`)."""
    return _part(kind, 1)


def run_job(config: JobConfig) -> Any:
    """Run the job a config describes; returns its result."""
    return _part(config.KIND, 2)(config)
