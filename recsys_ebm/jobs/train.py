"""``train``: fit any registered model on a prepared dataset and save it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs._base import JobResult, TrackedJob, opt
from recsys_ebm.models import MODEL_PATHS

__all__ = ["DISTRIBUTED_MODELS", "TrainJob", "TrainResult", "train"]

#: models whose training runs data-parallel under torchrun (``distributed``)
DISTRIBUTED_MODELS = ("rbm", "softmax-rbm", "retriever")


@dataclass(frozen=True, kw_only=True)
class TrainJob(TrackedJob):
    """Fit ``model`` on the train split of ``data`` (valid for early stopping); save to ``out``.
    The test split is never read."""

    KIND = "train"
    INPUTS = ("data", "config")
    OUTPUTS = ("out",)
    # Config.from_sources's argument named in its messages
    ARGUMENTS = {"config_file": "config"}

    data: str = opt(help="prepared dataset directory (from `prepare`)")
    model: str = opt(help="which model to train", choices=sorted(MODEL_PATHS))
    config: str | None = opt(
        None,
        metavar="FILE.toml",
        help="TOML file of model config keys (top level, or under a [model] table)",
    )
    overrides: tuple[str, ...] = opt(
        (),
        flag="--set",
        metavar="KEY=VALUE",
        repeat=True,
        help="override one config key (repeatable), e.g. --set epochs=20 --set n_hidden=200",
    )
    search: tuple[str, ...] = opt(
        (),
        flag="--search",
        metavar="KEY=[V1,V2]",
        repeat=True,
        help="validation grid search (repeatable; the grid is every combination): fit every "
        "point on train, keep the best validation NDCG@10, e.g. --search 'n_hidden=[100, 400]'",
    )
    search_seeds: str | None = opt(
        None,
        metavar="S1,S2,...",
        help="with --search: fit every point once per seed and choose on the mean validation "
        "NDCG@10 (the first seed's fit is saved), e.g. --search-seeds 0,1,2",
    )
    out: str = opt(help="output model directory (written atomically)")
    overwrite: bool = opt(False, help="replace --out if it exists")
    distributed: bool = opt(
        False,
        help="data-parallel training, one process per rank: launch with `torchrun "
        "--nproc_per_node=N -m recsys_ebm train ... --distributed` (nccl on GPUs, gloo on CPUs; "
        "rank 0 logs and writes --out)",
    )

    def validate(self) -> None:
        super().validate()
        if self.distributed and self.model not in DISTRIBUTED_MODELS:
            raise ConfigError(
                f"distributed: expected a model with data-parallel training "
                f"({', '.join(DISTRIBUTED_MODELS)}), got {self.model!r}"
            )
        if self.search_seeds is not None and not self.search:
            raise ConfigError(
                f"search_seeds: expected a --search grid to go with it, got {self.search_seeds!r} "
                "and no grid"
            )
        if self.distributed and self.search:
            raise ConfigError(
                "search: expected no grid with distributed (run the search on one process), "
                f"got {list(self.search)}"
            )

    def input_paths(self) -> list[Path]:
        """The dataset, the config file, and a ranker's component directories."""
        from recsys_ebm.config import parse_overrides

        paths = super().input_paths()
        parts = parse_overrides(list(self.overrides)).get("components")
        if isinstance(parts, list):
            paths += [Path(p) for p in parts if isinstance(p, str) and p not in MODEL_PATHS]
        return paths


@dataclass(frozen=True)
class TrainResult(JobResult):
    model: str
    out: Path
    fit_seconds: float
    run_id: str | None = None
    #: data-parallel rank (``distributed``): only rank 0 wrote ``out`` and logged the run
    rank: int = 0

    def summary(self) -> str:
        if self.rank:
            return f"rank {self.rank}: trained {self.model} in {self.fit_seconds:.1f}s"
        lines = [f"trained {self.model} in {self.fit_seconds:.1f}s -> {self.out}"]
        if self.run_id is not None:
            lines.append(f"mlflow run: {self.run_id}")
        return "\n".join(lines)


