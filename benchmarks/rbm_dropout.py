"""Dropout on the RBM's hidden units (``RBMConfig.hidden_dropout``; Srivastava et al. 2014,
sec. 8, "Dropout RBMs"), on validation only (issue 12).

    python benchmarks/rbm_dropout.py [--datasets ml-100k,ml-latest-small] [--ml100k PATH]
        [--drops 0,0.2,0.5,0.5u] [--seeds 0] [--threads 1]

A dropout RBM draws a mask r ~ Bernoulli(q = 1 - p)^H per training row and keeps it through the
row's Gibbs chain: p(h_j = 1 | v, r) = r_j sigmoid(c_j + v W_j), p(v | h) as usual, so CD trains
each row's thinned RBM. The model served is the thinned RBMs' geometric mean, p(v) ∝
exp(-E_r[F_r(v)]), whose free energy -b.v - q sum_j softplus(c_j + v W_j) is q times a plain
RBM's with visible bias b / q: the library stores that RBM (models/_rbm_math.py). A drop written
"0.5u" serves the unscaled model instead, all hidden units at full weight with the thinned
bias b (the fitted model's bias times q, after the same fits, whose early stopping saw the
geometric mean): what a dropout RBM served without the correction would rank.

Each setting runs the RBM's own protocol one split back (:func:`quality.validation_replica`,
test never read): early stop on the inner validation split, refit on the outer train for the best
epoch count, NDCG@10 on the outer validation split, and the ratio to EASE's, per seed and their
mean. Drop 0 is the RBM's default (the figures of ``rbm_average.py --averages 0.9``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATASETS, dataset_names, dataset_path, replica_with_ease  # noqa: E402
from rbm_average import fit_seeds  # noqa: E402


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small")
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--drops", default="0,0.2,0.5,0.5u", help="hidden-unit dropout p (u: unscaled)")
    ap.add_argument("--seeds", default="0", help="RBM seeds (the mean is printed)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for name in dataset_names(ap, args.datasets):
        if (path := dataset_path(name, args.ml100k)) is None:
            continue
        ds, hist, _, _, base = replica_with_ease(path, args.threads)
        print(f"\n{name} (one split back): EASE {base:.4f}", flush=True)
        for spec in args.drops.split(","):
            p, unscaled = float(spec.rstrip("u")), spec.endswith("u")

            def thinned_bias(model, q=1 - p):  # noqa: ANN001, ANN202
                model.b = model.b * q  # every hidden unit at full weight, the thinned bias

            runs = fit_seeds(
                ds,
                hist,
                {"hidden_dropout": p},
                seeds,
                args.threads,
                serve=thinned_bias if unscaled else None,
            )
            got = [r[1] for r in runs]
            eps = [str(r[2]) for r in runs]
            s = float(np.mean(got))
            serve = "unscaled" if unscaled else "geometric mean"
            each = " ".join(f"{g:.4f}" for g in got)
            print(
                f"  hidden dropout {p:<4g} ({serve}): NDCG@10 {s:.4f} ({s / base:.3f} x EASE); "
                f"seeds {seeds}: {each}; epochs {', '.join(eps)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
