"""``recsys-ebm anomalies``: rank user profiles by RBM free energy (most implausible first)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anomalies",
        help="score user profiles by RBM free energy (bots, shilling profiles first)",
        description="Compute the free energy F(v) of every user's profile under a trained RBM "
        "(F = -log p(v) + const) and write users ranked from most to least anomalous.",
    )
    p.add_argument("--model", required=True, help="saved RBM model directory")
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument(
        "--split",
        default="train",
        choices=("train", "history"),
        help="profiles to score: the training rows, or every known interaction "
        "(train + valid + fold-in) (default: train)",
    )
    p.add_argument("--out", required=True, help="output .parquet or .csv (written atomically)")
    p.add_argument("--top", type=int, default=10, help="print the N most anomalous (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recsys_ebm.anomalies import anomaly_scores, scores_frame
    from recsys_ebm.compat import check_model_matches_dataset
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.io import atomic_file, write_parquet
    from recsys_ebm.models import load_model

    out = Path(args.out)
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out: expected a .parquet or .csv file, got {out}")
    model = load_model(args.model)
    dataset = Dataset.load(args.data)
    check_model_matches_dataset(model, dataset, argument="--model")
    profiles = dataset.train if args.split == "train" else dataset.history("test")
    scores = anomaly_scores(model, profiles)
    frame = scores_frame(dataset.user_ids, scores, profiles.getnnz(axis=1))
    with atomic_file(out) as tmp:
        if out.suffix == ".parquet":
            write_parquet(frame, tmp)
        else:
            frame.write_csv(tmp)
    print(frame.head(args.top))
    print(f"wrote {frame.height:,} scored profiles to {out}")
    return 0
