"""Uncertainty from per-user metric values: bootstrap intervals and paired tests."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["bootstrap_ci", "paired_test"]


def bootstrap_ci(
    values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users (Efron & Tibshirani 1993).

    Non-finite values (NaN: a user without a target; inf never comes from our metrics) are
    dropped. With no finite value left, or no finite resampled mean, the interval is
    (NaN, NaN): never an empty-sample quantile, which raised IndexError.

    Raises:
        ValueError: ``n_boot`` < 1 or ``level`` outside (0, 1).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot: expected a positive int (bootstrap resamples), got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level!r}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2**22 // v.size)  # bound the (boot, users) index block
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        with np.errstate(over="ignore"):  # huge values: inf means, dropped below
            means[start:stop] = v[rng.integers(0, v.size, (stop - start, v.size))].mean(axis=1)
    means = means[np.isfinite(means)]  # overflow of huge values: never an empty quantile
    if means.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired comparison of two models' per-user values (same users, same order).

    Returns the mean difference (a - b), the paired t-test p-value and the Wilcoxon signed-rank
    p-value (two-sided; NaN when every difference is zero).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"b: expected per-user values shaped like a {a.shape}, got {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    diff = a - b
    out = {
        "mean_diff": float(diff.mean()) if diff.size else float("nan"),
        "n_users": int(diff.size),
    }
    if diff.size < 2 or np.allclose(diff, 0):
        out.update(t_pvalue=float("nan"), wilcoxon_pvalue=float("nan"))
        return out
    out["t_pvalue"] = float(stats.ttest_rel(a, b).pvalue)
    out["wilcoxon_pvalue"] = float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
    return out
