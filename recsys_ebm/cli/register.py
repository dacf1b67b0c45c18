"""``recsys-ebm register``: register a trained model (pyfunc) and optionally promote it."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_tracking_options


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
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", dest="run_id", help="MLflow run id of a `recsys-ebm train` run")
    src.add_argument(
        "--model-dir",
        help="trained model directory (the train run that produced its current contents is "
        "looked up)",
    )
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument(
        "--promote-if-better",
        metavar="METRIC",
        default=None,
        help="move the champion alias only if the new version beats it on METRIC (e.g. ndcg@10)",
    )
    p.add_argument("--lower-is-better", action="store_true", help="METRIC is a loss (smaller wins)")
    add_tracking_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recsys_ebm.registry import register_model

    if args.no_mlflow:
        raise ValueError("--no-mlflow: register writes to the MLflow registry; drop the flag")
    res = register_model(
        args.name,
        run_id=args.run_id,
        model_dir=args.model_dir,
        promote_if_better=args.promote_if_better,
        lower_is_better=args.lower_is_better,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
    )
    print(f"registered {res.name} version {res.version} from run {res.run_id} ({res.model_uri})")
    print(f"champion: {res.reason}")
    return 0
