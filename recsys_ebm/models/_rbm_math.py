"""Bernoulli RBM maths shared by training, ranking and the exact diagnostics.

Energy (Smolensky 1986; Hinton 2002):  E(v, h) = -b.v - c.h - v^T W h,  v in {0,1}^I, h in {0,1}^H.
Free energy:  F(v) = -b.v - sum_j softplus(c_j + (v W)_j),  p(v) = exp(-F(v)) / Z.
Conditionals (bipartite, so block Gibbs sampling is exact per layer):
    p(h_j = 1 | v) = sigmoid(c_j + (v W)_j),   p(v_i = 1 | h) = sigmoid(b_i + (W h)_i).
Conditional of one visible unit given the rest (what the recommender ranks by):
    log p(v_i=1 | v_-i) / p(v_i=0 | v_-i) = -(F(v with i on) - F(v with i off)) = -dF_i.
Dropout RBM (Srivastava et al. 2014, sec. 8): each training row draws a mask r ~ Bernoulli(q)^H,
kept through its Gibbs chain, p(h_j = 1 | v, r) = r_j sigmoid(c_j + (v W)_j) (``keep`` below).
The thinned RBMs' geometric mean, p(v) ∝ exp(-E_r[F_r(v)]), has the free energy
    E_r[F_r(v)] = -b.v - q sum_j softplus(c_j + (v W)_j) = q F(v; W, b / q, c),
so one plain RBM with visible bias b / q serves it (its energies are the mean's over q).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "dropout_mask",
    "free_energy",
    "free_energy_delta",
    "free_energy_delta_at",
    "free_energy_delta_approx",
    "free_energy_delta_lower",
    "gibbs_chain",
    "gibbs_vhv",
    "hidden_prob",
    "visible_prob",
]


def hidden_prob(v: torch.Tensor, W: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B, H) p(h = 1 | v) for v (B, I), W (I, H), c (H,)."""
    return torch.addmm(c, v, W).sigmoid_()  # the bias added inside the product: one pass less


def visible_prob(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, I) p(v = 1 | h) for h (B, H)."""
    return torch.addmm(b, h, W.T).sigmoid_()


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


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """0/1 samples of ``p``: uniform draws below ``p`` (P(u < p) = p), a third of the time of
    ``torch.bernoulli`` on CPU (measured: 0.21 vs 0.68 ms for a 32 x 1682 batch); a data-parallel
    rank's generator (:class:`~recsys_ebm.models.distributed.GlobalBatchGenerator`) draws the
    uniforms of the global batch and keeps its rows."""
    draw = getattr(generator, "uniform_rows", None)
    if draw is not None:
        u = draw(p.shape, p.dtype, p.device)
    else:
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
    return (u < p).to(p.dtype)


def dropout_mask(
    rows: int, n_hidden: int, keep: float, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """(rows, H) 0/1 mask of the hidden units each row keeps, P(1) = ``keep`` (dropout RBM)."""
    return _bernoulli(
        torch.full((rows, n_hidden), keep, dtype=like.dtype, device=like.device), generator
    )


def gibbs_chain(
    v: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    k: int,
    generator: torch.Generator | None,
    ph: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """As :func:`gibbs_vhv`, also returning p(v | h_1) of the first step (the reconstruction,
    None when k = 0); ``ph`` = p(h | v) when the caller already has it (already masked, with
    ``keep``); ``keep`` (B, H): each row's dropout mask, applied to every p(h | v) of its chain."""
    if ph is None:
        ph = hidden_prob(v, W, c)
        if keep is not None:
            ph.mul_(keep)
    recon = None
    for step in range(k):
        h = _bernoulli(ph, generator)
        pv = visible_prob(h, W, b)
        if step == 0:
            recon = pv
        v = _bernoulli(pv, generator)
        ph = hidden_prob(v, W, c)
        if keep is not None:
            ph.mul_(keep)
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


