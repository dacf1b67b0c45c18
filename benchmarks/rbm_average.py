"""The RBM's iterate averaging (``RBMConfig.average``) chosen on validation only (issue 12).

    python benchmarks/rbm_average.py [--datasets ml-100k,ml-latest-small,movietweetings-100k]
        [--ml100k PATH] [--averages 0,0.5,0.8,0.9,0.95] [--set JSON] [--seeds 0] [--poe]
        [--threads 1]

Each decay a runs the benchmark's own RBM protocol one split back
(:func:`quality.validation_replica`: each user's training pairs split again, 1/8 as inner
validation; the outer validation split plays test; test is never read): the RBM with its
defaults but ``average = a`` early-stops on the inner validation split, is refitted on the outer
train for its best epoch count (``quality.early_stop_refit``), and ranks the outer validation
items from the outer train history, masked. It prints NDCG@10 per decay and the ratio to EASE's
(L2 searched on the inner validation split, refitted) in the same run. ``average = 0`` is the
raw CD iterate (the default until 2026-12-07). ``--seeds 0,1,2,3,4`` fits each setting once per
seed (``RBMConfig.seed``: the initial weights, the minibatch order, the Gibbs draws) and prints
each figure and their mean: one seed moves the RBM's figure by up to 0.005 NDCG@10 here, more
than most of the settings it compares differ by. ``--poe`` also scores each pair of consecutive
seeds (0+1, 2+3, ...) as one product of experts: the sum of two RBMs' free energies is the free
energy of one RBM with both hidden layers side by side and the sum of the visible biases
(W = [W1 W2], c = [c1 c2], b = b1 + b2), so ranking by it ranks by dF1 + dF2, an ensemble of
independently trained RBMs served as one RBM of twice the width.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (  # noqa: E402
    DATASETS,
    dataset_names,
    dataset_path,
    early_stop_refit,
    replica_with_ease,
)


def fit_seeds(
    ds: Any,
    hist: Any,
    params: dict[str, Any],
    seeds: list[int],
    threads: int,
    serve: Callable[[Any], None] | None = None,
) -> list[tuple]:
    """The RBM with ``params``, once per seed, under the benchmark's protocol
    (``quality.early_stop_refit``), each refit scored on the replica's outer validation split
    from ``hist`` (after ``serve(refit)`` when given): [(refit, NDCG@10, epochs, description,
    early-stopped fit)] in seed order."""
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.ranking._refit import best_epoch

    runs = []
    for seed in seeds:
        params_s = {**params, "seed": seed}
        model, _, desc, first = early_stop_refit("rbm", ds, "cpu", threads, params_s)
        if serve is not None:
            serve(model)
        score = evaluate_ranking(model, hist, ds.test, (10,))["ndcg@10"]
        runs.append((model, score, best_epoch(first) + 1, desc, first))
    return runs


def product_of_experts(x: Any, y: Any) -> Any:
    """One RBM whose free energy is the sum of ``x``'s and ``y``'s (see the module docstring)."""
    import copy
    import dataclasses

    import torch

    px, py = x.parameters(), y.parameters()
    poe = copy.deepcopy(x)
    poe.config = dataclasses.replace(x.config, n_hidden=x.config.n_hidden + y.config.n_hidden)
    poe.set_parameters(
        {
            "W": torch.cat([px["W"], py["W"]], dim=1),  # (I, H1 + H2)
            "b": px["b"] + py["b"],  # (I,)
            "c": torch.cat([px["c"], py["c"]]),  # (H1 + H2,)
        }
    )
    return poe


def main() -> None:
    import torch

    from recsys_ebm.evaluation.protocol import evaluate_ranking

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--averages", default="0,0.5,0.8,0.9,0.95", help="decays to compare")
    ap.add_argument("--set", default="{}", help="other RBMConfig fields, e.g. '{\"epochs\": 60}'")
    ap.add_argument("--seeds", default="0", help="RBM seeds, e.g. 0,1,2,3,4 (the mean is printed)")
    ap.add_argument("--poe", action="store_true", help="also score consecutive seed pairs' PoE")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    extra = json.loads(args.set)
    torch.set_num_threads(args.threads)
    averages = [float(a) for a in args.averages.split(",") if a.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    for name in dataset_names(ap, args.datasets):
        if (path := dataset_path(name, args.ml100k)) is None:
            continue
        ds, hist, ease, _, base = replica_with_ease(path, args.threads)
        print(
            f"\n{name} (one split back): EASE {base:.4f} (L2 {ease.config.l2:g}); RBM {extra}",
            flush=True,
        )
        for a in averages:
            t0 = time.perf_counter()
            runs = fit_seeds(ds, hist, {**extra, "average": a}, seeds, args.threads)
            fitted = [r[0] for r in runs]
            got = [r[1] for r in runs]
            descs = [f"{r[2]} ep" for r in runs]
            desc, first = runs[-1][3], runs[-1][4]
            s = float(np.mean(got))
            each = " ".join(f"{g:.4f}" for g in got)
            print(
                f"  RBM average {a:<5g} NDCG@10 {s:.4f} ({s / base:.3f} x EASE)"
                + (f", seeds {seeds}: {each} ({', '.join(descs)})" if len(seeds) > 1 else "")
                + f", {desc}, inner valid {first.fit_info['best_valid_ndcg@10']:.4f}, "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            if args.poe and len(fitted) > 1:
                pairs = [
                    evaluate_ranking(product_of_experts(x, y), hist, ds.test, (10,))["ndcg@10"]
                    for x, y in zip(fitted[::2], fitted[1::2], strict=False)
                ]
                pm = float(np.mean(pairs))
                print(
                    f"    product of experts of seed pairs: {' '.join(f'{g:.4f}' for g in pairs)},"
                    f" mean {pm:.4f} ({pm / base:.3f} x EASE)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