def train(job: TrainJob) -> TrainResult:
    """Build the model config (``config`` file, then ``overrides``), fit, save atomically, and
    log the run (params, dataset, per-epoch metrics, fit time, the model directory's hash).
    With ``search``, every point of the grid is fitted and the best on validation is saved.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ConfigError: a bad model config key or value, or a bad ``search`` grid.
        ValueError: ``distributed`` outside torchrun (no RANK / WORLD_SIZE / LOCAL_RANK), or
            ``search`` on a dataset without a validation split.
    """
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.models import get_model_class

    out = Path(job.out)
    if out.exists() and not job.overwrite:
        raise FileExistsError(f"out: {out} exists (pass overwrite=True to replace it)")
    cls = get_model_class(job.model)
    config = cls.config_class.from_sources(job.config, list(job.overrides))
    if job.search:  # every point's config is checked before the data is read
        from recsys_ebm.models.search import grid_configs, parse_grid, parse_seeds

        grid = parse_grid(job.search, cls.config_class)
        grid_configs(config, grid)
        seeds = parse_seeds(job.search_seeds, config, grid)
        return _search(job, Dataset.load(job.data), cls, config, grid, seeds)
    dataset = Dataset.load(job.data)
    if not job.distributed:
        return _train(job, dataset, cls(config), config, main=True)
    from recsys_ebm.device import resolve_device
    from recsys_ebm.models.distributed import data_parallel

    # nccl on CUDA (this rank's GPU, cuda:LOCAL_RANK, becomes the current device, which
    # device="auto"/"cuda" then use), gloo on CPU
    with data_parallel(resolve_device(config.device)) as dp:
        if not dp.is_main:  # progress from rank 0 only (progress is no part of the checkpoint)
            config = config.replace(progress=False)
        result = _train(job, dataset, cls(config), config, main=dp.is_main, world=dp.world_size)
        return dataclasses.replace(result, rank=dp.rank)


def _train(
    job: TrainJob, dataset: Any, model: Any, config: Any, *, main: bool, world: int = 1
) -> TrainResult:
    """Fit and save; with ``main`` False (a data-parallel rank other than 0) nothing is logged
    or written."""
    import time

    from recsys_ebm.tracking import log_dataset, log_params_flat, metric_key, mlflow_run

    out = Path(job.out)
    with mlflow_run(
        f"train-{job.model}",
        tracking_uri=job.tracking_uri,
        experiment=job.experiment,
        nested=True,
        tags={"stage": "train", "model": job.model},
        enabled=not job.no_mlflow and main,
    ) as mlrun:
        callback = None
        if mlrun is not None:
            import mlflow

            log_params_flat({"model": job.model, **config.to_dict()})
            if job.distributed:
                mlflow.log_param("distributed.world_size", world)
            log_dataset(dataset)

            def callback(epoch: int, metrics: dict[str, float]) -> None:
                mlflow.log_metrics(
                    {metric_key(k): float(v) for k, v in metrics.items()}, step=epoch
                )

        t0 = time.perf_counter()
        model.fit_dataset(dataset, callback=callback)
        fit_seconds = time.perf_counter() - t0
        model.fit_info["fit_seconds"] = fit_seconds
        model.fit_info["dataset_fingerprint"] = dataset.fingerprint
        if not main:  # rank 0 writes the model
            return TrainResult(job.model, out, fit_seconds)
        model.save(out, overwrite=job.overwrite)
        if mlrun is not None:
            import mlflow

            mlflow.log_metric("fit_seconds", fit_seconds)
            from recsys_ebm.registry import record_trained_model

            # tags model_dir + its content hash; the weights are logged once, by `register`
            record_trained_model(out)
    return TrainResult(job.model, out, fit_seconds, mlrun.info.run_id if mlrun else None)


