"""EASE against its denoising variant DLAE on validation (issue 12): the L2 x input-dropout grid.

    python benchmarks/dlae.py [--datasets ml-100k,ml-latest-small,movietweetings-100k]
        [--ml100k PATH] [--threads 1]

DLAE (Steck 2020, "Autoencoders that don't overfit towards the identity") is EASE's closed form
trained under input dropout p: ``EASE(dropout=p)`` (recsys_ebm/models/ease.py); p = 0 is EASE.
Protocol (README.md's): per-user random split, 20% test and 10% validation, seed 0; each cell is
the validation NDCG@10 of a fit on train (full ranking, train history masked). Validation only:
test is never read. The last lines give, per p, the best L2 and how far below that p's best
l2 = 250 is (one L2 for every dataset: the defaults of the RBM's lateral="dlae" couplings).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATASETS, SPLIT, dataset_names, dataset_path  # noqa: E402

L2S = (50.0, 100.0, 250.0, 500.0, 1000.0)
DROPOUTS = (0.0, 0.25, 0.5, 0.67)


def grid(name: str, path: Path) -> None:
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models.ease import EASE

    ds = prepare_dataset(path, **SPLIT)
    print(f"\n{name}: {ds.n_users} users x {ds.n_items} items; validation NDCG@10", flush=True)
    print(f"{'l2':>8}" + "".join(f"{'p ' + format(p, 'g'):>10}" for p in DROPOUTS), flush=True)
    table: dict[tuple[float, float], float] = {}
    t0 = time.perf_counter()
    for l2 in L2S:
        for p in DROPOUTS:
            m = EASE(l2=l2, l2_grid=(), dropout=p, progress=False, device="cpu").fit(ds.train)
            table[l2, p] = evaluate_ranking(m, ds.history("valid"), ds.valid, (10,))["ndcg@10"]
        print(f"{l2:>8g}" + "".join(f"{table[l2, p]:>10.4f}" for p in DROPOUTS), flush=True)
    ease = max(table[l2, 0.0] for l2 in L2S)
    for p in DROPOUTS:
        best = max(L2S, key=lambda l2, p=p: table[l2, p])
        print(
            f"  p {p:<4g} best l2 {best:>6g}: {table[best, p]:.4f} ({table[best, p] / ease:.3f} x "
            f"EASE's best); l2 250: {table[250.0, p]:.4f}",
            flush=True,
        )
    print(f"  ({time.perf_counter() - t0:.0f} s)")


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in dataset_names(ap, args.datasets):
        if (path := dataset_path(name, args.ml100k)) is not None:
            grid(name, path)


if __name__ == "__main__":
    main()