def free_energy_delta_lower(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, I) lower bound of dF_i from the hidden input x = c + v W (B, H): one matmul.

    softplus is convex with softplus'' = sigmoid (1 - sigmoid) <= 1/4, so for any w
        sigmoid(x) w <= softplus(x + w) - softplus(x) <= sigmoid(x) w + w^2 / 8
    (first-order Taylor bound and the curvature bound). Summed over hidden units:
        -b_i - sigmoid(x) . W_i - |W_i|^2 / 8  <=  dF_i  <=  -b_i - sigmoid(x) . W_i
    for an item that is off in v; for one that is on, the same argument at x - W_i gives
    dF_i >= -b_i - sigmoid(x) . W_i, so the left side bounds every item.
    """
    q = W.square().sum(dim=1) / 8  # (I,) curvature slack
    return torch.addmm(-(b + q), torch.sigmoid(x), W.T, alpha=-1.0)  # (B, I)


def free_energy_delta_at(
    v: torch.Tensor | None,
    x: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    items: torch.Tensor,
    rows: torch.Tensor | None = None,
    max_block: int = 2**18,
) -> torch.Tensor:
    """(B, C) exact dF at per-row item indices ``items`` (B, C) (as :func:`free_energy_delta`).

    ``x`` = c + v W and ``v`` are indexed by ``rows`` (B,) when given (else all rows), without
    copying them. Rows are processed in blocks whose (rows, C, H) intermediate holds
    at most ``max_block`` floats (1 MiB by default: it stays in cache; the measured speed-up
    over 32 MiB blocks is about 2x on CPU). Items on in v use x - W_i; ``v=None`` says that
    no requested item is on (or that the caller discards those: a masked history).
    """
    n_b, n_c = items.shape
    n_h = x.shape[1]
    if rows is not None:
        x = x[rows]  # (B, H); v stays whole: only its (B, C) entries are read below
    out = torch.empty(n_b, n_c, dtype=x.dtype, device=x.device)
    stable = bool(W.abs().max() < 30.0)  # expm1 finite and accurate (one check, no per-block sync)
    m = torch.expm1(W) if stable else None  # (I, H)
    s_x = torch.sigmoid(x)  # (B, H)
    step = max(1, max_block // max(1, n_c * n_h))
    for r in range(0, n_b, step):
        it = items[r : r + step]  # (b, C)
        if m is not None:
            g = m[it].mul_(s_x[r : r + step, None, :])  # (b, C, H), one buffer
            out[r : r + step] = -b[it] - g.log1p_().sum(dim=2)
        else:
            xr = x[r : r + step, None, :]  # (b, 1, H)
            g = F.softplus(xr + W[it]) - F.softplus(xr)  # (b, C, H)
            out[r : r + step] = -b[it] - g.sum(dim=2)
    if v is None:
        return out
    v_at = v.gather(1, items) if rows is None else v[rows[:, None], items]  # (B, C)
    on = v_at.nonzero(as_tuple=False)  # (nnz, 2): (row, position in items)
    if on.numel():
        r_on, pos = on[:, 0], on[:, 1]
        it_on = items[r_on, pos]
        x_on, w_on = x[r_on], W[it_on]  # (nnz, H)
        out[r_on, pos] = -b[it_on] - (F.softplus(x_on) - F.softplus(x_on - w_on)).sum(dim=1)
    return out


def free_energy_delta_approx(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, I) second-order Taylor approximation of dF_i (items off in v): one matmul.

    With s = sigmoid(x), softplus(x + w) - softplus(x) = s w + s (1 - s) w^2 / 2 + R and
    |R| <= |w|^3 / (36 sqrt 3) (|softplus'''| <= 1 / (6 sqrt 3)), so the error of
        dF_i ~ -b_i - s . W_i - (s (1 - s) / 2) . W_i^2
    is at most sum_j |W_ij|^3 / 62. The two products share one (B, 2H) x (2H, I) matmul.
    """
    s = torch.sigmoid(x)  # (B, H)
    a = torch.cat([s, s * (1 - s) / 2], dim=1)  # (B, 2H)
    return torch.addmm(-b, a, torch.cat([W, W.square()], dim=1).T, alpha=-1.0)  # (B, I)
