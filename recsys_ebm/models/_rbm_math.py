"""Bernoulli RBM maths shared by training, ranking and the exact diagnostics.

Energy (Smolensky 1986; Hinton 2002):  E(v, h) = -b.v - c.h - v^T W h,  v in {0,1}^I, h in {0,1}^H.
Free energy:  F(v) = -b.v - sum_j softplus(c_j + (v W)_j),  p(v) = exp(-F(v)) / Z.
Conditionals (bipartite, so block Gibbs sampling is exact per layer):
    p(h_j = 1 | v) = sigmoid(c_j + (v W)_j),   p(v_i = 1 | h) = sigmoid(b_i + (W h)_i).
Conditional of one visible unit given the rest (what the recommender ranks by):
    log p(v_i=1 | v_-i) / p(v_i=0 | v_-i) = -(F(v with i on) - F(v with i off)) = -dF_i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "free_energy",
    "free_energy_delta",
    "gibbs_chain",
    "gibbs_vhv",
    "hidden_prob",
    "visible_prob",
]


def hidden_prob(v: torch.Tensor, W: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B, H) p(h = 1 | v) for v (B, I), W (I, H), c (H,)."""
    return torch.sigmoid(v @ W + c)


def visible_prob(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, I) p(v = 1 | h) for h (B, H)."""
    return torch.sigmoid(h @ W.T + b)


def free_energy(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B,) F(v) = -b.v - sum_j softplus(c_j + (v W)_j)."""
    return -(v @ b) - F.softplus(v @ W + c).sum(dim=1)


def gibbs_vhv(
    v: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    k: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k steps of block Gibbs sampling v -> h -> v; returns (v_k, p(h | v_k)).

    k = 0 returns the input unchanged (so CD-0 has exactly zero gradient).
    """
    v_k, ph, _ = gibbs_chain(v, W, b, c, k, generator)
    return v_k, ph


def gibbs_chain(
    v: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    k: int,
    generator: torch.Generator | None,
    ph: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """As :func:`gibbs_vhv`, also returning p(v | h_1) of the first step (the reconstruction,
    None when k = 0); ``ph`` = p(h | v) when the caller already has it."""
    ph = hidden_prob(v, W, c) if ph is None else ph
    recon = None
    for step in range(k):
        h = torch.bernoulli(ph, generator=generator)
        pv = visible_prob(h, W, b)
        if step == 0:
            recon = pv
        v = torch.bernoulli(pv, generator=generator)
        ph = hidden_prob(v, W, c)
    return v, ph, recon


def free_energy_delta(
    v: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    items: torch.Tensor | None = None,
    max_block: int = 2**23,
) -> torch.Tensor:
    """(B, I') exact dF_i = F(v, v_i = 1) - F(v, v_i = 0) for every item (or ``items``).

    For an item that is off in v, switching it on adds W_i to the hidden input x = c + v W:
        dF_i = -b_i - sum_j [softplus(x_j + W_ij) - softplus(x_j)]
             = -b_i - sum_j log1p(sigmoid(x_j) * expm1(W_ij)),
    since (1 + e^(x+w)) / (1 + e^x) = 1 + sigmoid(x) (e^w - 1): one multiply and one log1p per
    (user, item, hidden) instead of two softplus. Items that are on in v are recomputed exactly
    from x - W_i (sparse: only the history's entries). Chunked over items so the
    (B, chunk, H) intermediate holds at most ``max_block`` floats.
    """
    x = v @ W + c  # (B, H)
    idx = torch.arange(W.shape[0], device=W.device) if items is None else items
    n_b, n_h = x.shape
    out = torch.empty(n_b, len(idx), dtype=W.dtype, device=W.device)
    s_x = torch.sigmoid(x)[:, None, :]  # (B, 1, H)
    chunk = max(1, max_block // max(1, n_b * n_h))
    for s in range(0, len(idx), chunk):
        sel = idx[s : s + chunk]
        w = W[sel]  # (C, H)
        if float(w.abs().max()) < 30.0:  # expm1 stays finite and accurate
            g = s_x * torch.expm1(w)[None, :, :]  # (B, C, H)
            out[:, s : s + len(sel)] = -b[sel] - g.log1p_().sum(dim=2)
        else:
            g = F.softplus(x[:, None, :] + w[None, :, :]) - F.softplus(x)[:, None, :]
            out[:, s : s + len(sel)] = -b[sel] - g.sum(dim=2)
    # items already on in v: x_off = x - W_i, so dF_i = -b_i - sum_j [sp(x_j) - sp(x_j - W_ij)]
    on = v[:, idx].nonzero(as_tuple=False)  # (nnz, 2): (row, position in idx)
    if on.numel():
        rows, pos = on[:, 0], on[:, 1]
        w_on = W[idx[pos]]  # (nnz, H)
        x_on = x[rows]  # (nnz, H)
        out[rows, pos] = -b[idx[pos]] - (F.softplus(x_on) - F.softplus(x_on - w_on)).sum(dim=1)
    return out
