"""Validation scores the models' training loops monitor, below the evaluation layer.

Top-N ranking metrics over the full catalogue (per user, vectorised; definitions in
:mod:`recsys_ebm.evaluation.metrics`, which re-exports them) and the one leak-free full-ranking
protocol (:func:`evaluate_ranking`: histories masked at call time, targets held out), plus
:func:`ndcg_monitor`, the validation NDCG@k monitor the iterative models early-stop on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from recsys_ebm.models.base import Recommender

__all__ = ["evaluate_ranking", "hits_matrix", "ndcg_monitor", "ranking_metrics"]

_PROGRESS_BLOCK = 2048  # users per progress step of a validation pass


def hits_matrix(rec_items: np.ndarray, target: sp.csr_matrix) -> np.ndarray:
    """(U, K) bool: whether each recommended item is in the user's target row (-1 never hits)."""
    target = sp.csr_matrix(target)
    n_rows, k = rec_items.shape
    if target.shape[0] != n_rows:
        raise ValueError(
            f"target: expected {n_rows} rows (one per recommendation list), got {target.shape[0]}"
        )
    # Row-wise membership through a sorted key search: key = row * n_items + item.
    n_items = target.shape[1]
    coo = target.tocoo()
    keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col.astype(np.int64))
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), k)
    cand = rows * n_items + np.where(rec_items.ravel() < 0, -1 - rows * n_items, rec_items.ravel())
    pos = np.searchsorted(keys, cand)
    pos = np.minimum(pos, max(0, len(keys) - 1))
    hit = (len(keys) > 0) & (keys[pos] == cand) if len(keys) else np.zeros_like(cand, dtype=bool)
    return np.asarray(hit, dtype=bool).reshape(n_rows, k)


def ranking_metrics(
    rec_items: np.ndarray,
    target: sp.csr_matrix,
    ks: tuple[int, ...] | list[int] = (10,),
    *,
    recall_denominator: str = "relevant",
) -> dict[str, np.ndarray]:
    """Per-user metric values for each K.

    Args:
        rec_items: (U, Kmax) recommended item indices, best first (-1 = padding).
        target: (U, I) CSR of held-out relevant items, one row per list.
        ks: cut-offs, each <= Kmax.
        recall_denominator: ``"relevant"`` (|rel|) or ``"min"`` (min(K, |rel|)).

    Returns:
        ``{"recall@10": (U,), "ndcg@10": (U,), ..., "mrr": (U,)}``; users with no relevant items
        get NaN (callers should evaluate only users with targets).
    """
    if recall_denominator not in ("relevant", "min"):
        raise ValueError(
            f"recall_denominator: expected 'relevant' or 'min', got {recall_denominator!r}"
        )
    kmax = rec_items.shape[1]
    for k in ks:
        if k <= 0 or k > kmax:
            raise ValueError(f"ks: each K must lie in [1, {kmax}], got {k}")
    hits = hits_matrix(rec_items, target).astype(np.float64)  # (U, Kmax)
    n_rel = np.asarray(target.getnnz(axis=1), dtype=np.float64)  # (U,)
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = np.where(n_rel > 0, 1.0, np.nan)
        discount = 1.0 / np.log2(np.arange(2, kmax + 2))  # (Kmax,)
        cum_hits = np.cumsum(hits, axis=1)
        out: dict[str, np.ndarray] = {}
        for k in ks:
            h = cum_hits[:, k - 1]
            denom = n_rel if recall_denominator == "relevant" else np.minimum(k, n_rel)
            out[f"recall@{k}"] = h / denom * valid
            out[f"precision@{k}"] = h / k * valid
            out[f"hitrate@{k}"] = (h > 0).astype(np.float64) * valid
            dcg = hits[:, :k] @ discount[:k]
            ideal = np.cumsum(discount[:k])
            idcg = ideal[np.clip(np.minimum(k, n_rel).astype(int) - 1, 0, k - 1)]
            out[f"ndcg@{k}"] = dcg / idcg * valid
            prec_at_r = cum_hits[:, :k] / np.arange(1, k + 1)
            out[f"map@{k}"] = (prec_at_r * hits[:, :k]).sum(axis=1) / np.minimum(k, n_rel) * valid
        first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
        out["mrr"] = (1.0 / first) * valid
    return out


def evaluate_ranking(
    model: Recommender,
    history: sp.csr_matrix,
    target: sp.csr_matrix,
    ks: tuple[int, ...] = (10,),
    *,
    batch_size: int | None = None,
    recall_denominator: str = "relevant",
    progress_desc: str | None = None,
) -> dict[str, float]:
    """Mean metrics of ``model`` over users with a target and a non-empty history.

    The model ranks the whole catalogue from ``history`` with seen items masked (the mask comes
    from ``history``, passed here, never from fit-time state); ``target`` is only read to score.
    With ``progress_desc`` (e.g. ``"validate rbm"``) the users are ranked in blocks of
    ``_PROGRESS_BLOCK`` with an inner progress bar / log line (:mod:`recsys_ebm.progress`);
    the result is the same.

    Raises:
        ValueError: history and target shapes differ, or they overlap (a leaky call: a target
            item inside the history would be masked or, worse, scored as seen).
    """
    if history.shape != target.shape:
        raise ValueError(
            f"target: expected the history's shape {history.shape}, got {target.shape}"
        )
    overlap = history.multiply(target)
    if overlap.nnz:
        raise ValueError(
            f"history: {overlap.nnz} (user, item) pairs appear in both history and target; "
            "evaluation would leak the test split into the model's input"
        )
    rows = np.flatnonzero((target.getnnz(axis=1) > 0) & (history.getnnz(axis=1) > 0))
    kmax = max(ks)
    # history row u is user u of the dataset, i.e. the model's training row u
    if progress_desc is None:
        items, _ = model.recommend(history[rows], n=kmax, users=rows, batch_size=batch_size)
    else:
        from recsys_ebm.progress import progress

        starts = range(0, rows.size, _PROGRESS_BLOCK)
        parts = [np.zeros((0, kmax), dtype=np.int64)]
        for s in progress(starts, desc=progress_desc, unit="block", leave=False):
            r = rows[s : s + _PROGRESS_BLOCK]
            parts.append(model.recommend(history[r], n=kmax, users=r, batch_size=batch_size)[0])
        items = np.concatenate(parts)
    per_user = ranking_metrics(items, target[rows], ks, recall_denominator=recall_denominator)
    return {k: float(np.nanmean(v)) for k, v in per_user.items()}


def ndcg_monitor(
    model: Recommender,
    history: sp.csr_matrix,
    target: sp.csr_matrix | None,
    k: int = 10,
    *,
    progress_desc: str | None = None,
) -> Callable[[], float] | None:
    """A monitor for :func:`recsys_ebm.models.training.run_training`: each call returns the
    model's current NDCG@``k`` ranking ``target`` from ``history``; None when there is no target
    (no validation split, or an empty one)."""
    if target is None or target.nnz == 0:
        return None

    def monitor() -> float:
        return evaluate_ranking(model, history, target, (k,), progress_desc=progress_desc)[
            f"ndcg@{k}"
        ]

    return monitor
