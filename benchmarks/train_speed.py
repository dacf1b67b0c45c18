"""Training time against implicit's ALS, in one run (issue 13's training target: an early-stopped
fit of the RBM and of the retriever on MovieLens 100K in at most 15x ALS's time).

    python benchmarks/train_speed.py [--ml100k PATH] [--threads 2] [--repeats 5]
        [--models rbm,retriever] [--earlier-retriever] [--retriever-variants]

MovieLens 100K (``--ml100k``; the bundled ml-latest-small when absent), per-user random split
20% test / 10% valid, seed 0. Each fit is timed from a fresh model to a fitted one (the RBM and
the retriever with their defaults, early-stopped on validation NDCG@10: their per-epoch
validation is part of the fit); the reference is implicit's ALS (64 factors, 15 iterations) on the
same training matrix, timed in the same run. Best of ``--repeats`` interleaved rounds per
model (ALS fitted 3 times a round: its fit is short, and the best of a few is the steady
figure); the ratio is model time / ALS time. OpenMP's wait policy is the command line's
(``recsys_ebm.device.prepare_openmp``: a short spin, then sleep), unless set in the environment:
the times are those a ``recsys-ebm train`` user gets. ``--earlier-retriever`` also times the
retriever's default before issue 13 (``objective="interaction"``, batch 512, lr 1e-3, 40
epochs, patience 5). ``--retriever-variants`` also times the retriever without each of the
2026-11-28 changes in the same rounds: fp32 training (``mixed_precision=False``; the
default trains under bf16 autocast where the CPU multiplies bf16 natively, see
``recsys_ebm.device.native_bf16``), the random item-table start (``init="random"``), and both.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, repeats: int) -> tuple[float, object]:  # noqa: ANN001
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--threads", type=int, default=2, help="torch and implicit threads")
    ap.add_argument("--repeats", type=int, default=5, help="rounds; each model's best is kept")
    ap.add_argument("--models", default="rbm,retriever", help="comma-separated registry names")
    ap.add_argument("--earlier-retriever", action="store_true",
                    help="also time the retriever's pre-issue-13 default (interaction objective)")
    ap.add_argument("--retriever-variants", action="store_true",
                    help="also the retriever in fp32, from a random start, and both")
    args = ap.parse_args()

    from recsys_ebm.device import prepare_openmp

    prepare_openmp()  # OpenMP's wait policy as the command line sets it (before torch loads)
    import torch

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.models import get_model_class

    torch.set_num_threads(args.threads)
    src = Path(args.ml100k)
    if not (src / "u.data").is_file():
        print(f"[note] MovieLens 100K not found at {src}: using the bundled ml-latest-small")
        src = ROOT / "data" / "ml-latest-small"
    ds = prepare_dataset(src, split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
    policy = ", ".join(
        f"{v}={os.environ[v]}"
        for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
        if v in os.environ
    )
    from recsys_ebm.device import native_bf16

    bf16 = native_bf16(torch.device("cpu"))
    print(f"{src.name}: {ds.n_users} users x {ds.n_items} items, train {ds.train.nnz:,}; "
          f"{args.threads} threads, best of {args.repeats}; OpenMP: {policy or 'defaults'}; "
          f"native bf16 products on this CPU: {'yes' if bf16 else 'no (fp32 training)'}")

    als_cls = get_model_class("als")
    runs = [("implicit ALS (64 factors, 15 iterations)", None, {})]
    runs += [(f"{name} (defaults, early-stopped)", name, {}) for name in args.models.split(",")]
    if args.earlier_retriever:
        earlier = dict(objective="interaction", batch_size=512, learning_rate=1e-3, epochs=40,
                       patience=5)
        runs.append(("retriever (earlier default, interaction)", "retriever", earlier))
    if args.retriever_variants:
        runs.append(("retriever, fp32", "retriever", {"mixed_precision": False}))
        runs.append(("retriever, random init", "retriever", {"init": "random"}))
        runs.append(("retriever, fp32 + random init (before)", "retriever",
                     {"mixed_precision": False, "init": "random"}))

    def fit(name, kw):  # noqa: ANN001, ANN202
        if name is None:
            return als_cls(factors=64, epochs=15, num_threads=args.threads).fit(ds.train)
        return get_model_class(name)(progress=False, **kw).fit_dataset(ds)

    # rounds interleave the models (ALS, rbm, retriever, ALS, ...): a burst of load from the
    # machine's neighbours then hits one round of every model, not all rounds of one
    best = [float("inf")] * len(runs)
    models: list = [None] * len(runs)
    for _ in range(args.repeats):
        for j, (_, name, kw) in enumerate(runs):
            t, models[j] = best_of(lambda name=name, kw=kw: fit(name, kw), 1 if name else 3)
            best[j] = min(best[j], t)
    t_als = best[0]
    rows = [(runs[0][0], t_als, "")]
    for j in range(1, len(runs)):
        info = models[j].fit_info  # type: ignore[attr-defined]
        rows.append((runs[j][0], best[j], f"{info.get('epochs_run')} epochs"))
    print(f"\n{'model':<44}{'fit s':>8}{'vs ALS':>9}  (target <= 15x)")
    for label, t, extra in rows:
        print(f"{label:<44}{t:>8.2f}{t / t_als:>8.1f}x  {extra}")


if __name__ == "__main__":
    main()
