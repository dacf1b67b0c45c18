"""User-oriented softmax RBM (``orientation = "user"``, the paper's model): ranking energies.

Salakhutdinov, Mnih & Hinton, ICML 2007, sec. 2.2. A user is one training case whose visible
layer holds their ratings; every item's rating distribution given the user's ratings V is

    p(r_q = k | V) ∝ exp(b_q^k) prod_j (1 + sigmoid(x_j) expm1(W_qkj)),  x = c + sum W_{i r_i}

(:mod:`recsys_ebm.models._softmax_rbm_math`). An item the user rated is scored by the exact
leave-one-out conditional instead (x without its own rating), so its energy does not simply
echo the rating passed in. energy(u, q) = -E[r_uq].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.models._softmax_rbm_math import column_positions, conditional_logits, pair_logits

if TYPE_CHECKING:
    from recsys_ebm.models.softmax_rbm import SoftmaxRBM, UserSoftmaxRBM

__all__ = ["pair_probs", "user_energies"]


def pair_probs(
    model: SoftmaxRBM, codes: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """(P, K) p(r_col = k | the row's other ratings) for level-code histories (cases x units).

    The user orientation's rating distribution, and both orientations' training monitor (a
    case's held-out ratings given its training ratings).
    """
    with torch.no_grad():
        x = model._hidden_x(codes)  # (B, H)
        own = np.asarray(codes[rows, cols]).ravel().astype(np.int64) - 1  # -1 = unrated
        logits = pair_logits(
            x,
            model.W,
            model.b,
            torch.as_tensor(rows, device=model.device),
            torch.as_tensor(cols, device=model.device),
            torch.as_tensor(own, device=model.device),
        )
        return torch.softmax(logits, dim=1).cpu().numpy()


def user_energies(
    model: UserSoftmaxRBM, codes: sp.csr_matrix, items: np.ndarray | None
) -> torch.Tensor:
    """(B, I') -E[rating] of each (history row, item) for a block of level-code histories
    (B, I); I' = all items, or ``items`` when given."""
    W, b, device = model.W, model.b, model.device
    levels = torch.as_tensor(model.rating_levels, dtype=W.dtype, device=device)
    with torch.no_grad():
        x = model._hidden_x(codes)  # (B, H)
        idx = None if items is None else torch.as_tensor(items, device=device)
        logits = conditional_logits(x, W, b, idx)  # (B, I', K)
        if codes.nnz:  # rated items: the exact leave-one-out conditional instead
            coo = codes.tocoo()
            keep, pos = column_positions(coo.col, items, model.n_items)
            r, q, own = coo.row[keep], coo.col[keep], coo.data[keep] - 1
            if len(r):
                t = [torch.as_tensor(a.astype(np.int64), device=device) for a in (r, q)]
                lo = torch.as_tensor(own.astype(np.int64), device=device)
                logits[t[0], torch.as_tensor(pos, device=device)] = pair_logits(
                    x, W, b, t[0], t[1], lo
                )
        return -(torch.softmax(logits, dim=2) @ levels)  # (B, I'): -E[rating]
