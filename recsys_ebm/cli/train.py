"""``recsys-ebm train``: fit any registered model on a prepared dataset and save it."""

from __future__ import annotations

import argparse
import time

from recsys_ebm.cli.common import add_model_config_options, add_tracking_options
from recsys_ebm.models import MODEL_PATHS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a prepared dataset",
        description="Fit a model on the train split (valid for early stopping) and save it. "
        "The test split is never read.",
    )
    p.add_argument("--data", required=True, help="prepared dataset directory (from `prepare`)")
    p.add_argument(
        "--model", required=True, choices=sorted(MODEL_PATHS), help="which model to train"
    )
    add_model_config_options(p)
    p.add_argument("--out", required=True, help="output model directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_tracking_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.models import get_model_class
    from recsys_ebm.tracking import log_dataset, log_params_flat, metric_key, mlflow_run

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out: {out} exists (pass --overwrite to replace it)")
    dataset = Dataset.load(args.data)
    cls = get_model_class(args.model)
    config = cls.config_class.from_sources(args.config, args.overrides)
    model = cls(config)
    with mlflow_run(
        f"train-{args.model}",
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        nested=True,
        tags={"stage": "train", "model": args.model},
        enabled=not args.no_mlflow,
    ) as mlrun:
        callback = None
        if mlrun is not None:
            import mlflow

            log_params_flat({"model": args.model, **config.to_dict()})
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
        model.save(out, overwrite=args.overwrite)
        if mlrun is not None:
            import mlflow

            mlflow.log_metric("fit_seconds", fit_seconds)
            from recsys_ebm.registry import record_trained_model

            # tags model_dir + its content hash; the weights are logged once, by `register`
            record_trained_model(out)
    print(f"trained {args.model} in {fit_seconds:.1f}s -> {out}")
    if mlrun is not None:
        print(f"mlflow run: {mlrun.info.run_id}")
    return 0
