"""Baselines under the one leak-free protocol: popularity, EASE, implicit's ALS and BPR.

    python benchmarks/baselines.py [--ml100k PATH] [--skip-ml100k]

Per dataset: a seeded per-user random split, 20% test and 10% validation. Hyperparameters are
chosen on the validation split (EASE's L2 from a grid; ALS/BPR from small grids), then every model
is refitted on train + valid (the 80% a user sees) and ranked over the full catalogue for every
test user, with the user's history masked. Prints NDCG/Recall@{10,20}, fit and evaluation time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GRIDS = {
    "popularity": [{}],
    "ease": [{"l2": v, "l2_grid": []} for v in (50.0, 100.0, 250.0, 500.0, 1000.0)],
    "als": [
        {"factors": f, "regularization": r, "alpha": a, "num_threads": 2}
        for f in (32, 64, 128)
        for r in (0.05,)
        for a in (1.0, 5.0)
    ],
    "bpr": [
        {"factors": f, "learning_rate": lr, "epochs": 200, "num_threads": 2}
        for f in (64, 128)
        for lr in (0.01, 0.05)
    ],
}


def run_dataset(label: str, ds) -> list[dict]:  # noqa: ANN001
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models import get_model_class

    print(
        f"\n== {label}: {ds.n_users:,} users x {ds.n_items:,} items, "
        f"train {ds.train.nnz:,} / valid {ds.valid.nnz:,} / test {ds.test.nnz:,}"
    )
    full_train = ds.history("test")  # train + valid: what the final model is fitted on
    rows = []
    for name, grid in GRIDS.items():
        cls = get_model_class(name)
        best, best_score = grid[0], -1.0
        if len(grid) > 1:
            for params in grid:
                m = cls(**params).fit(ds.train)
                score = evaluate_ranking(m, ds.history("valid"), ds.valid, (10,))["ndcg@10"]
                if score > best_score:
                    best, best_score = params, score
        t0 = time.perf_counter()
        model = cls(**best).fit(full_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate_ranking(model, full_train, ds.test, (10, 20))
        eval_s = time.perf_counter() - t0
        rows.append(
            {
                "dataset": label,
                "model": name,
                "params": best,
                **res,
                "fit_s": fit_s,
                "eval_s": eval_s,
                "valid_ndcg@10": best_score,
            }
        )
        print(
            f"{name:<11} NDCG@10 {res['ndcg@10']:.4f}  Recall@10 {res['recall@10']:.4f}  "
            f"NDCG@20 {res['ndcg@20']:.4f}  Recall@20 {res['recall@20']:.4f}  "
            f"fit {fit_s:6.2f}s  eval {eval_s:5.2f}s  {best}",
            flush=True,
        )
    return rows


EASE_CHILD = r"""
import resource, sys, time
import numpy as np, scipy.sparse as sp
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.models.ease import EASE
n_items = int(sys.argv[1])
log = planted_communities(n_users=30_000, n_items=n_items, n_interactions=1_500_000, seed=0)
x = sp.csr_matrix((np.ones(log.height, np.float32),
                   (log["user_id"].to_numpy(), log["item_id"].to_numpy())), shape=(30_000, n_items))
x.data[:] = 1.0
t0 = time.perf_counter()
EASE(l2=500.0, l2_grid=(), device="cpu").fit(x)
print(f"EASE on {n_items:,} items: fit {time.perf_counter() - t0:.1f} s, peak RSS "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB "
      f"(formula 8 I^2 bytes = {8 * n_items**2 / 2**30:.2f} GiB)")
"""


def ease_memory(n_items: int) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", EASE_CHILD, str(n_items)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    print(out.stdout.strip())


def eval_speed() -> None:
    """Full-ranking evaluation of every test user of a 6,000 x 4,000 dataset, for all models."""
    import tempfile

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.synthetic import planted_communities
    from recsys_ebm.evaluation.evaluate import evaluate_models
    from recsys_ebm.models import get_model_class

    with tempfile.TemporaryDirectory() as tmp:
        log = planted_communities(n_users=6000, n_items=4000, n_interactions=400_000, seed=0)
        path = Path(tmp) / "log.parquet"
        log.drop("community").write_parquet(path)
        ds = prepare_dataset(path, split="random", test_fraction=0.2, valid_fraction=0.0)
    params = {
        "ease": {"l2_grid": []},
        "als": {"num_threads": 2},
        "bpr": {"num_threads": 2},
        "rbm": {"epochs": 3, "patience": 0, "progress": False},
    }
    models = {
        n: get_model_class(n)(**params.get(n, {})).fit(ds.train)
        for n in ("popularity", "ease", "als", "bpr", "rbm")
    }
    t0 = time.perf_counter()
    res = evaluate_models(ds, models, (10, 20, 50), n_boot=1000)
    total = time.perf_counter() - t0
    per = ", ".join(f"{m.name} {m.seconds:.2f}s" for m in res.models)
    print(
        f"evaluate_models on {res.n_users:,} users x {ds.n_items:,} items, 5 models, K=10,20,50, "
        f"1000 bootstrap resamples: {total:.1f} s in total (ranking + metrics: {per})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--skip-ml100k", action="store_true")
    ap.add_argument(
        "--ease-items",
        type=int,
        default=0,
        help="also fit EASE on a synthetic catalogue of this many items (e.g. 20000) "
        "in a subprocess and print its fit time and peak RSS",
    )
    ap.add_argument(
        "--eval-speed",
        action="store_true",
        help="also time the evaluation of 5 models on a 6,000 x 4,000 dataset",
    )
    args = ap.parse_args()
    if args.eval_speed:
        eval_speed()
    if args.ease_items:
        ease_memory(args.ease_items)
    from recsys_ebm.data.prepare import prepare_dataset

    opts = dict(split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
    rows = []
    ml = Path(args.ml100k)
    if (ml / "u.data").is_file() and not args.skip_ml100k:
        rows += run_dataset("MovieLens 100K", prepare_dataset(ml, **opts))
    else:
        why = "--skip-ml100k" if args.skip_ml100k else f"{ml} not found"
        print(f"MovieLens 100K: skipped ({why})")
    rows += run_dataset(
        "ml-latest-small", prepare_dataset(ROOT / "data" / "ml-latest-small", **opts)
    )
    print("\n| dataset | model | NDCG@10 | Recall@10 | NDCG@20 | Recall@20 | fit (s) | eval (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['model']} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | "
            f"{r['ndcg@20']:.4f} | {r['recall@20']:.4f} | {r['fit_s']:.2f} | {r['eval_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
