"""``recsys-ebm evaluate``: leak-free full-ranking evaluation of models, with a report."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_tracking_options


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from exc
    if not ks or min(ks) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive cut-offs, got {text!r}")
    return ks


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate models on the test (or valid) split and write a report",
        description="Rank the whole catalogue for every test user from their history (train, + "
        "valid, + fold-in), masking history items at call time, and score against the held-out "
        "split. Writes report.html (plots embedded), report.md and metrics.json.",
    )
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        required=True,
        metavar="MODEL_DIR",
        help="saved model directory (repeatable)",
    )
    p.add_argument("--k", type=_ks, default=(10, 20, 50), help="cut-offs (default: 10,20,50)")
    p.add_argument(
        "--split",
        choices=("test", "valid"),
        default="test",
        help="which held-out split to score (default: test)",
    )
    p.add_argument(
        "--recall-denominator",
        choices=("relevant", "min"),
        default="relevant",
        help="Recall@K denominator: |test items| (relevant) or min(K, |test items|)",
    )
    p.add_argument(
        "--bootstrap",
        type=_positive_int,
        default=1000,
        help="bootstrap resamples for the 95%% intervals (default: 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of bootstrap and sampling")
    p.add_argument("--report", required=True, help="output report directory (atomic)")
    p.add_argument("--overwrite", action="store_true", help="replace --report if it exists")
    add_tracking_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recsys_ebm import __version__
    from recsys_ebm.batch import model_version
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.evaluation.evaluate import evaluate_models
    from recsys_ebm.evaluation.report import write_report
    from recsys_ebm.models import load_model
    from recsys_ebm.registry import MODEL_VERSION_TAG
    from recsys_ebm.tracking import (
        git_commit,
        log_dataset,
        log_params_flat,
        metric_key,
        mlflow_run,
    )

    out = Path(args.report)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--report: {out} exists (pass --overwrite to replace it)")
    dataset = Dataset.load(args.data)
    models = {}
    for path in args.models:
        model = load_model(path)
        if model.n_items != dataset.n_items:
            raise ValueError(
                f"--model: {path} was trained on {model.n_items} items, the dataset has "
                f"{dataset.n_items}; evaluate a model on the dataset it was trained on"
            )
        fp = model.fit_info.get("dataset_fingerprint")
        if fp and fp != dataset.fingerprint:
            raise ValueError(
                f"--model: {path} was trained on dataset {fp}, not {dataset.fingerprint}"
            )
        name = Path(path).name
        models[name if name not in models else f"{name}-{len(models)}"] = model
    res = evaluate_models(
        dataset,
        models,
        args.k,
        split=args.split,
        recall_denominator=args.recall_denominator,
        n_boot=args.bootstrap,
        seed=args.seed,
    )
    meta = {
        "package_version": __version__,
        "git_commit": git_commit(),
        "dataset": str(Path(args.data).resolve()),
        "models": [str(Path(p).resolve()) for p in args.models],
        "split": args.split,
        "k": list(args.k),
    }
    write_report(res, out, dataset=dataset, meta=meta, overwrite=args.overwrite)
    with mlflow_run(
        "evaluate",
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        nested=True,
        tags={"stage": "evaluate"},
        enabled=not args.no_mlflow,
    ) as run_:
        if run_ is not None:
            import mlflow

            log_params_flat(
                {
                    "split": args.split,
                    "k": list(args.k),
                    "recall_denominator": args.recall_denominator,
                    "models": list(models),
                }
            )
            log_dataset(dataset)
            for m in res.models:
                mlflow.log_metrics(
                    {
                        f"{m.name}.{metric_key(k)}": v
                        for k, v in {**m.means, **m.beyond, **m.extra}.items()
                    }
                )
                model_path = Path(args.models[list(models).index(m.name)])
                with mlflow_run(
                    f"evaluate-{m.name}",
                    nested=True,
                    experiment=args.experiment,
                    tags={
                        "stage": "evaluate-model",
                        "model": m.name,
                        "model_dir": str(model_path.resolve()),
                        # the exact contents scored, so promotion reads this model's figure only
                        MODEL_VERSION_TAG: model_version(model_path),
                        "dataset.fingerprint": dataset.fingerprint,
                    },
                ):
                    mlflow.log_metrics(
                        {metric_key(k): v for k, v in {**m.means, **m.beyond, **m.extra}.items()}
                    )
            mlflow.log_artifacts(str(out), artifact_path="report")
    _print_table(res)
    print(f"\nreport: {out / 'report.html'}  (markdown: {out / 'report.md'})")
    return 0


def _print_table(res) -> None:  # noqa: ANN001
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in res.ks] + ["mrr"]
    # rating models (predict_ratings) add RMSE / MAE; "-" for the models without them
    errs = [c for c in ("rmse", "mae") if any(c in m.extra for m in res.models)]
    print(f"{'model':<16}" + "".join(f"{c:>11}" for c in cols + errs))
    for m in res.models:
        vals = [f"{m.means[c]:>11.4f}" for c in cols]
        vals += [f"{m.extra[c]:>11.4f}" if c in m.extra else f"{'-':>11}" for c in errs]
        print(f"{m.name:<16}" + "".join(vals))
