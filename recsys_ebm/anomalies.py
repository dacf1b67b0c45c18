"""Energy-based anomaly scoring: the free energy of a whole user profile under an RBM.

F(v) = -log sum_h exp(-E(v, h)) is -log p(v) up to the constant log Z, so ranking profiles by
free energy (highest first) ranks them from least to most plausible under the model: bots and
injected shilling profiles, whose item sets do not follow the co-occurrence structure the RBM
learned, rank first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_ebm.models.capabilities import FreeEnergyModel

if TYPE_CHECKING:
    from recsys_ebm.models.base import Recommender

__all__ = ["anomaly_scores", "inject_shilling_profiles", "roc_auc", "scores_frame"]


def anomaly_scores(model: Recommender, user_items: sp.csr_matrix) -> np.ndarray:
    """(U,) anomaly score of each profile = its free energy (higher = more anomalous).

    Raises:
        TypeError: the model has no free energy (only the RBMs do).
    """
    if not isinstance(model, FreeEnergyModel):
        raise TypeError(
            "model: expected a model with a free energy (the RBM, or the softmax RBM with "
            f"orientation 'user'), got {type(model).__name__}"
        )
    return np.asarray(model.free_energy(user_items), dtype=np.float64)


def inject_shilling_profiles(
    train: sp.csr_matrix,
    n_profiles: int,
    kind: str,
    *,
    filler_size: int,
    target_item: int,
    seed: int = 0,
) -> sp.csr_matrix:
    """Synthetic attack profiles (Lam & Riedl 2004; Mobasher et al. 2007), binary form.

    * ``random``: filler items drawn uniformly from the catalogue, plus the target item.
    * ``average``: filler items drawn in proportion to their popularity (the profile looks like
      an average user's), plus the target item.
    """
    if kind not in ("random", "average"):
        raise ValueError(f"kind: expected 'random' or 'average', got {kind!r}")
    n_items = train.shape[1]
    if not 0 < filler_size < n_items:
        raise ValueError(f"filler_size: expected 1..{n_items - 1}, got {filler_size}")
    rng = np.random.default_rng(seed)
    pop = np.asarray(train.getnnz(axis=0), dtype=np.float64) + 1e-9
    p = None if kind == "random" else pop / pop.sum()
    rows, cols = [], []
    for r in range(n_profiles):
        items = rng.choice(n_items, size=filler_size, replace=False, p=p)
        items = np.union1d(items, [target_item])
        rows += [r] * len(items)
        cols += items.tolist()
    return sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_profiles, n_items)
    )


def scores_frame(user_ids: np.ndarray, scores: np.ndarray, n_items: np.ndarray) -> pl.DataFrame:
    """Ranked table: rank (1 = most anomalous), user_id, free_energy, n_items."""
    order = np.argsort(-scores, kind="stable")
    return pl.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1, dtype=np.int64),
            "user_id": pl.Series([user_ids[i] for i in order]),
            "free_energy": scores[order],
            "n_items": n_items[order].astype(np.int64),
        }
    )


def roc_auc(anomalous: np.ndarray, normal: np.ndarray) -> float:
    """ROC AUC of scores (higher = more anomalous): P(score of an anomaly > score of a normal
    profile), ties counting one half (the Mann-Whitney U statistic, normalised)."""
    from scipy.stats import rankdata

    a, n = np.asarray(anomalous, np.float64), np.asarray(normal, np.float64)
    if a.size == 0 or n.size == 0:
        raise ValueError("anomalous/normal: expected non-empty score arrays")
    ranks = rankdata(np.concatenate([a, n]))
    u = ranks[: a.size].sum() - a.size * (a.size + 1) / 2.0
    return float(u / (a.size * n.size))
