"""Ranker quality on MovieLens 100K: the default ranker against every single model.

    python benchmarks/ranker.py [--ml100k PATH] [--components ease,als,rbm]

Protocol (the baselines' one): per-user random split, 20% test and 10% of the rest as validation,
seed 0. Single models choose hyperparameters on validation (EASE's L2 grid, ALS's small grid),
then are refitted on train + valid; the RBM (and the retriever, when registered) early-stops on
validation and is not refitted. The ranker uses its defaults: components fitted the same way,
blend weights by coordinate search on validation NDCG@10 (history = train), then the refit.
Every model ranks the whole catalogue for every test user from train + valid, history masked.
Per-user NDCG@10 differences are tested with a paired t-test and a Wilcoxon signed-rank test
(``recsys_ebm.evaluation.stats.paired_test``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def per_user(model, ds) -> dict[str, np.ndarray]:  # noqa: ANN001
    from recsys_ebm.evaluation.metrics import ranking_metrics

    hist, target = ds.history("test", values=model.history_values), ds.test
    rows = ds.eval_users("test")
    items, _ = model.recommend(hist[rows], n=20, users=rows)
    return ranking_metrics(items, target[rows], (10, 20))


def single_models(ds) -> dict:  # noqa: ANN001
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models import MODEL_PATHS, get_model_class

    grids = {
        "popularity": [{}],
        "ease": [{"l2": v, "l2_grid": []} for v in (50.0, 100.0, 250.0, 500.0, 1000.0)],
        "als": [
            {"factors": f, "alpha": a, "num_threads": 2} for f in (32, 64, 128) for a in (1.0, 5.0)
        ],
        "bpr": [{"factors": 64, "learning_rate": 0.05, "epochs": 200, "num_threads": 2}],
    }
    full = ds.history("test")  # train + valid
    out = {}
    for name, grid in grids.items():
        cls = get_model_class(name)
        t0 = time.perf_counter()
        best, best_score = grid[0], -1.0
        if len(grid) > 1:
            for params in grid:
                m = cls(**params).fit(ds.train)
                s = evaluate_ranking(m, ds.history("valid"), ds.valid, (10,))["ndcg@10"]
                if s > best_score:
                    best, best_score = params, s
        out[name] = (cls(**best).fit(full), time.perf_counter() - t0, best)
    for name in ("rbm", "softmax-rbm", "retriever"):
        if name not in MODEL_PATHS:
            print(f"[skip] {name}: not registered in MODEL_PATHS yet")
            continue
        t0 = time.perf_counter()
        m = get_model_class(name)(progress=False) if name == "rbm" else get_model_class(name)()
        m.fit_dataset(ds)
        out[name] = (m, time.perf_counter() - t0, "defaults, early-stopped on valid")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--components", default=None, help="comma-separated ranker components")
    args = ap.parse_args()
    ml = Path(args.ml100k)
    if not (ml / "u.data").is_file():
        print(f"[skip] MovieLens 100K not found at {ml} (pass --ml100k PATH)")
        return
    import torch

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.evaluation.stats import paired_test
    from recsys_ebm.ranking import Ranker

    torch.set_num_threads(2)
    ds = prepare_dataset(ml, split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
    print(
        f"MovieLens 100K: {ds.n_users} users x {ds.n_items} items, train {ds.train.nnz:,} / "
        f"valid {ds.valid.nnz:,} / test {ds.test.nnz:,}; {len(ds.eval_users('test'))} test users"
    )
    models = single_models(ds)
    overrides = {}
    if args.components:
        overrides["components"] = tuple(args.components.split(","))
    t0 = time.perf_counter()
    ranker = Ranker(**overrides).fit_dataset(ds)
    models["ranker"] = (ranker, time.perf_counter() - t0, "defaults")
    info = ranker.fit_info
    pairs = zip(info["components"], info["weights"], strict=True)
    print(
        "ranker weights (learned on valid): "
        + ", ".join(f"{c} {w:.2f}" for c, w in pairs)
        + f"; valid NDCG@10 {info.get('valid_ndcg_at_10', float('nan')):.4f}"
    )
    scores = {name: per_user(m, ds) for name, (m, _, _) in models.items()}
    r = scores["ranker"]["ndcg@10"]
    print(
        f"\n{'model':<12}{'NDCG@10':>9}{'Recall@20':>11}{'fit s':>8}   "
        f"{'ranker - model (NDCG@10)':>25}{'t-test p':>11}{'Wilcoxon p':>12}"
    )
    for name, (_, fit_s, params) in models.items():
        s = scores[name]
        line = f"{name:<12}{np.nanmean(s['ndcg@10']):>9.4f}{np.nanmean(s['recall@20']):>11.4f}"
        line += f"{fit_s:>8.1f}   "
        if name != "ranker":
            t = paired_test(r, s["ndcg@10"])
            line += f"{t['mean_diff']:>+25.4f}{t['t_pvalue']:>11.2g}{t['wilcoxon_pvalue']:>12.2g}"
        print(line + (f"   {params}" if name != "ranker" else ""), flush=True)


if __name__ == "__main__":
    main()
