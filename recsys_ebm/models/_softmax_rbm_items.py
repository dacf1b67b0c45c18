"""Item-oriented softmax RBM (``orientation = "item"``): the I-RBM of Georgiev & Nakov,
"A non-IID Framework for Collaborative Filtering with Restricted Boltzmann Machines", ICML 2013
(http://proceedings.mlr.press/v28/georgiev13.html).

The maths is the user-oriented model's (:mod:`recsys_ebm.models._softmax_rbm_math`) with the
roles swapped: each **item** is one training case whose visible layer holds the ratings it got,
one K-way softmax per **user** who rated it. W (U, K, H) and b (U, K) belong to users, c (H,) is
shared; training is the same CD-k loop run on the transposed rating matrix. The exact conditional
of the user-oriented model carries over:

    x_i            = c + sum_{v rated i} W[v, r_vi]                       (H,) per item case
    p(r_ui = k | item i's other ratings) ∝ exp(b_uk) prod_j (1 + sigmoid(x_ij) expm1(W_ukj))

where x_i leaves out u's own rating of i when u rated it at fit time (leave-one-out). The item
cases' ratings (the **context**, training ratings only) are model state, like ALS's item factors:
the test split is never in it, and the history passed at call time still supplies the mask.

A user unseen in training has no visible unit, so their (K, H) weights and (K,) biases are
**folded in**: with every other parameter fixed, they maximise the exact conditional
log-likelihood of the user's passed ratings, sum_i log p(r_ui | x_i), minus an L2 penalty on the
weights scaled like the training's weight decay (Adam, a fixed number of deterministic steps).
That is ALS's fold-in (solve for the new user's parameters, everything else frozen) in this
model's own likelihood.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recsys_ebm.models._softmax_rbm_math import (
    column_positions,
    conditional_logits,
    hidden_input,
    pair_logits,
)

if TYPE_CHECKING:
    from recsys_ebm.models.softmax_rbm import ItemSoftmaxRBM

__all__ = ["fold_in", "item_energies", "item_hidden", "item_pair_probs", "level_prior"]


def item_hidden(model: ItemSoftmaxRBM) -> torch.Tensor:
    """(I, H) hidden input x_i of every item case from the training ratings (the context)."""
    ctx = model.context  # (I, U) CSR, data = level index + 1
    rows, units, levels = model._tensors(ctx)
    return hidden_input(rows, units, levels, ctx.shape[0], model.W, model.c)


def level_prior(model: ItemSoftmaxRBM) -> torch.Tensor:
    """(K,) log of the smoothed global rating-level frequencies of the training ratings: the
    visible biases a folded-in user starts from."""
    n_k = model.W.shape[1]
    counts = np.bincount(model.context.data - 1, minlength=n_k).astype(np.float64)
    return torch.as_tensor(np.log((counts + 1.0) / (counts.sum() + n_k)), dtype=model.W.dtype)


def fold_in(
    model: ItemSoftmaxRBM, x: torch.Tensor, codes: sp.csr_matrix
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (B, K, H) and biases (B, K) for the B rows of ``codes`` (level codes of users
    not seen in training), with the item cases' hidden inputs ``x`` (I, H) fixed."""
    cfg = model.config
    n_b, (n_k, n_h) = codes.shape[0], model.W.shape[1:]
    w = torch.zeros(n_b, n_k, n_h, dtype=model.W.dtype, device=model.W.device)
    bias = level_prior(model).to(model.W.device).expand(n_b, n_k).clone()
    if codes.nnz == 0 or cfg.fold_in_steps == 0:
        return w, bias
    # MAP with the training's own prior: weight decay wd on the mean gradient over the item
    # cases is an L2 of wd * (number of cases) on the summed conditional log-likelihood
    n_cases = int((np.diff(model.context.indptr) > 0).sum())
    l2 = cfg.fold_in_l2 * cfg.weight_decay * n_cases
    rows, items, levels = model._tensors(codes)  # (nnz,) each
    sig = torch.sigmoid(x[items])[:, None, :]  # (nnz, 1, H): p(h_j = 1 | item case)
    w.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.Adam([w, bias], lr=cfg.fold_in_lr)
    with torch.enable_grad():
        for _ in range(cfg.fold_in_steps):
            opt.zero_grad()
            logits = bias[rows] + torch.log1p(sig * torch.expm1(w[rows])).sum(-1)  # (nnz, K)
            loss = F.cross_entropy(logits, levels, reduction="sum")
            loss = loss + 0.5 * l2 * (w**2).sum()
            loss.backward()
            opt.step()
    return w.detach(), bias.detach()


