"""Blend weights learned on validation users held out from early stopping (issue 12).

    python benchmarks/blend_holdout.py [--datasets ml-100k,ml-latest-small] [--ml100k PATH]
        [--seed 0] [--threads 1]

The default ranker early-stops the RBM and the retriever on the validation split and then
searches its blend weights on that same split, so the search may over-trust the two models whose
epoch count that split chose. This runs the benchmark's ranker one split back
(:func:`quality.validation_replica`: test is never read) with the validation users split in two
halves A and B (``--seed``), and compares, for both ``weight_fit`` values:

* ``stop all, weights all``: the default (early stop and blend on every validation user);
* ``stop all, weights B``: the blend on half B only (the same fits);
* ``stop A, weights B``: the RBM and the retriever early-stopped on half A only, the blend on B
  (no validation user serves both).

The components are the default ranker's (EASE with its L2 chosen on validation, ALS 32 factors
alpha 5, the RBM, the retriever); every final component is refitted on the whole train +
validation (the early-stopped ones for the epochs their stop chose), as the benchmark does. It
prints NDCG@10 on the outer validation split, the ratio to EASE's, and the weights.
"""

from __future__ import annotations

import argparse
import dataclasses as dc
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (  # noqa: E402
    DATASETS,
    dataset_names,
    dataset_path,
    early_stop_refit,
    make,
    replica_with_ease,
)


def valid_of(ds: Any, users: np.ndarray) -> Any:
    """The dataset with only ``users``' validation pairs."""
    import polars as pl

    inter = dict(ds.interactions)
    inter["valid"] = inter["valid"].filter(pl.col("user_idx").is_in(users))
    return dc.replace(ds, interactions=inter)


def stopped(name: str, stop_on: Any, ds: Any, threads: int) -> tuple[Any, Any, int]:
    """``quality.early_stop_refit`` stopping on ``stop_on``'s validation pairs, refitted on all
    of ``ds``'s train + valid: (early-stopped fit, refit, epochs)."""
    from recsys_ebm.ranking._refit import best_epoch

    final, _, _, first = early_stop_refit(name, ds, "cpu", threads, stop_on=stop_on)
    return first, final, best_epoch(first) + 1


def main() -> None:
    import torch

    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.ranking import Ranker
    from recsys_ebm.ranking._ranker_data import merge_valid

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small")
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--seed", type=int, default=0, help="the split of the validation users")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    thr = args.threads
    for name in dataset_names(ap, args.datasets):
        if (path := dataset_path(name, args.ml100k)) is None:
            continue
        ds, hist, ease, ease_first, base = replica_with_ease(path, thr)
        als_first = make("als", "cpu", thr, factors=32, alpha=5.0).fit_dataset(ds)
        als = make("als", "cpu", thr, factors=32, alpha=5.0).fit_dataset(merge_valid(ds))
        users = np.unique(ds.interactions["valid"]["user_idx"].to_numpy())
        perm = np.random.default_rng(args.seed).permutation(users)
        half_a, half_b = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2 :])
        halves = {"all": ds, "A": valid_of(ds, half_a), "B": valid_of(ds, half_b)}
        print(
            f"\n{name} (one split back): EASE {base:.4f}; validation users A {len(half_a)}, "
            f"B {len(half_b)}",
            flush=True,
        )
        fits = {}
        for stop in ("all", "A"):
            fits[stop] = {m: stopped(m, halves[stop], ds, thr) for m in ("rbm", "retriever")}
            eps = ", ".join(f"{m} {f[2]}" for m, f in fits[stop].items())
            print(f"  early stop on {stop}: epochs {eps}", flush=True)
        for fit in ("search", "equal"):
            for stop, wset in (("all", "all"), ("all", "B"), ("A", "B")):
                rbm, ret = fits[stop]["rbm"], fits[stop]["retriever"]
                on = halves[wset]
                r = Ranker.from_fitted(
                    [ease_first, als_first, rbm[0], ret[0]],
                    on.history("valid"),
                    on.valid,
                    weight_fit=fit,
                    device="cpu",
                )
                r.components = [ease, als, rbm[1], ret[1]]  # the train + valid fits
                s = evaluate_ranking(r, hist, ds.test, (10,))["ndcg@10"]
                w = ", ".join(f"{x:.2f}" for x in r.fit_info["weights"])
                print(
                    f"  {fit:<6} stop {stop:<3} weights {wset:<3}: NDCG@10 {s:.4f} "
                    f"({s / base:.3f} x EASE), weights ease/als/rbm/retriever {w}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
