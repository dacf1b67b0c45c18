"""``recsys-ebm recommend``: batch top-N recommendations to Parquet."""

from __future__ import annotations

import argparse

from recsys_ebm.cli.common import add_tracking_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend",
        help="write top-N recommendations for many users to a Parquet file",
        description="Score users in chunks and write one row per recommendation (user_id, rank, "
        "item_id, energy, model_version, fallback) to Parquet, atomically. Known users are "
        "served from their history in the dataset (train + valid + fold-in); --history adds new "
        "users. With a ranker, requested users with no history at all get its popularity "
        "fallback, flagged fallback=true; other models skip them.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="saved model directory, or a registered model: models:/NAME@ALIAS "
        "(e.g. models:/ranker@champion) or models:/NAME/VERSION",
    )
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument(
        "--users",
        default="all",
        help="'all', 'test' (users with test interactions) or a file of raw user ids "
        "(csv/parquet with a user_id column, or one id per line)",
    )
    p.add_argument(
        "--n",
        type=int,
        default=100,
        help="list length per user, > 0 (default: 100); capped at the catalogue size (the "
        "number of items in --data)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output Parquet file, written atomically. One job per output: OUT.lock is held "
        "while the job runs and a second job on the same --out fails at once",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="score only shard I of N (deterministic interleaved slice of users)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed job: keep finished chunks in OUT.parts/ (refused when the "
        "model, --data, the users, the --history file or an option changed)",
    )
    p.add_argument(
        "--history",
        default=None,
        help="csv/parquet of user_id,item_id histories for users absent from --data (every "
        "row needs both ids)",
    )
    p.add_argument("--chunk-size", type=int, default=2048, help="users per chunk (default 2048)")
    add_tracking_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    import tempfile
    from pathlib import Path

    from recsys_ebm.batch import (
        BatchIntegrityError,
        check_n,
        model_version,
        output_lock,
        parse_shard,
    )
    from recsys_ebm.models import load_model

    shard = parse_shard(args.shard)
    check_n(args.n)
    if args.chunk_size <= 0:
        raise ValueError(f"--chunk-size: expected a positive int, got {args.chunk_size}")
    # the lock first: a second job on the same --out fails before loading anything
    with (
        output_lock(Path(args.out)),
        tempfile.TemporaryDirectory(prefix="recsys-ebm-model-") as tmp,
    ):
        if args.model.startswith("models:/"):
            from recsys_ebm.registry import resolve_model_uri

            model_dir, version = resolve_model_uri(args.model, args.tracking_uri, tmp)
        else:
            model_dir = Path(args.model)
            version = model_version(model_dir) if (model_dir / "model.json").is_file() else ""
        model = load_model(model_dir, device="auto")
        try:
            return _run(args, model, model_dir, version, shard)
        except BatchIntegrityError as exc:  # not bad input: exit 1, but no traceback
            print(f"recsys-ebm {args.command}: error: {exc}", file=sys.stderr)
            return 1


def _run(args, model, model_dir, version, shard) -> int:  # noqa: ANN001
    from pathlib import Path

    from recsys_ebm.batch import model_version, run_batch
    from recsys_ebm.compat import check_model_matches_dataset
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.tracking import log_dataset, log_params_flat, mlflow_run

    dataset = Dataset.load(args.data)
    check_model_matches_dataset(model, dataset, argument=f"--model {args.model}")
    # what the job manifest (--resume) records of the model: the hash of its directory
    local = not args.model.startswith("models:/")
    model_hash = version if local and version else model_version(model_dir)
    with mlflow_run(
        "recommend",
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        nested=True,
        tags={"stage": "recommend", "model_dir": str(model_dir.resolve())},
        enabled=not args.no_mlflow,
    ) as run_:
        res = run_batch(
            model,
            dataset,
            Path(args.out),
            users=args.users,
            n=args.n,
            shard=shard,
            resume=args.resume,
            history_file=Path(args.history) if args.history else None,
            chunk_size=args.chunk_size,
            version=version,
            model_hash=model_hash,
        )
        if run_ is not None:
            import mlflow

            log_params_flat(
                {
                    "model": args.model,
                    "users": args.users,
                    "n": args.n,
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
            mlflow.set_tag("output", str(Path(args.out).resolve()))
    if res.n < args.n:
        print(f"note: --n {args.n} capped at the catalogue size, {res.n} items")
    print(
        f"wrote {res.n_rows:,} recommendations for {res.n_users:,} users to {res.out} "
        f"in {res.seconds:.1f}s ({res.chunks_done} chunks scored, {res.chunks_skipped} resumed)"
    )
    if res.unknown_users:
        print(
            f"note: {res.unknown_users} requested user ids are not in the dataset and were "
            "skipped (pass their histories with --history, or serve a ranker, whose popularity "
            "fallback answers users without history; its rows are flagged fallback=true)"
        )
    return 0
