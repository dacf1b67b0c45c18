"""``register``: register a trained model (pyfunc) in the MLflow registry, maybe promote it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs._base import JobResult, TrackedJob, opt

__all__ = ["RegisterJob", "RegisterJobResult", "register"]


@dataclass(frozen=True, kw_only=True)
class RegisterJob(TrackedJob):
    """Register the model of a train run (``run_id``, or the run that trained ``model_dir``) as
    a new version of ``name``."""

    KIND = "register"
    INPUTS = ("model_dir",)

    run_id: str | None = opt(
        None, flag="--run", exclusive="source", help="MLflow run id of a `recsys-ebm train` run"
    )
    model_dir: str | None = opt(
        None,
        exclusive="source",
        help="trained model directory (the train run that produced its current contents is "
        "looked up)",
    )
    name: str = opt(help="registered model name")
    promote_if_better: str | None = opt(
        None,
        metavar="METRIC",
        help="move the champion alias only if the new version beats it on METRIC (e.g. ndcg@10)",
    )
    lower_is_better: bool = opt(False, help="METRIC is a loss (smaller wins)")

    def validate(self) -> None:
        super().validate()
        if self.no_mlflow:
            raise ConfigError("no_mlflow: register writes to the MLflow registry; drop the flag")


@dataclass(frozen=True)
class RegisterJobResult(JobResult):
    result: Any  # recsys_ebm.registry.RegisterResult

    def summary(self) -> str:
        res = self.result
        return (
            f"registered {res.name} version {res.version} from run {res.run_id} "
            f"({res.model_uri})\nchampion: {res.reason}"
        )


def register(job: RegisterJob) -> RegisterJobResult:
    """See :func:`recsys_ebm.registry.register_model`."""
    from recsys_ebm.registry import register_model

    res = register_model(
        job.name,
        run_id=job.run_id,
        model_dir=job.model_dir,
        promote_if_better=job.promote_if_better,
        lower_is_better=job.lower_is_better,
        tracking_uri=job.tracking_uri,
        experiment=job.experiment,
    )
    return RegisterJobResult(res)
