"""Softmax-visible RBM maths for ratings (Salakhutdinov, Mnih & Hinton, ICML 2007, sec. 2).

Each user u is one RBM whose visible layer holds only the items u rated; item i's unit is a
K-way softmax V_i (one-hot over the rating levels). Weights W (I, K, H), visible biases b (I, K)
and hidden biases c (H,) are shared by all users; unrated items are simply absent.

    E(V, h) = -sum_{i rated} sum_k W_ik . h V_i^k - sum_{i rated} sum_k b_i^k V_i^k - c . h
    F(V)    = -sum_{i rated} b_i^{r_i} - sum_j softplus(x_j),   x = c + sum_{i rated} W_{i r_i}
    p(h_j = 1 | V)   = sigmoid(x_j)                                                 (paper eq. 2)
    p(V_i^k = 1 | h) = softmax_k(b_i^k + W_ik . h)                                  (paper eq. 1)
    p(r_q = k | V)   ∝ exp(b_q^k) prod_j (1 + exp(x_j + W_qkj))                     (paper eq. 5)

The last line is exact for one unobserved item q: adding q with rating k to V adds W_qk to x, and
h is summed out in closed form. Since exp(b) prod_j (1 + e^(x_j + w_j)) / prod_j (1 + e^(x_j))
= exp(b) prod_j (1 + sigmoid(x_j) expm1(w_j)), each (user, item, level) costs one multiply and one
log1p per hidden unit.

A minibatch of B users is kept sparse as three aligned (nnz,) int64 vectors: ``rows`` (user in
the batch), ``items`` and ``levels`` (index 0..K-1 of the observed rating). Nothing is densified
to (B, I, K).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "column_positions",
    "conditional_logits",
    "free_energy",
    "gibbs_chain",
    "hidden_input",
    "pair_logits",
    "sample_levels",
    "visible_logits",
]


def hidden_input(
    rows: torch.Tensor,
    items: torch.Tensor,
    levels: torch.Tensor,
    n_rows: int,
    W: torch.Tensor,
    c: torch.Tensor,
) -> torch.Tensor:
    """(B, H) x = c + sum over each user's observed (item, level) of W[item, level]."""
    x = c.expand(n_rows, c.shape[0]).clone()  # (B, H)
    if rows.numel():
        x.index_add_(0, rows, W[items, levels])  # W[items, levels]: (nnz, H)
    return x


def free_energy(
    rows: torch.Tensor,
    items: torch.Tensor,
    levels: torch.Tensor,
    n_rows: int,
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
) -> torch.Tensor:
    """(B,) F(V) = -sum_{i rated} b_i^{r_i} - sum_j softplus(x_j)."""
    x = hidden_input(rows, items, levels, n_rows, W, c)  # (B, H)
    vb = torch.zeros(n_rows, dtype=W.dtype, device=W.device).index_add_(0, rows, b[items, levels])
    return -vb - F.softplus(x).sum(dim=1)


