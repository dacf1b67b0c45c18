"""Evaluate several models under one leak-free full-ranking protocol.

For split S (``test`` or ``valid``): every model ranks the whole catalogue from
``dataset.history(S)`` (train, + valid for test, + fold-in for held-out users) with those items
masked at call time; ``dataset.matrix(S)`` is only read to score. Users with no target or no
history are skipped (and counted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys_ebm.evaluation.metrics import (
    beyond_accuracy,
    ranking_metrics,
    rating_errors,
    recall_by_popularity,
)
from recsys_ebm.evaluation.stats import bootstrap_ci, paired_test
from recsys_ebm.models.capabilities import RatingPredictor

if TYPE_CHECKING:
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.models.base import Recommender

__all__ = ["EvaluationResult", "ModelResult", "evaluate_models"]


def __getattr__(name: str) -> Any:
    # BASELINES: the registry's baseline models (``is_baseline``), read on first use (PEP 562)
    if name == "BASELINES":
        from recsys_ebm.models import baseline_names

        return baseline_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_BLOCK_USERS = 4096  # users ranked per progress step


@dataclass
class ModelResult:
    name: str
    kind: str
    config: dict[str, Any]
    per_user: dict[str, np.ndarray]  # metric -> (U,)
    means: dict[str, float]
    ci: dict[str, tuple[float, float]]
    beyond: dict[str, float]
    recall_by_bucket: np.ndarray
    energies_pos: np.ndarray
    energies_rand: np.ndarray
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)
    #: the model is a baseline (``Recommender.is_baseline``): the best one is the reference
    baseline: bool = False


@dataclass
class EvaluationResult:
    split: str
    ks: tuple[int, ...]
    recall_denominator: str
    n_users: int
    n_skipped: int
    models: list[ModelResult]
    significance: dict[str, dict[str, float]]  # model -> paired test vs best baseline
    best_baseline: str | None
    primary: str

    def table(self) -> list[dict[str, Any]]:
        return [{"model": m.name, **m.means, **m.beyond, **m.extra} for m in self.models]


def _wants_ratings(model: Recommender) -> bool:
    """Rating models (``history_values = "rating"``) rank from the rating-valued history."""
    return model.history_values == "rating"


def evaluate_models(
    dataset: Dataset,
    models: dict[str, Recommender],
    ks: tuple[int, ...] = (10, 20, 50),
    *,
    split: str = "test",
    recall_denominator: str = "relevant",
    n_boot: int = 1000,
    energy_sample_users: int = 300,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate fitted models (name -> Recommender) on ``split`` of ``dataset``.

    With ``progress``, stderr shows a bar per model and per block of users on a terminal, and
    timestamped lines in a log (:mod:`recsys_ebm.progress`).

    Raises:
        ValueError: no models, bad ``ks`` or ``n_boot``, or no user of ``split`` has both a
            held-out item and a history (nothing to evaluate).
    """
    from recsys_ebm.progress import progress as make_progress

    if not models:
        raise ValueError("models: expected at least one model, got none")
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] <= 0:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot: expected a positive int (bootstrap resamples), got {n_boot!r}")
    history = dataset.history(split)
    target = dataset.matrix(split)
    rows = np.flatnonzero((target.getnnz(axis=1) > 0) & (history.getnnz(axis=1) > 0))
    skipped = int((target.getnnz(axis=1) > 0).sum() - rows.size)
    if rows.size == 0:
        raise ValueError(
            f"split: no user of {split!r} has both a held-out item and a history "
            f"({skipped} user(s) with held-out items have no training history); nothing to "
            "evaluate (were the held-out users' histories folded in when preparing?)"
        )
    hist_rows, target_rows = history[rows], target[rows]
    item_counts = np.asarray(dataset.train.getnnz(axis=0), dtype=np.float64)
    rng = np.random.default_rng(seed)
    sample = rng.choice(rows.size, size=min(energy_sample_users, rows.size), replace=False)
    primary = f"ndcg@{ks[0]}"
    rating_rows = None  # rating-valued history, built once if a model asks for it
    if dataset.has_ratings and any(
        _wants_ratings(m) or isinstance(m, RatingPredictor) for m in models.values()
    ):
        rating_rows = dataset.history(split, values="rating")[rows]
    results = []
    bar = make_progress(len(models), desc="evaluate", unit="model", enabled=progress)
    for name, model in models.items():
        if _wants_ratings(model) and rating_rows is None:
            raise ValueError(
                f"models: {name!r} reads rating-valued histories, but the dataset has no ratings"
            )
        model_hist = rating_rows if _wants_ratings(model) else hist_rows
        t0 = time.perf_counter()
        parts = [np.zeros((0, max(ks)), dtype=np.int64)]
        blocks = make_progress(
            range(0, rows.size, _BLOCK_USERS),
            desc=f"evaluate {name}",
            unit="block",
            enabled=progress,
            leave=False,
        )
        for s in blocks:  # same lists as one call: each row is ranked on its own
            sl = slice(s, s + _BLOCK_USERS)
            parts.append(model.recommend(model_hist[sl], n=max(ks), users=rows[sl])[0])
        items = np.concatenate(parts)
        per_user = ranking_metrics(items, target_rows, ks, recall_denominator=recall_denominator)
        seconds = time.perf_counter() - t0
        means = {k: float(np.nanmean(v)) for k, v in per_user.items()}
        ci = {k: bootstrap_ci(v, n_boot=n_boot, seed=seed) for k, v in per_user.items()}
        beyond = beyond_accuracy(items, item_counts, dataset.n_users, ks[0])
        by_bucket, _ = recall_by_popularity(items, target_rows, item_counts, ks[-1])
        en = model.energies(model_hist[sample], users=rows[sample])  # (S, I)
        t_s = target_rows[sample].tocoo()
        pos = en[t_s.row, t_s.col]
        rand = en[rng.integers(0, len(sample), pos.size), rng.integers(0, en.shape[1], pos.size)]
        extra = {}
        if isinstance(model, RatingPredictor) and rating_rows is not None:
            # predicted from the rating history (train [+ valid]); the target split only scores
            coo = dataset.ratings(split)[rows].tocoo()
            pred = model.predict_ratings(rating_rows, coo.row, coo.col, users=rows)
            extra = rating_errors(pred, coo.data)
        results.append(
            ModelResult(
                name,
                model.name or type(model).__name__,
                model.config.to_dict(),
                per_user,
                means,
                ci,
                beyond,
                by_bucket,
                pos,
                rand,
                seconds,
                extra,
                bool(model.is_baseline),
            )
        )
        bar.update(1, model=name, **{primary: means[primary]})
    bar.close()
    baselines = [r for r in results if r.baseline]
    best = max(baselines, key=lambda r: r.means[primary]) if baselines else None
    significance = {}
    if best is not None:
        for r in results:
            if r is not best:
                significance[r.name] = paired_test(r.per_user[primary], best.per_user[primary])
    return EvaluationResult(
        split,
        ks,
        recall_denominator,
        int(rows.size),
        skipped,
        results,
        significance,
        best.name if best else None,
        primary,
    )
