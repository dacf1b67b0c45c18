"""``recommend``: batch top-N recommendations to Parquet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs._base import JobResult, TrackedJob, opt

__all__ = ["RecommendJob", "RecommendResult", "recommend"]


@dataclass(frozen=True, kw_only=True)
class RecommendJob(TrackedJob):
    """Score users in chunks and write one row per recommendation to ``out``, atomically."""

    KIND = "recommend"
    INPUTS = ("model", "data", "users", "history")
    OUTPUTS = ("out",)
    # arguments of run_batch (dataset, history_file) and resolve_model_uri (uri) named in
    # their messages
    ARGUMENTS = {"dataset": "data", "history_file": "history", "uri": "model"}

    model: str = opt(
        help="saved model directory, or a registered model: models:/NAME@ALIAS "
        "(e.g. models:/ranker@champion) or models:/NAME/VERSION",
    )
    data: str = opt(help="prepared dataset directory")
    users: str = opt(
        "all",
        help="'all', 'test' (users with test interactions) or a file of raw user ids "
        "(csv/parquet with a user_id column, or one id per line)",
    )
    n: int = opt(
        100,
        help="list length per user, > 0 (default: 100); capped at the catalogue size (the "
        "number of items in --data)",
    )
    out: str = opt(
        help="output Parquet file, written atomically. One job per output: OUT.lock is held "
        "while the job runs and a second job on the same --out fails at once",
    )
    shard: str | None = opt(
        None,
        metavar="I/N",
        help="score only shard I of N (deterministic interleaved slice of users)",
    )
    resume: bool = opt(
        False,
        help="continue a killed job: keep finished chunks in OUT.parts/ (refused when the "
        "model, --data, the users, the --history file or an option changed)",
    )
    history: str | None = opt(
        None,
        help="csv/parquet of user_id,item_id histories for users absent from --data (every "
        "row needs both ids)",
    )
    chunk_size: int = opt(2048, help="users per chunk (default 2048)")

    def validate(self) -> None:
        super().validate()
        if self.n <= 0:
            raise ConfigError(f"n: expected a positive int (items per user), got {self.n}")
        if self.chunk_size <= 0:
            raise ConfigError(f"chunk_size: expected a positive int, got {self.chunk_size}")

    def input_paths(self) -> list[Path]:
        paths = super().input_paths()
        if self.users in ("all", "test"):
            paths.remove(Path(self.users))
        return paths


@dataclass(frozen=True)
class RecommendResult(JobResult):
    batch: Any  # recsys_ebm.batch.BatchResult
    n_requested: int
    model_version: str

    def summary(self) -> str:
        res = self.batch
        lines = []
        if res.n < self.n_requested:
            lines.append(
                f"note: --n {self.n_requested} capped at the catalogue size, {res.n} items"
            )
        lines.append(
            f"wrote {res.n_rows:,} recommendations for {res.n_users:,} users to {res.out} "
            f"in {res.seconds:.1f}s ({res.chunks_done} chunks scored, "
            f"{res.chunks_skipped} resumed)"
        )
        if res.unknown_users:
            lines.append(
                f"note: {res.unknown_users} requested user ids are not in the dataset and were "
                "skipped (pass their histories with --history, or serve a ranker, whose "
                "popularity fallback answers users without history; its rows are flagged "
                "fallback=true)"
            )
        return "\n".join(lines)


def recommend(job: RecommendJob) -> RecommendResult:
    """Resolve the model (a directory or a ``models:/`` URI), serve the users, log the run.

    Raises:
        ValueError, FileNotFoundError: bad input (the model, the users, the history file...).
        BatchIntegrityError: a resumed job's parts do not match (not bad input).
    """
    import tempfile

    from recsys_ebm.batch import model_version, output_lock, parse_shard

    shard = parse_shard(job.shard)
    # the lock first: a second job on the same out fails before loading anything
    with (
        output_lock(Path(job.out)),
        tempfile.TemporaryDirectory(prefix="recsys-ebm-model-") as tmp,
    ):
        from recsys_ebm.models import load_model

        if job.model.startswith("models:/"):
            from recsys_ebm.registry import resolve_model_uri

            model_dir, version = resolve_model_uri(job.model, job.tracking_uri, tmp)
        else:
            model_dir = Path(job.model)
            version = model_version(model_dir) if (model_dir / "model.json").is_file() else ""
        model = load_model(model_dir, device="auto")
        return _serve(job, model, model_dir, version, shard)


def _serve(
    job: RecommendJob, model: Any, model_dir: Path, version: str, shard: tuple[int, int]
) -> RecommendResult:
    from recsys_ebm.batch import model_version, run_batch
    from recsys_ebm.compat import check_model_matches_dataset
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.tracking import log_dataset, log_params_flat, mlflow_run

    dataset = Dataset.load(job.data)
    check_model_matches_dataset(model, dataset, argument="model")
    # what the job manifest (resume) records of the model: the hash of its directory
    local = not job.model.startswith("models:/")
    model_hash = version if local and version else model_version(model_dir)
    with mlflow_run(
        "recommend",
        tracking_uri=job.tracking_uri,
        experiment=job.experiment,
        nested=True,
        tags={"stage": "recommend", "model_dir": str(model_dir.resolve())},
        enabled=not job.no_mlflow,
    ) as run_:
        res = run_batch(
            model,
            dataset,
            Path(job.out),
            users=job.users,
            n=job.n,
            shard=shard,
            resume=job.resume,
            history_file=Path(job.history) if job.history else None,
            chunk_size=job.chunk_size,
            version=version,
            model_hash=model_hash,
        )
        if run_ is not None:
            import mlflow

            log_params_flat(
                {
                    "model": job.model,
                    "users": job.users,
                    "n": job.n,
                    "shard": f"{shard[0]}/{shard[1]}",
                    "model_version": version,
                }
            )
            log_dataset(dataset)
            mlflow.log_metrics(
                {
                    "users": res.n_users,
                    "rows": res.n_rows,
                    "seconds": res.seconds,
                    "users_per_second": res.n_users / max(res.seconds, 1e-9),
                }
            )
            mlflow.set_tag("output", str(Path(job.out).resolve()))
    return RecommendResult(res, job.n, version)
