"""The one leak-free full-ranking protocol: histories masked at call time, targets held out."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_ebm.evaluation.metrics import ranking_metrics

__all__ = ["evaluate_ranking"]

_PROGRESS_BLOCK = 2048  # users per progress step of a validation pass


def evaluate_ranking(
    model: Any,
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
