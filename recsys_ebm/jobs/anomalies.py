"""``anomalies``: rank user profiles by RBM free energy (most implausible first)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs._base import JobConfig, JobResult, opt

__all__ = ["AnomaliesJob", "AnomaliesResult", "anomalies"]


@dataclass(frozen=True, kw_only=True)
class AnomaliesJob(JobConfig):
    """Free energy F(v) of every user's profile under ``model``, ranked, written to ``out``."""

    KIND = "anomalies"
    INPUTS = ("model", "data")
    OUTPUTS = ("out",)

    model: str = opt(help="saved RBM model directory")
    data: str = opt(help="prepared dataset directory")
    split: str = opt(
        "train",
        choices=("train", "history"),
        help="profiles to score: the training rows, or every known interaction "
        "(train + valid + fold-in) (default: train)",
    )
    out: str = opt(help="output .parquet or .csv (written atomically)")
    top: int = opt(10, help="print the N most anomalous (default 10)")

    def validate(self) -> None:
        super().validate()
        if Path(self.out).suffix not in (".parquet", ".csv"):
            raise ConfigError(f"out: expected a .parquet or .csv file, got {self.out}")


@dataclass(frozen=True)
class AnomaliesResult(JobResult):
    frame: Any  # polars.DataFrame: user_id, free_energy, ... most anomalous first
    out: Path
    top: int

    def summary(self) -> str:
        wrote = f"wrote {self.frame.height:,} scored profiles to {self.out}"
        return f"{self.frame.head(self.top)}\n{wrote}"


def anomalies(job: AnomaliesJob) -> AnomaliesResult:
    """Score, rank and write atomically (Parquet or CSV by ``out``'s suffix)."""
    from recsys_ebm.anomalies import anomaly_scores, scores_frame
    from recsys_ebm.compat import check_model_matches_dataset
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.io import atomic_file, write_parquet
    from recsys_ebm.models import load_model

    out = Path(job.out)
    model = load_model(job.model)
    dataset = Dataset.load(job.data)
    check_model_matches_dataset(model, dataset, argument="model")
    profiles = dataset.train if job.split == "train" else dataset.history("test")
    scores = anomaly_scores(model, profiles)
    frame = scores_frame(dataset.user_ids, scores, profiles.getnnz(axis=1))
    with atomic_file(out) as tmp:
        if out.suffix == ".parquet":
            write_parquet(frame, tmp)
        else:
            frame.write_csv(tmp)
    return AnomaliesResult(frame, out, job.top)
