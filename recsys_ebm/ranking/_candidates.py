"""The ranker's fast path: approximate every item, blend, re-score the blend's top-C exactly.

The exact path scores every (user, item) with every component, which for the RBM costs
O(users x items x hidden) exp/log evaluations (its exact free-energy differences dF). The fast
path (:func:`blend_top`, used by :meth:`Ranker.recommend
<recsys_ebm.ranking.ranker.Ranker.recommend>` over the whole catalogue):

1. each :class:`~recsys_ebm.models.capabilities.ApproximateScorer` component (the RBM) gives
   its cheap approximation e~ over the catalogue (the RBM's second-order Taylor expansion of dF:
   one matmul, error <= sum_j |W_ij|^3 / 62), the others their exact energies;
2. the :class:`~recsys_ebm.ranking.blender.Blender` standardises and blends them as in the
   exact path (per-user statistics, weights and segments included), giving E~;
3. the top-C items of E~ (after the seen / excluded items are masked) are re-scored exactly:
   E(u, i) = E~(u, i) + a_k(u) (e_k(u, i) - e~_k(u, i)), where a_k(u) is the blend's coefficient
   on component k's raw energy (the blend is linear in the standardised energies, each of which
   is affine in its raw energy), and the top-k of E over the candidates is served.

What differs from the exact path: the approximated components' standardisation statistics come
from e~ (they move by O(error / spread)), and an item outside the top-C of E~ cannot be served
(the approximation error is far below the gap between the k-th and the C-th item at C = 2k).
``benchmarks/recommend.py --quality`` prints both paths' NDCG@10 side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.models._candidates import candidate_count
from recsys_ebm.models.base import mask_block
from recsys_ebm.models.capabilities import ApproximateScorer

__all__ = ["blend_top"]


def blend_top(
    components: list[Any],
    blender: Any,
    pop_energy: torch.Tensor,
    user_items: sp.csr_matrix,
    users: np.ndarray | None,
    k: int,
    exclude_seen: bool,
    exclude: np.ndarray | None,
    n_candidates: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k) blended energies (ascending) and item indices of one block of users.

    Args:
        components: the ranker's fitted components.
        blender: a fitted :class:`~recsys_ebm.ranking.blender.Blender` (weights set).
        pop_energy: (I,) popularity energies served to rows with an empty history.
        user_items: (B, I) CSR histories; users: their training rows (or None).
        k: list length; exclude_seen / exclude: as :meth:`Recommender.recommend`.
        n_candidates: C (default 2 k, at least k + 32).
    """
    dev = pop_energy.device
    n_b = user_items.shape[0]
    approx = [isinstance(m, ApproximateScorer) for m in components]
    raw = [
        m.approx_energies(user_items, users=users, batch_size=max(1, n_b))
        if a
        else m.energies(user_items, users=users, batch_size=max(1, n_b))
        for m, a in zip(components, approx, strict=True)
    ]  # K x (B, I)
    lengths = user_items.getnnz(axis=1)
    z, _, _ = blender.standardise(raw, seen=user_items)  # (K, B, I)
    e = blender.combine(z, None, lengths=lengths)  # (B, I)
    n_k = len(raw)
    unit = torch.eye(n_k, device=dev)[:, None, :].expand(n_k, n_b, n_k).contiguous()
    w_u = blender.combine(unit, None, lengths=lengths)  # (B, K): the weight of z_k per user
    served = torch.as_tensor(lengths > 0, device=dev)  # (B,) empty rows get popularity
    e[~served] = pop_energy
    mask_block(e, user_items, exclude_seen, exclude)
    c = candidate_count(k, e.shape[1], n_candidates)
    val, cand = torch.topk(e, c, dim=1, largest=False, sorted=False)  # (B, C)
    cand_np = cand.cpu().numpy()
    for j, m in enumerate(components):
        if not approx[j]:
            continue
        ek = torch.as_tensor(raw[j], device=dev)  # (B, I) approximate energies
        coef = w_u[:, j] * _slope(z[j], ek) * served  # (B,) dE / de_k
        exact = torch.as_tensor(m.energies_at(user_items, cand_np), device=dev)  # (B, C)
        val = val + coef[:, None] * (exact - ek.gather(1, cand))
    top_en, pos = torch.topk(val, min(k, c), dim=1, largest=False, sorted=True)  # (B, k)
    return top_en, cand.gather(1, pos)


def _slope(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """(B,) per-row slope dz/de of a per-row affine standardisation z = a (e - m) of (B, I)
    energies, read at each row's extreme energies (the best-conditioned pair); 0 where the row
    is constant or standardised to 0."""
    e = torch.nan_to_num(e.float(), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = e.argmin(dim=1, keepdim=True), e.argmax(dim=1, keepdim=True)  # (B, 1)
    de = (e.gather(1, hi) - e.gather(1, lo)).squeeze(1)
    dz = (z.gather(1, hi) - z.gather(1, lo)).squeeze(1)
    return torch.where(de > 0, dz / de.clamp(min=1e-30), torch.zeros_like(de))
