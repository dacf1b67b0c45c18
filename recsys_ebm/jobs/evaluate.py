"""``evaluate``: leak-free full-ranking evaluation of saved models, with a report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs._base import JobResult, TrackedJob, opt

__all__ = ["EvaluateJob", "EvaluateResult", "evaluate"]


@dataclass(frozen=True, kw_only=True)
class EvaluateJob(TrackedJob):
    """Score ``models`` on the ``split`` of ``data``; write report.html, report.md and
    metrics.json to ``report``."""

    KIND = "evaluate"
    INPUTS = ("data", "models")
    OUTPUTS = ("report",)

    data: str = opt(help="prepared dataset directory")
    models: tuple[str, ...] = opt(
        flag="--model",
        metavar="MODEL_DIR",
        repeat=True,
        help="saved model directory (repeatable)",
    )
    k: tuple[int, ...] = opt((10, 20, 50), help="cut-offs (default: 10,20,50)")
    split: str = opt(
        "test", choices=("test", "valid"), help="which held-out split to score (default: test)"
    )
    recall_denominator: str = opt(
        "relevant",
        choices=("relevant", "min"),
        help="Recall@K denominator: |test items| (relevant) or min(K, |test items|)",
    )
    bootstrap: int = opt(1000, help="bootstrap resamples for the 95% intervals (default: 1000)")
    seed: int = opt(0, help="seed of bootstrap and sampling")
    report: str = opt(help="output report directory (atomic)")
    overwrite: bool = opt(False, help="replace --report if it exists")

    def validate(self) -> None:
        super().validate()
        if not self.models:
            raise ConfigError("models: expected at least one model directory, got none")
        if not self.k or min(self.k) <= 0:
            raise ConfigError(f"k: expected positive cut-offs, got {list(self.k)}")
        if self.bootstrap < 1:
            raise ConfigError(f"bootstrap: expected a positive int, got {self.bootstrap}")


@dataclass(frozen=True)
class EvaluateResult(JobResult):
    result: Any  # recsys_ebm.evaluation.evaluate.EvaluationResult
    report: Path
    run_id: str | None = None

    def summary(self) -> str:
        res = self.result
        cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in res.ks] + ["mrr"]
        # rating models (predict_ratings) add RMSE / MAE; "-" for the models without them
        errs = [c for c in ("rmse", "mae") if any(c in m.extra for m in res.models)]
        lines = [f"{'model':<16}" + "".join(f"{c:>11}" for c in cols + errs)]
        for m in res.models:
            vals = [f"{m.means[c]:>11.4f}" for c in cols]
            vals += [f"{m.extra[c]:>11.4f}" if c in m.extra else f"{'-':>11}" for c in errs]
            lines.append(f"{m.name:<16}" + "".join(vals))
        lines.append(
            f"\nreport: {self.report / 'report.html'}  (markdown: {self.report / 'report.md'})"
        )
        return "\n".join(lines)


def evaluate(job: EvaluateJob) -> EvaluateResult:
    """Evaluate, write the report atomically, and log the run (one nested run per model,
    tagged with the exact contents scored, so promotion reads that model's figure only).

    Raises:
        FileExistsError: ``report`` exists and ``overwrite`` is False.
        ValueError: a model was trained on another dataset.
    """
    from recsys_ebm import __version__
    from recsys_ebm.batch import model_version
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.evaluation.evaluate import evaluate_models
    from recsys_ebm.evaluation.report import write_report
    from recsys_ebm.models import load_model
    from recsys_ebm.registry import MODEL_VERSION_TAG
    from recsys_ebm.tracking import git_commit, log_dataset, log_params_flat, metric_key, mlflow_run

    out = Path(job.report)
    if out.exists() and not job.overwrite:
        raise FileExistsError(f"report: {out} exists (pass overwrite=True to replace it)")
    dataset = Dataset.load(job.data)
    models = {}
    for path in job.models:
        model = load_model(path)
        if model.n_items != dataset.n_items:
            raise ValueError(
                f"models: {path} was trained on {model.n_items} items, the dataset has "
                f"{dataset.n_items}; evaluate a model on the dataset it was trained on"
            )
        fp = model.fit_info.get("dataset_fingerprint")
        if fp and fp != dataset.fingerprint:
            raise ValueError(
                f"models: {path} was trained on dataset {fp}, not {dataset.fingerprint}"
            )
        name = Path(path).name
        models[name if name not in models else f"{name}-{len(models)}"] = model
    res = evaluate_models(
        dataset,
        models,
        job.k,
        split=job.split,
        recall_denominator=job.recall_denominator,
        n_boot=job.bootstrap,
        seed=job.seed,
    )
    meta = {
        "package_version": __version__,
        "git_commit": git_commit(),
        "dataset": str(Path(job.data).resolve()),
        "models": [str(Path(p).resolve()) for p in job.models],
        "split": job.split,
        "k": list(job.k),
    }
    write_report(res, out, dataset=dataset, meta=meta, overwrite=job.overwrite)
    with mlflow_run(
        "evaluate",
        tracking_uri=job.tracking_uri,
        experiment=job.experiment,
        nested=True,
        tags={"stage": "evaluate"},
        enabled=not job.no_mlflow,
    ) as run_:
        if run_ is not None:
            import mlflow

            log_params_flat(
                {
                    "split": job.split,
                    "k": list(job.k),
                    "recall_denominator": job.recall_denominator,
                    "models": list(models),
                }
            )
            log_dataset(dataset)
            for m in res.models:
                metrics = {**m.means, **m.beyond, **m.extra}
                mlflow.log_metrics({f"{m.name}.{metric_key(k)}": v for k, v in metrics.items()})
                model_path = Path(job.models[list(models).index(m.name)])
                with mlflow_run(
                    f"evaluate-{m.name}",
                    nested=True,
                    experiment=job.experiment,
                    tags={
                        "stage": "evaluate-model",
                        "model": m.name,
                        "model_dir": str(model_path.resolve()),
                        # the exact contents scored, so promotion reads this model's figure only
                        MODEL_VERSION_TAG: model_version(model_path),
                        "dataset.fingerprint": dataset.fingerprint,
                    },
                ):
                    mlflow.log_metrics({metric_key(k): v for k, v in metrics.items()})
            mlflow.log_artifacts(str(out), artifact_path="report")
    return EvaluateResult(res, out, run_.info.run_id if run_ is not None else None)
