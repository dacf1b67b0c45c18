"""RBM benchmark: quality on MovieLens 100K beside ALS and EASE, and CD-1 training throughput.

    python benchmarks/rbm.py [--ml100k PATH] [--skip-quality] [--epochs N]

Quality: per-user random split (20% test, 10% valid) with seed 0; every model is fitted on train
(RBM early-stops on valid NDCG@10, EASE picks its L2 on valid) and ranks the full catalogue for
every test user from train + valid, masked. Throughput: one CD-1 epoch on a 6,000-user x
4,000-item planted-community matrix with 500 hidden units, as achieved FLOP/s (5 matmuls of
2*B*I*H flops per minibatch) and as a ratio to a plain torch matmul of the same (B, I) @ (I, H)
shape measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def quality(ml: Path, epochs: int) -> None:
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models.ease import EASE
    from recsys_ebm.models.implicit_adapter import ALS
    from recsys_ebm.models.rbm import RBM

    ds = prepare_dataset(ml, split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
    hist = ds.history("test")
    models = {
        "rbm": RBM(epochs=epochs, progress=False),
        "ease": EASE(),
        "als": ALS(factors=32, alpha=5.0, num_threads=2),
    }
    print(
        f"MovieLens 100K: {ds.n_users} users x {ds.n_items} items; fit on train "
        f"({ds.train.nnz:,}), rank from train+valid, score on test ({ds.test.nnz:,})"
    )
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(ds.train, ds.valid)
        fit_s = time.perf_counter() - t0
        res = evaluate_ranking(model, hist, ds.test, (10, 20))
        extra = ""
        if name == "rbm":
            extra = f" epochs run {model.fit_info['epochs_run']}"
        print(
            f"  {name:<5} NDCG@10 {res['ndcg@10']:.4f}  Recall@20 {res['recall@20']:.4f}  "
            f"fit {fit_s:6.1f}s{extra}",
            flush=True,
        )


def anomalies(ml: Path) -> None:
    """ROC AUC of free-energy scoring: real held-out users vs injected shilling profiles."""

    from recsys_ebm.anomalies import anomaly_scores, inject_shilling_profiles, roc_auc
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.models.rbm import RBM

    ds = prepare_dataset(ml, split="random", test_fraction=0.2, valid_fraction=0.0, seed=0)
    x = (ds.train + ds.test).tocsr()
    x.data[:] = 1.0
    rng = np.random.default_rng(0)
    perm = rng.permutation(x.shape[0])
    n_train = int(0.8 * x.shape[0])
    train, held = x[perm[:n_train]], x[perm[n_train:]]
    model = RBM(epochs=20, patience=0, progress=False).fit(train)
    fill = int(np.median(train.getnnz(axis=1)))
    target = int(np.argmin(np.asarray(train.getnnz(axis=0))))  # push an unpopular item
    normal = anomaly_scores(model, held)
    for kind in ("random", "average"):
        attack = inject_shilling_profiles(train, 50, kind, filler_size=fill, target_item=target)
        auc = roc_auc(anomaly_scores(model, attack), normal)
        print(
            f"anomalies: {kind:<7} attack, 50 profiles of {fill} items vs {held.shape[0]} "
            f"held-out real users: ROC AUC {auc:.3f}"
        )


def throughput(batch_size: int) -> None:
    import scipy.sparse as sp

    from recsys_ebm.data.synthetic import planted_communities
    from recsys_ebm.models.rbm import RBM

    log = planted_communities(n_users=6000, n_items=4000, n_interactions=400_000, seed=0)
    x = sp.csr_matrix(
        (np.ones(log.height, np.float32), (log["user_id"].to_numpy(), log["item_id"].to_numpy())),
        shape=(6000, 4000),
    )
    x.data[:] = 1.0
    n_users, n_items, n_hidden = 6000, 4000, 500
    model = RBM(
        n_hidden=n_hidden, epochs=1, batch_size=batch_size, patience=0, progress=False, device="cpu"
    )
    model.fit(x[:batch_size])  # warm-up (allocations, thread pool)
    epoch_s = float("inf")
    for _ in range(3):  # best of 3: these machines are shared and noisy
        t0 = time.perf_counter()
        model.fit(x)  # one CD-1 epoch; no validation set, so no monitoring cost
        epoch_s = min(epoch_s, time.perf_counter() - t0)
    flops = 5 * 2 * n_users * n_items * n_hidden
    a = torch.rand(batch_size, n_items)
    w = torch.rand(n_items, n_hidden)
    reps = 5 * (n_users // batch_size)
    a @ w
    mm_s = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ w
        mm_s = min(mm_s, time.perf_counter() - t0)
    mm_rate = reps * 2 * batch_size * n_items * n_hidden / mm_s
    rate = flops / epoch_s
    print(
        f"CD-1 epoch, 6000 x 4000, H=500, batch {batch_size}: {epoch_s:.2f} s, "
        f"{rate / 1e9:.1f} GFLOP/s; plain matmul ({batch_size}x{n_items} @ {n_items}x{n_hidden}) "
        f"{mm_rate / 1e9:.1f} GFLOP/s; ratio {rate / mm_rate:.2f} (target >= 0.5) "
        f"[torch threads {torch.get_num_threads()}]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    ml = Path(args.ml100k)
    if args.skip_quality:
        pass
    elif (ml / "u.data").is_file():
        quality(ml, args.epochs)
        anomalies(ml)
    else:
        print(f"MovieLens 100K: skipped ({ml} not found)")
    for bs in sorted({args.batch_size, 128}):
        throughput(bs)


if __name__ == "__main__":
    main()
