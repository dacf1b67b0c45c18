"""Dropout on the RBM's hidden units (Srivastava et al. 2014, sec. 8, "Dropout RBMs"), on
validation only (issue 12).

    python benchmarks/rbm_dropout.py [--datasets ml-100k,ml-latest-small] [--ml100k PATH]
        [--drops 0,0.2,0.5,0.5u] [--seeds 0] [--threads 1]

A dropout RBM draws a mask r ~ Bernoulli(q = 1 - p)^H per training row and keeps it through the
row's Gibbs chain: p(h_j = 1 | v, r) = r_j sigmoid(c_j + v W_j), p(v | h) as usual. CD-1 then
trains each row's thinned RBM. Serving needs one model: the geometric mean of the thinned RBMs'
distributions, p(v) ∝ exp(-E_r[F_r(v)]), whose free energy is -b.v - q sum_j softplus(c_j + v W_j):
ranking by its dF equals ranking by the plain dF with the visible bias b / q (dF scales by q).
This script trains with that reparametrisation (the stored bias is b / q; its CD gradient is
divided by q, so the true bias moves as in plain CD), so the plain RBM serves the geometric
mean. A drop written "0.5u" serves the unscaled model instead (the stored bias is b).

Each setting runs the RBM's own protocol one split back (:func:`quality.validation_replica`,
test never read): early stop on the inner validation split, refit on the outer train for the best
epoch count, NDCG@10 on the outer validation split, and the ratio to EASE's. The mask's draws
change the random stream, so the drop 0 row (no mask) is the comparison, not rbm_average.py's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

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

DROP = {"p": 0.0, "scaled": True}  # the setting being run (the config has no such field)


def dropout_rbm_class():  # noqa: ANN201
    import torch

    from recsys_ebm.models._rbm_math import hidden_prob, visible_prob
    from recsys_ebm.models.rbm import RBM

    class DropoutRBM(RBM):
        def init_params(self, n_items, generator, train):  # noqa: ANN001, ANN202
            super().init_params(n_items, generator, train)
            if DROP["scaled"]:
                self.b = self.b / (1 - DROP["p"])

        def cd_step(self, v0, k, generator, chain=None):  # noqa: ANN001, ANN202
            q = 1 - DROP["p"]
            b = self.b * q if DROP["scaled"] else self.b  # the thinned RBMs' visible bias
            r = torch.full((v0.shape[0], self.W.shape[1]), q, device=v0.device)
            r = torch.bernoulli(r, generator=generator)  # (B, H) one mask per row
            ph0 = hidden_prob(v0, self.W, self.c) * r  # (B, H)
            ph, v, recon = ph0, v0, None
            for step in range(k):
                pv = visible_prob(torch.bernoulli(ph, generator=generator), self.W, b)  # (B, I)
                recon = pv if step == 0 else recon
                v = torch.bernoulli(pv, generator=generator)
                ph = hidden_prob(v, self.W, self.c) * r
            n = v0.shape[0]
            g_b = v0.mean(0) - v.mean(0)
            grads = {
                "W": (v0.T @ ph0 - v.T @ ph) / n,  # (I, H)
                "b": g_b / q if DROP["scaled"] else g_b,
                "c": ph0.mean(0) - ph.mean(0),
            }
            return grads, v, recon

    return DropoutRBM


def main() -> None:
    import torch

    import recsys_ebm.models as models
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.evaluation.protocol import evaluate_ranking

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small")
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--drops", default="0,0.2,0.5,0.5u", help="hidden-unit dropout p (u: unscaled)")
    ap.add_argument("--seeds", default="0", help="RBM seeds (the mean is printed)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    plain, cls = models.get_model_class, dropout_rbm_class()
    models.get_model_class = lambda name: cls if name == "rbm" else plain(name)  # type: ignore
    for name in dataset_names(ap, args.datasets):
        if (path := dataset_path(name, args.ml100k)) is None:
            continue
        ds = validation_replica(prepare_dataset(path, **SPLIT))
        hist = ds.history("test")
        grid = [{"l2": v, "l2_grid": []} for v in (50.0, 100.0, 250.0, 500.0, 1000.0)]
        ease, *_ = select_refit("ease", grid, ds, "cpu", args.threads)
        base = evaluate_ranking(ease, hist, ds.test, (10,))["ndcg@10"]
        print(f"\n{name} (one split back): EASE {base:.4f}", flush=True)
        for spec in args.drops.split(","):
            DROP.update(p=float(spec.rstrip("u")), scaled=not spec.endswith("u"))
            got, eps = [], []
            for seed in seeds:
                model, _, desc, _ = early_stop_refit("rbm", ds, "cpu", args.threads, {"seed": seed})
                got.append(evaluate_ranking(model, hist, ds.test, (10,))["ndcg@10"])
                eps.append(desc.rsplit(", ", 1)[-1].split(" ")[0])
            s = float(np.mean(got))
            serve = "geometric mean" if DROP["scaled"] else "unscaled"
            print(
                f"  hidden dropout {DROP['p']:<4g} ({serve}): NDCG@10 {s:.4f} "
                f"({s / base:.3f} x EASE); seeds {seeds}: "
                + " ".join(f"{g:.4f}" for g in got)
                + f"; epochs {', '.join(eps)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