def visible_logits(
    rows: torch.Tensor, items: torch.Tensor, h: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """(nnz, K) b_i^k + W_ik . h_row for each observed (row, item): softmax gives p(V_i | h)."""
    # (nnz, K, H) @ (nnz, H, 1) -> (nnz, K); bounded by the minibatch's ratings
    return b[items] + torch.bmm(W[items], h[rows].unsqueeze(2)).squeeze(2)


def sample_levels(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(nnz,) one draw per row of softmax(logits) (nnz, K), by inverting the CDF."""
    cdf = torch.softmax(logits, dim=1).cumsum(dim=1)  # (nnz, K)
    draw = getattr(generator, "uniform_entries", None)  # a data-parallel rank: global draws
    if draw is not None:
        u = draw(cdf.shape[0], cdf.dtype, cdf.device)  # (nnz, 1)
    else:
        u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=cdf.dtype, device=cdf.device)
    return (cdf < u).sum(dim=1).clamp_(max=cdf.shape[1] - 1)


def gibbs_chain(
    rows: torch.Tensor,
    items: torch.Tensor,
    levels: torch.Tensor,
    n_rows: int,
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    k: int,
    generator: torch.Generator | None,
    ph: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """k steps of block Gibbs sampling V -> h -> V over each user's observed items only.

    All hidden units are sampled at once given V, then every observed softmax at once given h
    (the bipartite graph makes each layer's units conditionally independent).

    Returns:
        (levels after k steps (nnz,), p(h | V_k) (B, H), p(V | h_1) of the first step (nnz, K) -
        the reconstruction - or None when k = 0). k = 0 returns the input levels unchanged.
    """
    if ph is None:
        ph = torch.sigmoid(hidden_input(rows, items, levels, n_rows, W, c))
    recon = None
    for step in range(k):
        # a data-parallel rank's generator draws for the global batch (models/distributed.py)
        draw = getattr(generator, "bernoulli", None)
        h = draw(ph) if draw is not None else torch.bernoulli(ph, generator=generator)  # (B, H)
        logits = visible_logits(rows, items, h, W, b)  # (nnz, K)
        if step == 0:
            recon = torch.softmax(logits, dim=1)
        levels = sample_levels(logits, generator)
        ph = torch.sigmoid(hidden_input(rows, items, levels, n_rows, W, c))
    return levels, ph, recon


def _log_ratio(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_j [softplus(x_j + w_j) - softplus(x_j)] for x (..., 1, 1, H) and w (..., C, K, H)."""
    if float(w.abs().max()) < 30.0:  # expm1 stays finite and accurate
        return (torch.sigmoid(x) * torch.expm1(w)).log1p_().sum(dim=-1)
    return (F.softplus(x + w) - F.softplus(x)).sum(dim=-1)


def conditional_logits(
    x: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    items: torch.Tensor | None = None,
    max_block: int = 2**23,
) -> torch.Tensor:
    """(B, I', K) unnormalised log p(r_i = k | V) for every item (or ``items``) of each user.

    ``x`` (B, H) is the hidden input of each user's observed ratings. For an item the user has
    already rated, the caller must recompute with that item's own term removed (see
    :func:`pair_logits`). Chunked over items so that the (B, C, K, H) intermediate holds at most
    ``max_block`` floats.
    """
    idx = torch.arange(W.shape[0], device=W.device) if items is None else items
    n_b, n_h = x.shape
    n_k = W.shape[1]
    out = torch.empty(n_b, len(idx), n_k, dtype=W.dtype, device=W.device)
    xb = x[:, None, None, :]  # (B, 1, 1, H)
    chunk = max(1, max_block // max(1, n_b * n_k * n_h))
    for s in range(0, len(idx), chunk):
        sel = idx[s : s + chunk]
        out[:, s : s + len(sel)] = b[sel] + _log_ratio(xb, W[sel][None])  # (B, C, K)
    return out


def pair_logits(
    x: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    own_levels: torch.Tensor,
    max_block: int = 2**23,
) -> torch.Tensor:
    """(P, K) unnormalised log p(r_col = k | V_row without col) for (row, col) pairs.

    ``own_levels`` (P,) is the level the user gave ``col`` in the history, or -1 when unrated; a
    rated item's own contribution W[col, level] is removed from x first, so the result is the
    exact leave-one-out conditional p(r_q | V_-q).
    """
    n_h, n_k = x.shape[1], W.shape[1]
    out = torch.empty(len(rows), n_k, dtype=W.dtype, device=W.device)
    chunk = max(1, max_block // max(1, n_k * n_h))
    for s in range(0, len(rows), chunk):
        r, q, lv = rows[s : s + chunk], cols[s : s + chunk], own_levels[s : s + chunk]
        xq = x[r]  # (C, H)
        rated = lv >= 0
        if bool(rated.any()):
            xq = xq.clone()
            xq[rated] -= W[q[rated], lv[rated]]
        out[s : s + len(r)] = b[q] + _log_ratio(xq[:, None, :], W[q])  # (C, K)
    return out


def column_positions(
    q: np.ndarray, items: np.ndarray | None, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where items ``q`` (P,) sit in a block scored over ``items`` (all ``n_items`` when None).

    Returns (keep (P,) bool: q is scored, pos (kept,) int64: its column in the block); used to
    overwrite rated pairs with their leave-one-out conditional.
    """
    q = np.asarray(q, dtype=np.int64)
    if items is None:
        return np.ones(q.size, dtype=bool), q
    where = np.full(n_items, -1, dtype=np.int64)
    where[np.asarray(items, dtype=np.int64)] = np.arange(len(items))
    keep = where[q] >= 0
    return keep, where[q[keep]]
