"""Blend maths: per-user z-scored energies, weighted sums, and the weight search on validation.

Each component k gives energies e_k(u, i). Their scales differ wildly (EASE scores, an RBM's free
energy differences, ALS dot products), so each is standardised per user over the user's
candidate set C_u (minus the items the user has already seen, which are never served):

    z_k(u, i) = (e_k(u, i) - mean_{j in C_u} e_k(u, j)) / std_{j in C_u} e_k(u, j)

and the ranker's energy is E(u, i) = sum_k w_k z_k(u, i) with w on the simplex (w_k >= 0,
sum w = 1) - a product of experts in the energy view, p(i|u) ∝ prod_k exp(-w_k z_k(u, i))
(Hinton 2002, "Training products of experts by minimizing contrastive divergence"). Standardising
makes the weights comparable across components; a component constant over C_u contributes 0.
Items outside C_u are shifted above every candidate so that candidates always rank first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.evaluation.metrics import ranking_metrics

__all__ = [
    "bagged_grid_weights",
    "blend",
    "grid_step",
    "search_weights",
    "simplex_grid",
    "zscore",
]

# std below this (relative to 1) means the component does not discriminate among the candidates
_STD_FLOOR = 1e-6


def zscore(energy: torch.Tensor, stats_mask: torch.Tensor) -> torch.Tensor:
    """Standardise (B, I) energies per row over ``stats_mask`` (B, I) bool entries.

    Rows whose mask is empty use every item. Non-finite energies are clamped to the row's finite
    range first so one inf cannot poison the statistics.
    """
    e = torch.nan_to_num(energy.float(), nan=0.0, posinf=0.0, neginf=0.0)  # (B, I)
    mask = stats_mask.clone()
    empty = ~mask.any(dim=1)  # (B,)
    mask[empty] = True
    m = mask.float()
    cnt = m.sum(dim=1, keepdim=True)  # (B, 1)
    mean = (e * m).sum(dim=1, keepdim=True) / cnt  # (B, 1)
    var = (((e - mean) * m) ** 2).sum(dim=1, keepdim=True) / cnt  # (B, 1)
    std = var.sqrt()
    z = (e - mean) / std.clamp(min=_STD_FLOOR)
    return torch.where(std > _STD_FLOOR, z, torch.zeros_like(z))  # (B, I)


def blend(
    z: torch.Tensor, weights: torch.Tensor, cand_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """E = sum_k w_k z_k: (K, B, I) x (K,) -> (B, I); non-candidates shifted above candidates."""
    e = torch.einsum("kbi,k->bi", z, weights.to(z.dtype))  # (B, I)
    if cand_mask is not None and not bool(cand_mask.all()):
        inf = torch.tensor(float("inf"), device=e.device)
        top_cand = torch.where(cand_mask, e, -inf).amax(dim=1, keepdim=True)  # (B, 1)
        low_rest = torch.where(cand_mask, inf, e).amin(dim=1, keepdim=True)  # (B, 1)
        gap = (top_cand - low_rest + 1.0).clamp(min=0.0)
        gap = torch.nan_to_num(gap, nan=0.0, posinf=0.0, neginf=0.0)
        e = torch.where(cand_mask, e, e + gap)
    return e


def _ndcg_each(
    z: torch.Tensor, w: torch.Tensor, seen: torch.Tensor, cand: torch.Tensor, target: sp.csr_matrix
) -> np.ndarray:
    """(U,) per-user NDCG@10 of the blend with weights ``w`` (NaN: users without targets)."""
    e = blend(z, w, cand).masked_fill(seen, float("inf"))  # (U, I)
    top = torch.topk(e, 10, dim=1, largest=False).indices.cpu().numpy()
    return ranking_metrics(top, target, (10,))["ndcg@10"]


def _ndcg(
    z: torch.Tensor, w: torch.Tensor, seen: torch.Tensor, cand: torch.Tensor, target: sp.csr_matrix
) -> float:
    return float(np.nanmean(_ndcg_each(z, w, seen, cand, target)))


def search_weights(
    z: torch.Tensor,
    seen: torch.Tensor,
    cand: torch.Tensor,
    target: sp.csr_matrix,
    *,
    step: float = 0.1,
    rounds: int = 3,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[np.ndarray, float]:
    """Coordinate search over the weight simplex maximising NDCG@10 on a validation target.

    Args:
        z: (K, U, I) z-scored component energies of the validation users (history = train).
        seen: (U, I) bool, the users' training items (masked, never recommended).
        cand: (U, I) bool candidate sets.
        target: (U, I) CSR validation items.
        step: grid step of each coordinate move (t in {0, step, ..., 1}).
        rounds: passes over the coordinates (stops early when a pass gains nothing).

    Returns:
        ``(weights, ndcg@10)``: the best weights found and their validation NDCG@10. The start is
        the best of equal weights and each single component, so the result is never worse on
        validation than the best single component or the equal blend.
    """
    k = z.shape[0]
    starts = [np.full(k, 1.0 / k)] + [np.eye(k)[j] for j in range(k)]
    scored = [
        (_ndcg(z, torch.as_tensor(s, dtype=torch.float32), seen, cand, target), s) for s in starts
    ]
    best, w = max(scored, key=lambda t: t[0])
    if callback is not None:
        callback(0, {"valid_ndcg@10": best, **{f"w{j}": float(w[j]) for j in range(k)}})
    grid = np.round(np.arange(0.0, 1.0 + 1e-9, step), 10)
    for r in range(1, rounds + 1):
        improved = False
        for j in range(k):
            rest = w.copy()
            rest[j] = 0.0
            rest = rest / rest.sum() if rest.sum() > 0 else np.full(k, 0.0)
            for t in grid:
                cand_w = (1.0 - t) * rest + t * np.eye(k)[j]
                if cand_w.sum() <= 0 or np.allclose(cand_w, w):
                    continue
                s = _ndcg(z, torch.as_tensor(cand_w, dtype=torch.float32), seen, cand, target)
                if s > best + 1e-9:
                    best, w, improved = s, cand_w, True
        if callback is not None:
            callback(r, {"valid_ndcg@10": best, **{f"w{j}": float(w[j]) for j in range(k)}})
        if not improved:
            break
    return w / w.sum(), best


#: most points of the full simplex grid that :func:`bagged_grid_weights` scores
MAX_GRID = 2000


def simplex_grid(k: int, step: float) -> np.ndarray:
    """(G, k) every weight vector on the simplex whose coordinates are multiples of ``step``
    (1 / step rounded to an int n; G = C(n + k - 1, k - 1): 286 for k = 4, step 0.1)."""
    n = max(1, round(1.0 / step))
    out: list[list[int]] = []

    def walk(prefix: list[int], left: int, slots: int) -> None:
        if slots == 1:
            out.append([*prefix, left])
            return
        for c in range(left, -1, -1):
            walk([*prefix, c], left - c, slots - 1)

    walk([], n, k)
    return np.asarray(out, dtype=np.float64) / n


def grid_size(k: int, step: float) -> int:
    """Points of :func:`simplex_grid` (k, step)."""
    n = max(1, round(1.0 / step))
    return math.comb(n + k - 1, k - 1)


def grid_step(k: int, step: float) -> float:
    """``step``, or the finest 1 / n coarser than it whose grid has at most :data:`MAX_GRID`
    points (k = 7 components: 1 / 7 instead of 0.1)."""
    n = max(1, round(1.0 / step))
    while n > 1 and grid_size(k, 1.0 / n) > MAX_GRID:
        n -= 1
    return step if n == round(1.0 / step) else 1.0 / n


def bagged_grid_weights(
    z: torch.Tensor,
    seen: torch.Tensor,
    cand: torch.Tensor,
    target: sp.csr_matrix,
    *,
    step: float = 0.1,
    bags: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Bagged blend weights (Breiman 1996, "Bagging predictors"): the mean, over ``bags``
    bootstrap resamples of the validation users, of the grid point maximising each resample's
    NDCG@10.

    Validation NDCG@10 is flat over a wide region of the simplex (components that rank alike),
    so the single best point is chosen by the validation users' noise: the coordinate search's
    weights moved by up to 0.5 between seeds at equal validation scores. The argmax is an
    unstable procedure; averaging it over resamples keeps the weights in the middle of the
    near-optimal region, and when the held-out NDCG is concave there, the average's NDCG is at
    least the average NDCG of the resamples' choices (Jensen). Every grid point's per-user
    NDCG@10 is computed once (G blends, :func:`simplex_grid`); each resample only reweights
    users, so the bags cost O(bags G U).

    Args: as :func:`search_weights`; ``bags`` resamples drawn from ``seed``; the grid's step is
    ``step``, coarsened by :func:`grid_step` where the grid would exceed :data:`MAX_GRID` points.

    Returns:
        ``(weights, ndcg@10)``: the bagged weights (sum 1) and their validation NDCG@10.
    """
    k = z.shape[0]
    grid = simplex_grid(k, grid_step(k, step))  # (G, K), at most MAX_GRID points
    scores = np.stack(  # (G, U) per-user NDCG@10 of each grid point
        [_ndcg_each(z, torch.as_tensor(w, dtype=torch.float32), seen, cand, target) for w in grid]
    )
    scores = scores[:, ~np.isnan(scores).any(axis=0)]  # the users with validation items
    n_users = scores.shape[1]
    rng = np.random.default_rng(seed)
    picks = np.zeros(k)
    for _ in range(bags):
        counts = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users))  # (U,) bootstrap
        picks += grid[int(np.argmax(scores @ counts))]
    w = picks / bags
    return w, _ndcg(z, torch.as_tensor(w, dtype=torch.float32), seen, cand, target)


