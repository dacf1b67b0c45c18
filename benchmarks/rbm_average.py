"""The RBM's iterate averaging (``RBMConfig.average``) chosen on validation only (issue 12).

    python benchmarks/rbm_average.py [--datasets ml-100k,ml-latest-small,movietweetings-100k]
        [--ml100k PATH] [--averages 0,0.5,0.8,0.9,0.95] [--set JSON] [--threads 1]

Each decay a runs the benchmark's own RBM protocol one split back
(:func:`quality.validation_replica`: each user's training pairs split again, 1/8 as inner
validation; the outer validation split plays test; test is never read): the RBM with its
defaults but ``average = a`` early-stops on the inner validation split, is refitted on the outer
train for its best epoch count (``quality.early_stop_refit``), and ranks the outer validation
items from the outer train history, masked. It prints NDCG@10 per decay and the ratio to EASE's
(L2 searched on the inner validation split, refitted) in the same run. ``average = 0`` is the
raw CD iterate (the default until 2026-12-07).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (  # noqa: E402
    DATASETS,
    SPLIT,
    dataset_names,
    dataset_path,
    early_stop_refit,
    select_refit,
    validation_replica,
)


def main() -> None:
    import torch

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.evaluation.protocol import evaluate_ranking

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--averages", default="0,0.5,0.8,0.9,0.95", help="decays to compare")
    ap.add_argument("--set", default="{}", help="other RBMConfig fields, e.g. '{\"epochs\": 60}'")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    extra = json.loads(args.set)
    torch.set_num_threads(args.threads)
    averages = [float(a) for a in args.averages.split(",") if a.strip()]
    for name in dataset_names(ap, args.datasets):
        if (path := dataset_path(name, args.ml100k)) is None:
            continue
        ds = validation_replica(prepare_dataset(path, **SPLIT))
        hist = ds.history("test")
        grid = [{"l2": v, "l2_grid": []} for v in (50.0, 100.0, 250.0, 500.0, 1000.0)]
        ease, *_ = select_refit("ease", grid, ds, "cpu", args.threads)
        base = evaluate_ranking(ease, hist, ds.test, (10,))["ndcg@10"]
        print(
            f"\n{name} (one split back): EASE {base:.4f} (L2 {ease.config.l2:g}); RBM {extra}",
            flush=True,
        )
        for a in averages:
            t0 = time.perf_counter()
            params = {**extra, "average": a}
            model, _, desc, first = early_stop_refit("rbm", ds, "cpu", args.threads, params)
            s = evaluate_ranking(model, hist, ds.test, (10,))["ndcg@10"]
            print(
                f"  RBM average {a:<5g} NDCG@10 {s:.4f} ({s / base:.3f} x EASE), {desc}, "
                f"inner valid {first.fit_info['best_valid_ndcg@10']:.4f}, "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
