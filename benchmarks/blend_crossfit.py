"""The ranker's blend weights under 2-fold cross-fitting over the validation users (issue 12).

    python benchmarks/blend_crossfit.py [--datasets ml-100k,ml-latest-small,movietweetings-100k]
        [--ml100k PATH] [--seeds 0,1] [--threads 1] [--subsets ease+als+rbm+retriever,...]

The ranker learns its blend on the validation split and is scored there by the same split, so its
printed validation NDCG@10 flatters whatever fits the split hardest. Here the validation users are
split in two halves (per seed): the blend is fitted on one half and scored (NDCG@10) on the other,
then the halves swap, and the four figures are averaged. The components are the default ranker's,
fitted on train (EASE with its L2 search, ALS with 32 factors and alpha 5, the RBM and the
retriever early-stopped on validation); ``--subsets`` blends other sets of them and DLAE
(``EASE(dropout=0.5)``), and a one-model "blend" is that model's own held-out figure. Every blend
is the calibrated one (one maximum-likelihood inverse temperature per component, fitted on the
fit half). Weights compared:

* ``search``: the coordinate search on the simplex maximising NDCG@10 (``weight_fit="search"``);
* ``equal``: equal weights, the equal-weight log-linear pool of the calibrated conditionals
  (``weight_fit="equal"``);
* ``likelihood``: weights a_k = exp(theta_k) maximising the log-likelihood of the fit half's
  validation items under softmax(-sum_k a_k z_k) (Adam, 300 steps): smooth, but it fits the
  whole distribution, not the top ten.

Test is never read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATASETS, SPLIT, dataset_names, dataset_path  # noqa: E402


def likelihood_weights(z, stats, targets, steps: int = 300):  # noqa: ANN001, ANN201
    """(K,) weights on the simplex: a = exp(theta) maximising the mean log-likelihood of the
    validation items under softmax over each user's candidates of -sum_k a_k z_k."""
    import torch

    t = torch.as_tensor(sp.csr_matrix(targets).toarray() > 0) & stats
    keep = t.any(dim=1)
    z, stats, t = z[:, keep], stats[keep], t[keep]
    theta = torch.zeros(z.shape[0], requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        logits = -torch.einsum("kui,k->ui", z, theta.exp()).masked_fill(~stats, -1e9)
        lp = torch.log_softmax(logits, dim=1)
        loss = -lp[t].mean()
        loss.backward()
        opt.step()
    a = theta.detach().exp()
    return (a / a.sum()).numpy()


#: the components --subsets may name: the default ranker's four and DLAE (EASE(dropout=0.5))
COMPONENTS = ("ease", "dlae", "als", "rbm", "retriever")
DEFAULT_SUBSETS = "ease+als+rbm+retriever"


def fit_components(ds, names: set[str]) -> dict:  # noqa: ANN001
    """The named components fitted on train as the default ranker fits them (early stopping and
    EASE's L2 search on validation)."""
    from recsys_ebm.models.ease import EASE
    from recsys_ebm.models.implicit_adapter import ALS
    from recsys_ebm.models.rbm import RBM
    from recsys_ebm.models.retriever import Retriever

    makers = {
        "ease": lambda: EASE(progress=False, device="cpu").fit(ds.train, ds.valid),
        "dlae": lambda: EASE(progress=False, device="cpu", dropout=0.5).fit(ds.train, ds.valid),
        "als": lambda: ALS(factors=32, alpha=5.0, num_threads=1).fit(ds.train),
        "rbm": lambda: RBM(progress=False, device="cpu").fit_dataset(ds),
        "retriever": lambda: Retriever(progress=False, device="cpu").fit_dataset(ds),
    }
    return {k: makers[k]() for k in COMPONENTS if k in names}


def run(name: str, path: Path, seeds: list[int], subsets: list[tuple[str, ...]]) -> None:
    import torch

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.ranking._blend import _ndcg
    from recsys_ebm.ranking.blender import Blender

    ds = prepare_dataset(path, **SPLIT)
    t0 = time.perf_counter()
    comps = fit_components(ds, {c for sub in subsets for c in sub})
    rows = np.flatnonzero(ds.valid.getnnz(axis=1) > 0)
    hist, tgt = ds.train[rows], sp.csr_matrix(ds.valid[rows])
    energies = {k: m.energies(hist) for k, m in comps.items()}  # (U, I) each, history = train
    print(
        f"\n{name}: {len(rows)} validation users; components ({', '.join(comps)}) fitted "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    for n_sub, sub in enumerate(subsets):
        es = [energies[k] for k in sub]
        k = len(es)
        res: dict[str, list[float]] = {"search": [], "equal": [], "likelihood": []}
        for seed in seeds:
            half = np.random.default_rng(seed).random(len(rows)) < 0.5
            for side in (True, False):
                fit_r, ev_r = np.flatnonzero(half == side), np.flatnonzero(half != side)
                # one calibration per half: equal weights fit the same temperatures as the search
                # (Blender(search=False); tests/test_blender.py), so they reuse its z-scores
                b = Blender(norm="calibrated")
                b.fit([e[fit_r] for e in es], tgt[fit_r], seen=hist[fit_r])
                z, seen, cand = b.standardise([e[ev_r] for e in es], seen=hist[ev_r])
                line = []
                for how, w in (("search", b.weights), ("equal", torch.full((k,), 1.0 / k))):
                    res[how].append(_ndcg(z, w, seen, cand, tgt[ev_r]))
                    line.append(f"{how} {np.round(w.numpy(), 2)} {res[how][-1]:.4f}")
                if k > 1:  # one component: every method is the component itself
                    zf, seen_f, cand_f = b.standardise([e[fit_r] for e in es], seen=hist[fit_r])
                    w = likelihood_weights(zf, cand_f & ~seen_f, tgt[fit_r])
                    res["likelihood"].append(
                        _ndcg(z, torch.as_tensor(w, dtype=torch.float32), seen, cand, tgt[ev_r])
                    )
                    line.append(f"likelihood {np.round(w, 2)} {res['likelihood'][-1]:.4f}")
                if n_sub == 0:
                    print(f"  seed {seed}, fit half {int(side)}: " + "; ".join(line), flush=True)
        means = "  ".join(f"{m} {np.mean(v):.4f}" for m, v in res.items() if v)
        print(
            f"  {'+'.join(sub):<26} held-out NDCG@10, mean of {len(res['search'])}: {means}",
            flush=True,
        )


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--subsets",
        default=DEFAULT_SUBSETS,
        help=f"comma-separated blends of components joined by '+', from {', '.join(COMPONENTS)} "
        f"(default: {DEFAULT_SUBSETS}, the default ranker's)",
    )
    args = ap.parse_args()
    subsets = [tuple(x.split("+")) for x in args.subsets.split(",") if x.strip()]
    bad = sorted({c for sub in subsets for c in sub} - set(COMPONENTS))
    if bad or not subsets:
        ap.error(f"--subsets: expected components from {list(COMPONENTS)}, got {bad or 'none'}")
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for name in dataset_names(ap, args.datasets):
        if (path := dataset_path(name, args.ml100k)) is not None:
            run(name, path, seeds, subsets)


if __name__ == "__main__":
    main()