# ---------------------------------------------------------------- calibration and user segments
def centre(energy: torch.Tensor, stats_mask: torch.Tensor) -> torch.Tensor:
    """(B, I) energies minus each row's mean over ``stats_mask`` (B, I) (every item when empty).

    A per-user shift changes no ranking and no softmax over items; it only keeps the blended
    numbers small. Non-finite energies are zeroed first, as in :func:`zscore`.
    """
    e = torch.nan_to_num(energy.float(), nan=0.0, posinf=0.0, neginf=0.0)  # (B, I)
    mask = stats_mask.clone()
    mask[~mask.any(dim=1)] = True
    m = mask.float()
    return e - (e * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True)


def fit_inverse_temperature(
    energy: torch.Tensor, stats_mask: torch.Tensor, target: sp.csr_matrix, *, iters: int = 32
) -> float:
    """Maximum-likelihood inverse temperature beta of one component on validation targets.

    The component's conditional over the unseen candidates C_u is the softmax of -beta e:

        p_beta(i | u) = exp(-beta e(u, i)) / sum_{j in C_u} exp(-beta e(u, j))

    (a conditional EBM whose partition function is a sum over items). Its negative
    log-likelihood of the validation items T_u, NLL(beta) = sum_u sum_{i in T_u}
    [beta e(u, i) + log sum_j exp(-beta e(u, j))], is convex in beta (a log-sum-exp of linear
    functions plus a linear term), with derivative sum_u (sum_{i in T_u} e(u, i) - |T_u|
    E_{p_beta}[e(u, .)]), increasing in beta. Bisection on its sign in log beta (Platt 1999's
    scaling with a single parameter, as temperature scaling in Guo et al. 2017).

    Args:
        energy: (U, I) energies of the validation users (history = train).
        stats_mask: (U, I) bool, the candidates each user may be served (unseen items).
        target: (U, I) CSR validation items.

    Returns:
        beta > 0 (1 / temperature); users without a target item are ignored.
    """
    e = centre(energy, stats_mask)  # (U, I) float32: the bisection needs only the sign
    t = torch.as_tensor(sp.csr_matrix(target).toarray() > 0, device=e.device) & stats_mask
    rows = t.any(dim=1)
    e, t, mask = e[rows], t[rows].float(), stats_mask[rows]
    if not e.shape[0]:
        return 1.0
    n_t = t.sum(dim=1)  # (U,)
    obs = (e * t).sum(dim=1)  # (U,) energy of the observed items
    scale = float(e.masked_fill(~mask, 0.0).pow(2).sum() / mask.sum()) ** 0.5 or 1.0

    def grad(beta: float) -> float:
        logits = (-beta * e).masked_fill(~mask, float("-inf"))
        p = torch.softmax(logits, dim=1)  # (U, I)
        return float((obs - n_t * (p * e.masked_fill(~mask, 0.0)).sum(dim=1)).sum())

    lo, hi = -12.0, 12.0  # log(beta * scale): beta from ~6e-6 to ~1.6e5 energy-scale units
    if grad(np.exp(hi) / scale) < 0:
        return float(np.exp(hi) / scale)
    if grad(np.exp(lo) / scale) > 0:
        return float(np.exp(lo) / scale)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if grad(np.exp(mid) / scale) > 0:
            hi = mid
        else:
            lo = mid
    return float(np.exp((lo + hi) / 2) / scale)


