"""The ranker's serving cascade for the calibrated blend: one matmul over the catalogue, exact
re-scoring of a few hundred candidates per user.

The calibrated blend (:class:`~recsys_ebm.ranking.blender.Blender`, ``norm="calibrated"``) is
linear in the raw component energies: with a_k(u) = w_k(u) beta_k (the user's segment weights
times the component's inverse temperature),

    E(u, i) = sum_k a_k(u) e_k(u, i) - c(u),    c(u) = sum_k a_k(u) mean_{j unseen} e_k(u, j),

and c(u) changes no ranking. Every component is a
:class:`~recsys_ebm.models.capabilities.FactorScorer`: e_k(u, i) = U_k(u) . V_k(i) + b_k(i),
exactly (ALS, BPR, the retriever, popularity) or as a proxy (EASE's truncated SVD, the RBM's
second-order expansion). So, per block of users:

1. **one matmul** scores every item: [a_1 U_1 | a_1 | a_2 U_2 | a_2 | ...] (B, D + K) times
   [V_1 | b_1 | V_2 | b_2 | ...]^T (D + K, I) gives S(u, i) = sum_k a_k(u) e~_k(u, i) (B, I),
   where e~_k is e_k or its proxy (the components that are re-scored get their own product, so
   that their proxy can be read back at the candidates);
2. the seen and excluded items are masked and the top-C items of S are kept (C = k +
   max(20, k / 4) by default: 30 for k = 10, 125 for k = 100): the candidates;
3. each proxy that is cheap to score exactly at a few items (``rescore``: EASE, a gather over
   the history) - and, with ``rescore="all"``, every proxy (the RBM's exact dF too) - is
   replaced at the candidates: E = S + a_k (e_k - e~_k); the top-k of E is served.

What differs from scoring every item exactly: an item outside the top-C of S cannot be served
(C is a quality knob: ``benchmarks/recommend.py --quality`` prints the NDCG@10 of both paths; on
ML-100K and ml-latest-small test NDCG@10 moved by at most 0.0002 for C from 20 to 110 at k = 10,
benchmarks/README.md),
the RBM's share keeps its proxy unless ``rescore="all"`` (error at most a_rbm(u) sum_j
|W_ij|^3 / 62 per item), and c(u) is the mean of S over the unseen items (the proxies' means),
so served energies equal the exact path's up to a per-user constant (and the RBM's bound).
The cost is a (B, D + K) x (D + K, I) matmul and a top-C per block, where scoring every item
exactly costs EASE's (B, I) x (I, I) sparse product and the RBM's B x I x H softplus terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.models._candidates import smallest
from recsys_ebm.models.base import mask_block
from recsys_ebm.models.capabilities import ApproximateScorer, EnergyFactors, FactorScorer

__all__ = ["RESCORE", "cascade_candidates", "cascade_top", "supports_cascade"]

#: which proxies the cascade replaces with exact energies at its candidates
RESCORE = ("cheap", "all")
_EXTRA = 20  # default C = k + max(_EXTRA, k // 4)


def cascade_candidates(k: int, n_items: int, n_candidates: int | None = None) -> int:
    """C for a top-``k``: ``n_candidates`` when given, else k + max(20, k // 4); within
    [min(k, I), I]."""
    c = k + max(_EXTRA, k // 4) if n_candidates is None else int(n_candidates)
    return max(min(k, n_items), min(c, n_items))


def supports_cascade(components: list[Any], blender: Any) -> bool:
    """True when the blend is calibrated (fitted temperatures) and every component gives
    energy factors."""
    return (
        blender.norm == "calibrated"
        and blender.betas is not None
        and all(isinstance(m, FactorScorer) for m in components)
    )


def cascade_top(
    components: list[Any],
    blender: Any,
    pop_energy: torch.Tensor,
    user_items: sp.csr_matrix,
    users: np.ndarray | None,
    k: int,
    exclude_seen: bool,
    exclude: np.ndarray | None,
    n_candidates: int | None = None,
    rescore: str = "cheap",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k) blended energies (ascending) and item indices of one block of users (module
    docstring). ``pop_energy`` (I,) serves rows with an empty history."""
    if rescore not in RESCORE:
        raise ValueError(f"rescore: expected one of {RESCORE}, got {rescore!r}")
    dev = pop_energy.device
    n_b, n_items = user_items.shape
    lengths = user_items.getnnz(axis=1)
    coef = blender.user_coefficients(lengths).to(dev)  # (B, K) a_k(u) = w_k(u) beta_k
    main_u, main_v = [], []  # factor blocks of the one big product
    exact_later = []  # (k, factors): proxies re-scored at the candidates
    for j, m in enumerate(components):
        if not bool(coef[:, j].any()):  # weight 0 for every user here: no share in E
            continue
        f: EnergyFactors = m.energy_factors(user_items, users=users)
        exact_at = isinstance(m, ApproximateScorer)  # has energies_at beside its proxy
        redo = not f.exact and (f.rescore or (rescore == "all" and exact_at))
        u, v = _with_bias(f, dev)  # (B, d + 1), (I, d + 1)
        if redo:
            exact_later.append((j, coef[:, j : j + 1] * u, v))
        else:
            main_u.append(coef[:, j : j + 1] * u)
            main_v.append(v)
    s = _product(main_u, main_v, n_b, n_items, dev)  # (B, I) S over the kept proxies/exacts
    proxies = []
    for j, u, v in exact_later:  # their own products: read back at the candidates below
        t = u @ v.T  # (B, I) a_k e~_k
        s += t
        proxies.append((j, t))
    served = torch.as_tensor(lengths > 0, device=dev)  # (B,) empty rows get popularity
    centre = _unseen_mean(s, user_items)  # (B,) c(u): ranking-neutral
    s[~served] = pop_energy
    centre[~served] = 0.0
    mask_block(s, user_items, exclude_seen, exclude)
    c = cascade_candidates(k, n_items, n_candidates)
    val, cand = smallest(s, c)  # (B, C)
    if proxies:  # ascending item order: the exact gathers then walk memory forwards
        cand, order = cand.sort(dim=1)
        val = val.gather(1, order)
        cand_np = cand.cpu().numpy()
        for j, t in proxies:
            exact = torch.as_tensor(components[j].energies_at(user_items, cand_np), device=dev)
            fix = coef[:, j : j + 1] * exact - t.gather(1, cand)  # (B, C) a_k (e_k - e~_k)
            val = val + torch.where(served[:, None], fix, torch.zeros_like(fix))
    top, pos = torch.topk(val, min(k, c), dim=1, largest=False, sorted=True)  # (B, k)
    return top - centre[:, None], cand.gather(1, pos)


def _with_bias(f: EnergyFactors, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, d [+ 1]) and (I, d [+ 1]) float32 factors with the bias as a column of ones x b."""
    u, v = f.user.to(dev, torch.float32), f.item.to(dev, torch.float32)
    if f.bias is None:
        return u, v
    ones = torch.ones(u.shape[0], 1, device=dev)
    return torch.cat([u, ones], dim=1), torch.cat([v, f.bias.to(dev, torch.float32)[:, None]], 1)


def _product(
    us: list[torch.Tensor], vs: list[torch.Tensor], n_b: int, n_items: int, dev: torch.device
) -> torch.Tensor:
    """(B, I) sum_k U_k V_k^T as one matmul of the concatenated factors."""
    if not us:
        return torch.zeros(n_b, n_items, device=dev)
    return torch.cat(us, dim=1) @ torch.cat(vs, dim=1).T


def _unseen_mean(s: torch.Tensor, user_items: sp.csr_matrix) -> torch.Tensor:
    """(B,) mean of each row of (B, I) ``s`` over the row's unseen items (every item when the
    row has seen them all)."""
    n_b, n_items = s.shape
    total = s.sum(dim=1)  # (B,)
    coo = user_items.tocoo()
    rows = torch.as_tensor(coo.row, dtype=torch.long, device=s.device)
    cols = torch.as_tensor(coo.col, dtype=torch.long, device=s.device)
    seen_sum = torch.zeros(n_b, device=s.device).index_add_(0, rows, s[rows, cols])
    n_seen = torch.as_tensor(user_items.getnnz(axis=1), dtype=torch.float32, device=s.device)
    unseen = n_items - n_seen
    return torch.where(unseen > 0, (total - seen_sum) / unseen.clamp(min=1), total / n_items)