def _search(
    job: TrainJob,
    dataset: Any,
    cls: Any,
    config: Any,
    grid: dict[str, list[Any]],
    seeds: list[int] | None,
) -> TrainResult:
    """``train`` with a validation grid search (:mod:`recsys_ebm.models.search`): one nested
    MLflow run per point (its config, epoch curves, validation NDCG@10), the best point's model
    saved, its config and the search table logged on the stage's run and kept in ``fit_info``."""
    import json
    import time

    from recsys_ebm.models.search import METRIC, grid_points, grid_search
    from recsys_ebm.tracking import log_dataset, log_params_flat, metric_key, mlflow_run

    out = Path(job.out)
    enabled = not job.no_mlflow
    with mlflow_run(
        f"train-{job.model}",
        tracking_uri=job.tracking_uri,
        experiment=job.experiment,
        nested=True,
        tags={"stage": "train", "model": job.model, "search": "grid"},
        enabled=enabled,
    ) as mlrun:
        points = grid_points(grid)
        if mlrun is not None:
            import mlflow

            log_dataset(dataset)
            mlflow.log_param("search.grid", json.dumps(grid))
            mlflow.log_param("search.points", len(points))
        opened: list[Any] = []

        def fit_callback(i: int, point: dict[str, Any], seed: int | None) -> Any:
            if mlrun is None:
                return None
            import mlflow

            if seeds is None or seed == seeds[0]:  # a child run per point, closed in on_point
                ctx = mlflow_run(
                    f"search-{job.model}-{i}",
                    tracking_uri=job.tracking_uri,
                    experiment=job.experiment,
                    nested=True,
                    tags={"stage": "search", "model": job.model},
                )
                ctx.__enter__()
                opened.append(ctx)
                log_params_flat({"model": job.model, **config.replace(**point).to_dict()})
                if seeds is not None:
                    mlflow.log_param("search.seeds", json.dumps(seeds))
            # with several seeds, each seed's epoch curves under "seed{S}." in the point's run
            prefix = "" if seed is None else f"seed{seed}."

            def callback(epoch: int, metrics: dict[str, float]) -> None:
                mlflow.log_metrics(
                    {prefix + metric_key(k): float(v) for k, v in metrics.items()}, step=epoch
                )

            return callback

        def on_point(i: int, row: dict[str, Any], model: Any) -> None:
            if opened:
                import mlflow

                # not valid_ndcg_at_10: that name holds the point's per-epoch curve
                mlflow.log_metric(metric_key(f"search_valid_{METRIC}"), row[f"valid_{METRIC}"])
                mlflow.log_metric("fit_seconds", row["fit_seconds"])
                opened.pop().__exit__(None, None, None)
            print(
                f"search {job.model} {i + 1}/{len(points)}: "
                + ", ".join(f"{k}={v}" for k, v in row.items() if k in grid)
                + f": valid {METRIC} {row[f'valid_{METRIC}']:.4f} ({row['fit_seconds']:.1f}s)",
                flush=True,
            )

        t0 = time.perf_counter()
        try:
            result = grid_search(
                cls,
                config,
                grid,
                dataset,
                seeds=seeds,
                fit_callback=fit_callback,
                on_point=on_point,
            )
        except BaseException as exc:  # a failed point's child run ends FAILED
            while opened:
                opened.pop().__exit__(type(exc), exc, exc.__traceback__)
            raise
        fit_seconds = time.perf_counter() - t0
        model = result.model
        model.fit_info["fit_seconds"] = fit_seconds
        model.fit_info["dataset_fingerprint"] = dataset.fingerprint
        model.fit_info["search"] = {"grid": grid, "best": result.best, "table": result.table}
        model.save(out, overwrite=job.overwrite)
        if mlrun is not None:
            import mlflow

            from recsys_ebm.registry import record_trained_model

            log_params_flat({"model": job.model, **result.config.to_dict()})
            log_params_flat(result.best, prefix="search.best.")
            mlflow.log_metric(metric_key(f"search_best_valid_{METRIC}"), result.score)
            mlflow.log_metric("fit_seconds", fit_seconds)
            mlflow.log_dict({"grid": grid, "table": result.table}, "search.json")
            record_trained_model(out)
    return TrainResult(job.model, out, fit_seconds, mlrun.info.run_id if mlrun else None)
