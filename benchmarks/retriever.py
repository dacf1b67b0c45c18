"""Retriever benchmark: quality on MovieLens 100K beside ALS and EASE, training and serving speed.

    python benchmarks/retriever.py [--ml100k PATH] [--search] [--ablation [--rows 2,8]] [--init]
        [--datasets D1,D2] [--seeds 0,1] [--skip-quality] [--threads N]

Quality: per-user random split (20% test, 10% valid) with seed 0, the protocol of
``benchmarks/rbm.py``. Every model is fitted on train (the retriever early-stops on validation
NDCG@10 and uses ML-100K's genres; EASE picks its L2 on validation; ALS has 32 factors, alpha 5)
and ranks the full catalogue for every test user from train + valid, masked. Prints NDCG@10,
Recall@20, fit time and the retriever's training seconds per epoch.

``--search``: the validation search behind ``RetrieverConfig``'s defaults (best validation
NDCG@10 of each config, 40 epochs max, patience 5, and the same metric when every user is served
as a new user from 5 of their training items; the test split is not read).

``--threads 1`` on a shared CPU: torch's OpenMP threads spinning against other processes made an
epoch ~10x slower there. Figures are deterministic at one thread.

``--ablation``: the user-level objective's changes, one at a time, on ML-100K (when present),
ml-latest-small and movietweetings-100k (bundled), same split. Each row early-stops on
validation (train only), prints the best validation NDCG@10 (what chose the defaults), the best
epoch and the fit seconds, then the test NDCG@10 of a refit on train + valid for that many epochs
(``Retriever(epochs=best + 1, patience=0)``, the protocol of ``benchmarks/quality.py``): test is
reported only, never used to choose. EASE (L2 chosen on validation, refitted) is the reference.

``--init``: the item embeddings' initialisation, ``init="random"`` (N(0, 1/D)) against
``init="spectral"`` (the top singular vectors of the column-normalised training matrix), for each
seed of ``--seeds`` on the same datasets and protocol as ``--ablation``: best validation NDCG@10,
the epoch it came at and the epochs run (what the early-stopped fit costs), then the test NDCG@10
of the refit on train + valid (reported, never used to choose).

Serving: users per second for full-catalogue top-100 through ``recommend`` (history encoding,
energies, seen-item masking, top-k), on ML-100K and on a synthetic 20,000-item catalogue, and the
ratio to a plain torch matmul + topk of the same (U, D) @ (D, I) shapes measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]

# The validation search behind RetrieverConfig's tower/tau defaults (objective="interaction",
# B 512, lr 1e-3, 40 epochs, patience 5), in the order it was run; each entry overrides the
# defaults. Rounds: temperature x logQ and regularisation on the earlier untied D=64 model; then
# tied tables; then D=128. Two seed repeats gauge the noise.
_UNTIED = {"embedding_size": 64, "tie_embeddings": False, "history_dropout": 0.0}
_TIED64 = {"embedding_size": 64, "history_dropout": 0.0}
SEARCH: list[dict[str, Any]] = [
    {**_UNTIED, "temperature": 0.1},  # the defaults before this search
    {**_UNTIED},
    {**_UNTIED, "temperature": 0.3},
    {**_UNTIED, "temperature": 0.1, "logq_correction": False},
    {**_UNTIED, "logq_correction": False},
    {**_UNTIED, "temperature": 0.3, "logq_correction": False},
    {**_UNTIED, "history_dropout": 0.3},
    {**_UNTIED, "history_dropout": 0.5},
    {**_UNTIED, "learn_temperature": True},
    {**_TIED64},
    {**_TIED64, "seed": 1},
    {**_TIED64, "history_dropout": 0.3},
    {**_TIED64, "use_metadata": False},
    {**_TIED64, "temperature": 0.15},
    {**_TIED64, "pooling": "attention"},
    {"history_dropout": 0.0},
    {"history_dropout": 0.0, "seed": 1},
    {"history_dropout": 0.3},
    {},  # the chosen defaults: tied, D=128, tau 0.2, logQ correction, history dropout 0.5
    {"history_dropout": 0.0, "batch_size": 1024},
]


# --ablation rows: (label, overrides); each row changes one thing from the row named in its label
_OLD = {"objective": "interaction", "batch_size": 512, "learning_rate": 1e-3, "epochs": 40}
_OLD_STOP = {"patience": 5}
ABLATION: list[tuple[str, dict[str, Any]]] = [
    ("interaction InfoNCE (the earlier defaults)", {**_OLD, **_OLD_STOP}),
    (
        "user-level catalogue softmax, one shared softmax",
        {"target_softmax": "shared"},
    ),
    ("  + each target vs the non-positives = the defaults", {}),
    ("defaults, B 256, lr 3e-3", {"batch_size": 256, "learning_rate": 3e-3}),
    ("defaults, holdout_fraction 0.3", {"holdout_fraction": 0.3}),
    ("defaults, temperature 0.1", {"temperature": 0.1}),
    ("defaults, attention pooling", {"pooling": "attention"}),
    ("defaults, no genres", {"use_metadata": False}),
    ("defaults without the item log-prior (item_bias=False)", {"item_bias": False}),
    ("defaults, model seed 1 (the seed-to-seed spread)", {"seed": 1}),
    ("defaults, embedding_size 256", {"embedding_size": 256}),
    ("defaults, embedding_size 256, model seed 1", {"embedding_size": 256, "seed": 1}),
]
DATASETS = {"ml-100k": None, "ml-latest-small": "data/ml-latest-small"}
DATASETS["movietweetings-100k"] = "data/movietweetings-100k"


def _dataset(ml: Path) -> Any:
    from recsys_ebm.data.prepare import prepare_dataset

    return prepare_dataset(
        ml, format="ml-100k", split="random", test_fraction=0.2, valid_fraction=0.1, seed=0
    )


def short_history_ndcg(model: Any, ds: Any, k: int = 5, seed: int = 0) -> float:
    """Validation NDCG@10 when each user is served as a new user from ``k`` random train items.

    Every train item stays masked (only the input is cut), so the figure isolates how well the
    user tower serves short histories it was not trained on, what fold-in users look like.
    """
    from recsys_ebm.evaluation.metrics import ranking_metrics

    rng = np.random.default_rng(seed)
    train, valid = ds.train, ds.valid
    rows = np.flatnonzero((valid.getnnz(axis=1) > 0) & (train.getnnz(axis=1) >= k))
    cols = [rng.choice(train[u].indices, k, replace=False) for u in rows]
    short = sp.csr_matrix(
        (np.ones(k * len(rows), np.float32), (np.repeat(np.arange(len(rows)), k), np.ravel(cols))),
        shape=(len(rows), train.shape[1]),
    )
    en = model.energies(short)  # (U, I) as new users: no user-id rows passed
    seen = train[rows]
    en[np.repeat(np.arange(len(rows)), np.diff(seen.indptr)), seen.indices] = np.inf
    top = np.argsort(en, axis=1, kind="stable")[:, :10]
    return float(np.nanmean(ranking_metrics(top, valid[rows], (10,))["ndcg@10"]))


def search(ml: Path) -> None:
    from recsys_ebm.models.retriever import Retriever

    ds = _dataset(ml)
    print(
        f"validation search on MovieLens 100K (fit on train {ds.train.nnz:,}, early stopping on "
        f"valid {ds.valid.nnz:,} NDCG@10, 40 epochs max, patience 5)"
    )
    for overrides in SEARCH:
        # the search of the interaction objective: its B, lr and epochs, whatever the defaults
        model = Retriever(**{**_OLD, "patience": 5, "progress": False, **overrides})
        t0 = time.perf_counter()
        model.fit_dataset(ds)
        info = model.fit_info
        print(
            f"  valid NDCG@10 {info['best_valid_ndcg@10']:.4f}  from 5 items "
            f"{short_history_ndcg(model, ds):.4f}  best epoch "
            f"{info['best_epoch'] + 1:>2}/{info['epochs_run']:>2}  "
            f"{info['mean_epoch_seconds']:.1f} s/epoch  {time.perf_counter() - t0:6.1f} s  "
            f"{overrides or 'defaults'}",
            flush=True,
        )


def _split(path: Path) -> Any:
    from recsys_ebm.data.prepare import prepare_dataset

    return prepare_dataset(path, split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)


def ablation(ml: Path, only: list[str] | None = None, rows: list[int] | None = None) -> None:
    """Print the ablation table (module docstring) for each dataset (``rows``: a subset)."""
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models.ease import EASE
    from recsys_ebm.models.retriever import Retriever
    from recsys_ebm.ranking._ranker_data import merge_valid

    for name, rel in DATASETS.items():
        path = ml if rel is None else ROOT / rel
        if (only and name not in only) or not path.exists():
            continue
        ds = _split(path)
        full = merge_valid(ds)
        hist = ds.history("test")
        print(
            f"{name}: {ds.n_users} users x {ds.n_items} items, train {ds.train.nnz:,}", flush=True
        )
        ease = EASE(progress=False).fit(ds.train, ds.valid)
        l2 = ease.fit_info["l2"]
        best_v = max(ease.fit_info["valid_ndcg@10_by_l2"].values())
        refit = EASE(l2=l2, l2_grid=(), progress=False).fit(full.train)
        t = evaluate_ranking(refit, hist, ds.test, (10,))["ndcg@10"]
        print(f"  {'EASE (L2 ' + format(l2, 'g') + ')':<54} valid {best_v:.4f}  test {t:.4f}")
        for r, (label, overrides) in enumerate(ABLATION):
            if rows is not None and r not in rows:
                continue
            t0 = time.perf_counter()
            model = Retriever(progress=False, **overrides).fit_dataset(ds)
            fit_s = time.perf_counter() - t0
            info = model.fit_info
            ep = info["best_epoch"] + 1
            kw = {k: v for k, v in overrides.items() if k != "patience"}
            again = Retriever(progress=False, **{**kw, "epochs": ep, "patience": 0})
            t = evaluate_ranking(again.fit_dataset(full), hist, ds.test, (10,))["ndcg@10"]
            print(
                f"  {label:<54} valid {info['best_valid_ndcg@10']:.4f}  test {t:.4f}  best "
                f"epoch {ep:>3}/{info['epochs_run']:>3}  fit {fit_s:6.1f}s",
                flush=True,
            )


def init_comparison(ml: Path, only: list[str] | None, seeds: list[int]) -> None:
    """Print the ``--init`` table (module docstring): random vs spectral item embeddings."""
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models.retriever import Retriever
    from recsys_ebm.ranking._ranker_data import merge_valid

    for name, rel in DATASETS.items():
        path = ml if rel is None else ROOT / rel
        if (only and name not in only) or not path.exists():
            continue
        ds = _split(path)
        full, hist = merge_valid(ds), ds.history("test")
        print(f"{name}: {ds.n_users} users x {ds.n_items} items", flush=True)
        for init in ("random", "spectral"):
            for seed in seeds:
                kw = {"init": init, "seed": seed, "progress": False}
                t0 = time.perf_counter()
                info = Retriever(**kw).fit_dataset(ds).fit_info
                fit_s = time.perf_counter() - t0
                ep = info["best_epoch"] + 1
                again = Retriever(**kw, epochs=ep, patience=0).fit_dataset(full)
                t = evaluate_ranking(again, hist, ds.test, (10,))["ndcg@10"]
                print(
                    f"  init {init:<8} seed {seed}  valid {info['best_valid_ndcg@10']:.4f}  "
                    f"best epoch {ep:>3}/{info['epochs_run']:>3}  fit {fit_s:6.1f}s  "
                    f"test {t:.4f}",
                    flush=True,
                )


def quality(ml: Path) -> Any:
    """Fit the three models, print test figures; returns the fitted retriever and its history."""
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models.ease import EASE
    from recsys_ebm.models.implicit_adapter import ALS
    from recsys_ebm.models.retriever import Retriever

    ds = _dataset(ml)
    hist = ds.history("test")
    print(
        f"MovieLens 100K: {ds.n_users} users x {ds.n_items} items; fit on train "
        f"({ds.train.nnz:,}), early stopping on valid ({ds.valid.nnz:,}), rank from train+valid, "
        f"score on test ({ds.test.nnz:,})"
    )
    fits: dict[str, Callable[[], Any]] = {
        "retriever": lambda: Retriever(progress=False).fit_dataset(ds),
        "ease": lambda: EASE().fit(ds.train, ds.valid),
        "als": lambda: ALS(factors=32, alpha=5.0, num_threads=2).fit(ds.train, ds.valid),
    }
    retriever = None
    for name, fit in fits.items():
        t0 = time.perf_counter()
        model = fit()
        fit_s = time.perf_counter() - t0
        res = evaluate_ranking(model, hist, ds.test, (10, 20))
        extra = ""
        if name == "retriever":
            info = model.fit_info
            retriever = model
            extra = (
                f"  {info['mean_epoch_seconds']:.2f} s/epoch (training only), best epoch "
                f"{info['best_epoch'] + 1} of {info['epochs_run']}, valid NDCG@10 "
                f"{info['best_valid_ndcg@10']:.4f}"
            )
        elif name == "ease":
            extra = f"  L2 {model.fit_info['l2']:g}"
        print(
            f"  {name:<9} NDCG@10 {res['ndcg@10']:.4f}  Recall@20 {res['recall@20']:.4f}  "
            f"fit {fit_s:6.1f}s{extra}",
            flush=True,
        )
    return retriever, hist


def _best_of(fn: Callable[[], Any], reps: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def serving(label: str, model: Any, hist: sp.csr_matrix, n: int = 100) -> None:
    """Users/s of ``recommend(hist, n)`` and its ratio to matmul + topk of the same shapes."""
    n_users, n_items = hist.shape
    dim = model.config.embedding_size
    rec_s = _best_of(lambda: model.recommend(hist, n=n))
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(n_users, dim, generator=gen)
    v = torch.randn(n_items, dim, generator=gen)

    def plain() -> None:
        with torch.no_grad():
            torch.topk(u @ v.T, n, dim=1)

    mm_s = _best_of(plain)
    rate, mm_rate = n_users / rec_s, n_users / mm_s
    print(
        f"serving {label}: {n_users:,} users x {n_items:,} items, D={dim}, top-{n}: "
        f"recommend {rate:,.0f} users/s; plain matmul+topk {mm_rate:,.0f} users/s; "
        f"ratio {rate / mm_rate:.2f} [torch threads {torch.get_num_threads()}]",
        flush=True,
    )


def synthetic_serving(n_users: int, n_items: int) -> None:
    """Serving on a larger catalogue: a one-epoch model on planted communities (speed only)."""
    from recsys_ebm.data.synthetic import planted_communities
    from recsys_ebm.models.retriever import Retriever

    log = planted_communities(n_users=n_users, n_items=n_items, n_interactions=20 * n_users, seed=0)
    x = sp.csr_matrix(
        (np.ones(log.height, np.float32), (log["user_id"].to_numpy(), log["item_id"].to_numpy())),
        shape=(n_users, n_items),
    )
    x.data[:] = 1.0
    model = Retriever(epochs=1, patience=0, progress=False, device="cpu").fit(x)
    serving("synthetic", model, x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--search", action="store_true", help="run the validation search")
    ap.add_argument("--ablation", action="store_true", help="the objective's ablation table")
    ap.add_argument(
        "--datasets", default="", help="comma-separated subset of the ablation's datasets"
    )
    ap.add_argument("--rows", default="", help="--ablation rows to run, 0-based, e.g. 2,8")
    ap.add_argument("--init", action="store_true", help="random vs spectral item embeddings")
    ap.add_argument("--seeds", default="0,1", help="model seeds of --init")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default); 1 is much faster on a contended machine",
    )
    ap.add_argument("--serve-users", type=int, default=10_000)
    ap.add_argument("--serve-items", type=int, default=20_000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ml = Path(args.ml100k)
    have_ml = (ml / "u.data").is_file()
    if not have_ml:
        print(f"MovieLens 100K: skipped ({ml} not found)")
    if args.search and have_ml:
        search(ml)
    if args.ablation:
        rows = [int(r) for r in args.rows.split(",") if r.strip()] or None
        ablation(ml, [d for d in args.datasets.split(",") if d] or None, rows)
    if args.init:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        init_comparison(ml, [d for d in args.datasets.split(",") if d] or None, seeds)
    if not args.skip_quality and have_ml:
        retriever, hist = quality(ml)
        serving("MovieLens 100K", retriever, hist)
    if args.serve_items:
        synthetic_serving(args.serve_users, args.serve_items)


if __name__ == "__main__":
    main()