def segment_edges(lengths: np.ndarray, n_segments: int) -> np.ndarray:
    """(S - 1,) history-length edges: the quantiles 1/S, ..., (S-1)/S of ``lengths``.

    Quantiles (not fixed counts) so that each segment holds about the same number of users on
    any dataset: the same default rule everywhere. Repeated edges are dropped.
    """
    if n_segments <= 1 or not len(lengths):
        return np.zeros(0, dtype=np.float64)
    q = np.quantile(np.asarray(lengths, np.float64), np.arange(1, n_segments) / n_segments)
    return np.unique(q)


def segment_of(lengths: np.ndarray | torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(B,) segment index of each history length: s such that edges[s-1] < n <= edges[s]."""
    if torch.is_tensor(lengths):  # possibly on CUDA: the edges go there, no host round trip
        n = lengths.double()
    else:
        n = torch.as_tensor(np.asarray(lengths), dtype=torch.float64, device=edges.device)
    return torch.bucketize(n, edges.to(device=n.device, dtype=torch.float64), right=False)


def blend_segments(
    z: torch.Tensor,
    weights: torch.Tensor,
    segment: torch.Tensor,
    cand_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """E(u, i) = sum_k W[s(u), k] z_k(u, i): (K, B, I), (S, K), (B,) -> (B, I).

    One weight vector per user segment s(u); non-candidates shifted above candidates as in
    :func:`blend`.
    """
    w = weights.to(device=z.device, dtype=z.dtype)[segment.to(z.device)]  # (B, K)
    e = torch.einsum("kbi,bk->bi", z, w)  # (B, I)
    if cand_mask is not None and not bool(cand_mask.all()):
        # the shift of blend(): reuse it with a unit weight on the blended energies
        e = blend(e[None], torch.ones(1, device=z.device, dtype=z.dtype), cand_mask)
    return e
