"""Batch-recommendation throughput: users per second for top-100 over the full catalogue.

    python benchmarks/recommend.py [--users 20000] [--items 5000] [--interactions 1000000]
                                   [--n 100] [--threads 2]

On a synthetic planted-community log (power-law item popularity), each model serves every user
from their training history, top-``n`` over the whole catalogue with the history masked:

* the RBM (exact free-energy differences, 200 hidden units),
* the contrastive retriever (one user-tower pass + a matmul against the item matrix),
* the ranker with its default components (EASE + ALS + RBM + retriever energies, z-scored per
  user and blended),
* our ALS adapter, and, as the reference, **implicit's own ALS batch ``recommend``** on the same
  users and the same factors' shape (``filter_already_liked_items=True``), in the same run,
* the whole batch job (``recsys_ebm.batch.run_batch``: chunking, raw ids, Parquet row groups,
  atomic rename) for the ranker.

Throughput does not depend on model quality, so the models train only briefly. Each timing is the
best of ``--repeats`` runs (these machines are shared and noisy); ratios to implicit's ALS are
printed beside the absolute figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeats: int) -> float:  # noqa: ANN001
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="torch and implicit threads")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.synthetic import planted_communities
    from recsys_ebm.models.ease import EASE
    from recsys_ebm.models.implicit_adapter import ALS
    from recsys_ebm.models.rbm import RBM
    from recsys_ebm.models.retriever import Retriever
    from recsys_ebm.ranking import Ranker

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        log = planted_communities(
            n_users=args.users, n_items=args.items, n_interactions=args.interactions, seed=0
        )
        log.drop("community").write_parquet(Path(tmp) / "log.parquet")
        ds = prepare_dataset(
            Path(tmp) / "log.parquet", split="random", test_fraction=0.1, valid_fraction=0.0
        )
        train = ds.train
        n_users, n_items = train.shape
        print(
            f"synthetic planted communities: {n_users:,} users x {n_items:,} items, "
            f"{train.nnz:,} training interactions; top-{args.n} over the full catalogue, "
            f"torch threads {torch.get_num_threads()}"
        )
        users = np.arange(n_users)

        t0 = time.perf_counter()
        rbm = RBM(epochs=2, patience=0, progress=False, device="cpu").fit(train)
        retr = Retriever(epochs=2, patience=0, progress=False, device="cpu").fit(train)
        als = ALS(factors=64, epochs=5, num_threads=args.threads).fit(train)
        ease = EASE(l2_grid=(), l2=500.0).fit(train)
        ranker = Ranker.from_fitted([ease, als, rbm, retr], train, device="cpu")
        ref = AlternatingLeastSquares(
            factors=64, iterations=5, num_threads=args.threads, random_state=0
        )
        with threadpool_limits(1, "blas"):
            ref.fit(train, show_progress=False)
        print(f"(models trained in {time.perf_counter() - t0:.1f} s; not part of the figures)")

        def ours(model):  # noqa: ANN001, ANN202
            return lambda: model.recommend(train, n=args.n, users=users)

        def implicit_ref() -> None:
            with threadpool_limits(1, "blas"):
                ref.recommend(users, train, N=args.n, filter_already_liked_items=True)

        timings = {"implicit ALS recommend (reference)": best_of(implicit_ref, args.repeats)}
        for name, model in (
            ("ALS (our adapter)", als),
            ("retriever", retr),
            ("RBM (exact dF, H=200)", rbm),
            ("ranker (EASE + ALS + RBM + retriever)", ranker),
        ):
            timings[name] = best_of(ours(model), args.repeats)

        from recsys_ebm.batch import run_batch

        def job() -> None:
            run_batch(ranker, ds, Path(tmp) / "recs.parquet", n=args.n, progress=False)

        timings["batch job, ranker (Parquet)"] = best_of(job, args.repeats)

    ref_rate = n_users / timings["implicit ALS recommend (reference)"]
    print(f"\n{'model':<40}{'seconds':>9}{'users/s':>11}{'vs implicit ALS':>17}")
    for name, s in timings.items():
        rate = n_users / s
        print(f"{name:<40}{s:>9.2f}{rate:>11,.0f}{rate / ref_rate:>17.2f}")


if __name__ == "__main__":
    main()
