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

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.evaluation.metrics import ranking_metrics

__all__ = ["blend", "search_weights", "zscore"]

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


def _ndcg(
    z: torch.Tensor, w: torch.Tensor, seen: torch.Tensor, cand: torch.Tensor, target: sp.csr_matrix
) -> float:
    e = blend(z, w, cand).masked_fill(seen, float("inf"))  # (U, I)
    top = torch.topk(e, 10, dim=1, largest=False).indices.cpu().numpy()
    return float(np.nanmean(ranking_metrics(top, target, (10,))["ndcg@10"]))


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