def _user_params(
    model: ItemSoftmaxRBM, x: torch.Tensor, codes: sp.csr_matrix, users: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(B, K, H) weights, (B, K) biases of each history row, and the (B,) training index of
    each row (-1 = folded in from the row's ratings)."""
    n_b = codes.shape[0]
    idx = np.full(n_b, -1, dtype=np.int64)
    if users is not None:
        ok = (users >= 0) & (users < model.context.shape[1])
        idx[ok] = users[ok]
    known = np.flatnonzero(idx >= 0)
    w = torch.empty(n_b, *model.W.shape[1:], dtype=model.W.dtype, device=model.W.device)
    bias = torch.empty(n_b, model.W.shape[1], dtype=model.W.dtype, device=model.W.device)
    if known.size:
        t = torch.as_tensor(idx[known], device=model.W.device)
        w[known], bias[known] = model.W[t], model.b[t]
    rest = np.flatnonzero(idx < 0)
    if rest.size:
        w[rest], bias[rest] = fold_in(model, x, codes[rest])
    return w, bias, idx


def _own_levels(
    model: ItemSoftmaxRBM, idx: np.ndarray, rows: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """(P,) level index each pair's user gave the item in the context, -1 when none (or when
    the user was folded in, so is not in the context)."""
    own = np.full(rows.size, -1, dtype=np.int64)
    known = idx[rows] >= 0
    if known.any():
        by_user = model.context_by_user  # (U, I) CSR of level codes
        own[known] = np.asarray(by_user[idx[rows[known]], items[known]]).ravel() - 1
    return own


def item_pair_probs(
    model: ItemSoftmaxRBM,
    codes: sp.csr_matrix,
    rows: np.ndarray,
    cols: np.ndarray,
    users: np.ndarray | None,
) -> np.ndarray:
    """(P, K) p(r_{row, col} = k | item col's training ratings by other users)."""
    dev = model.device
    with torch.no_grad():
        x = item_hidden(model)  # (I, H)
        w, bias, idx = _user_params(model, x, codes, users)
        own = _own_levels(model, idx, rows, cols)
        logits = pair_logits(
            x,
            w,
            bias,
            torch.as_tensor(cols, device=dev),  # the case: item
            torch.as_tensor(rows, device=dev),  # the unit: the row's user
            torch.as_tensor(own, device=dev),
        )
        return torch.softmax(logits, dim=1).cpu().numpy()


def item_energies(
    model: ItemSoftmaxRBM, codes: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
) -> torch.Tensor:
    """(B, I') -E[r_ui | item i's training ratings by other users] for a block of users."""
    dev = model.device
    levels = torch.as_tensor(model.rating_levels, dtype=model.W.dtype, device=dev)
    with torch.no_grad():
        x = item_hidden(model)  # (I, H)
        w, bias, idx = _user_params(model, x, codes, users)
        xi = x if items is None else x[torch.as_tensor(items, device=dev)]  # (I', H)
        # conditional_logits treats its first argument as cases and W as units: (I', B, K)
        logits = conditional_logits(xi, w, bias).permute(1, 0, 2).contiguous()  # (B, I', K)
        known = np.flatnonzero(idx >= 0)
        if known.size:  # items the user rated at fit time: leave their own rating out
            sub = model.context_by_user[idx[known]].tocoo()
            keep, pos = column_positions(sub.col, items, model.n_items)
            r, q = known[sub.row[keep]], sub.col[keep].astype(np.int64)
            own = sub.data[keep].astype(np.int64) - 1
            if r.size:
                t = [torch.as_tensor(a, device=dev) for a in (q, r, own)]
                logits[t[1], torch.as_tensor(pos, device=dev)] = pair_logits(
                    x, w, bias, t[0], t[1], t[2]
                )
        return -(torch.softmax(logits, dim=2) @ levels)  # (B, I')
