"""Top-N ranking metrics over the full catalogue, per user, vectorised.

Definitions (binary relevance; ``rel`` = the user's held-out items, ``L`` = the top-K list):

* Recall@K = |L ∩ rel| / |rel|  (``recall_denominator="min"``: / min(K, |rel|))
* Precision@K = |L ∩ rel| / K
* HitRate@K = 1 if |L ∩ rel| > 0 else 0
* NDCG@K = DCG / IDCG, DCG = sum_{r=1..K} hit_r / log2(r + 1), IDCG over min(K, |rel|) hits
* MAP@K = (1 / min(K, |rel|)) * sum_r hit_r * Precision@r
* MRR = 1 / rank of the first hit within the list (0 if none)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys_ebm.models.validation import hits_matrix, ranking_metrics

__all__ = [
    "beyond_accuracy",
    "hits_matrix",
    "ranking_metrics",
    "rating_errors",
    "recall_by_popularity",
]


def beyond_accuracy(
    rec_items: np.ndarray, item_counts: np.ndarray, n_users: int, k: int
) -> dict[str, float]:
    """Catalogue coverage, average recommended popularity and novelty of top-``k`` lists.

    * coverage = |distinct recommended items| / |catalogue|
    * avg_popularity = mean training interaction count of recommended items
    * novelty = mean self-information -log2(p_i), p_i = (count_i + 1) / (n_users + 1)
      (Zhou et al. 2010; +1 smoothing keeps never-seen items finite)
    """
    top = rec_items[:, :k]
    top = top[top >= 0]
    if top.size == 0:
        return {f"coverage@{k}": 0.0, f"avg_popularity@{k}": 0.0, f"novelty@{k}": 0.0}
    p = (item_counts[top] + 1.0) / (n_users + 1.0)
    return {
        f"coverage@{k}": float(np.unique(top).size / len(item_counts)),
        f"avg_popularity@{k}": float(item_counts[top].mean()),
        f"novelty@{k}": float(np.mean(-np.log2(p))),
    }


def rating_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """RMSE and MAE of rating predictions (same-length arrays)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape or predicted.size == 0:
        raise ValueError(
            f"predicted: expected a non-empty array shaped like actual {actual.shape}, "
            f"got {predicted.shape}"
        )
    err = predicted - actual
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def recall_by_popularity(
    rec_items: np.ndarray,
    target: sp.csr_matrix,
    item_counts: np.ndarray,
    k: int,
    n_buckets: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Recall@k restricted to held-out items of each popularity bucket.

    Items are ordered by training popularity and cut into ``n_buckets`` buckets holding equal
    shares of training interactions (bucket 0 = the blockbusters). Returns ``(recall, n_targets)``
    per bucket; a model that only recommends blockbusters has recall near 0 in the tail buckets.
    """
    order = np.argsort(-item_counts, kind="stable")
    sorted_counts = item_counts[order]
    # share of interactions held by strictly more popular items: the item's starting point
    start = (np.cumsum(sorted_counts) - sorted_counts) / max(1.0, item_counts.sum())
    bucket_of = np.empty(len(item_counts), dtype=np.int64)
    bucket_of[order] = np.minimum((start * n_buckets).astype(np.int64), n_buckets - 1)
    bucket_of[order[item_counts[order] == 0]] = n_buckets - 1
    hits = hits_matrix(rec_items[:, :k], target)
    hit_items = rec_items[:, :k][hits]
    coo = target.tocoo()
    n_t = np.bincount(bucket_of[coo.col], minlength=n_buckets).astype(np.float64)
    n_h = np.bincount(bucket_of[hit_items], minlength=n_buckets).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_t > 0, n_h / n_t, np.nan), n_t
