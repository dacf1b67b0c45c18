"""Initial parameters and the CD-k gradient of the softmax RBMs
(:mod:`recsys_ebm.models.softmax_rbm`).

Salakhutdinov, Mnih & Hinton, "Restricted Boltzmann Machines for Collaborative Filtering",
ICML 2007, eq. 6: d log p(V) / dW_ij^k = <V_i^k h_j>_data - <V_i^k h_j>_T, where the model term
is estimated by T steps of Gibbs sampling started at the data (CD-T) or at persistent fantasy
levels (PCD, Tieleman 2008). Initialisation follows Hinton, "A Practical Guide to Training
RBMs", 2010, sec. 8. Shapes use V for the visible units (items, or users in the item
orientation), K rating levels and H hidden units; a minibatch is the sparse (nnz,) form of
:mod:`recsys_ebm.models._softmax_rbm_math`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.models._softmax_rbm_math import gibbs_chain, hidden_input

__all__ = ["cd_gradients", "initial_params"]


def initial_params(
    n_units: int,
    n_levels: int,
    n_hidden: int,
    init_std: float,
    generator: torch.Generator,
    codes: sp.csr_matrix,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W, b, c) on the CPU: W (V, K, H) ~ N(0, init_std), c (H,) = 0, b_i^k (V, K) = log of
    unit i's smoothed level frequencies in the level codes ``codes`` (cases x units)
    (visible biases at the log base rates: Hinton 2010, sec. 8)."""
    n_k = n_levels
    W = torch.randn(n_units, n_k, n_hidden, generator=generator) * init_std
    counts = np.zeros((n_units, n_k))
    np.add.at(counts, (codes.indices, codes.data - 1), 1.0)
    prior = (counts.sum(0) + 1.0) / (counts.sum() + n_k)  # (K,) global level frequencies
    freq = (counts + n_k * prior) / (counts.sum(1, keepdims=True) + n_k)  # n_k pseudo-counts
    b = torch.as_tensor(np.log(freq), dtype=torch.float32)
    c = torch.zeros(n_hidden)
    return W, b, c


def cd_gradients(
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    rows: torch.Tensor,
    items: torch.Tensor,
    levels: torch.Tensor,
    n_rows: int,
    k: int,
    generator: torch.Generator | None,
    chain: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """CD-k (or PCD-k from ``chain`` levels) estimate of d log p(V) / d theta (paper eq. 6).

    Returns (gradients averaged over the ``n_rows`` users, the chain's levels after k steps,
    the first reconstruction p(V | h) (nnz, K) or None).
    """
    n_i, n_k, n_h = W.shape
    ph0 = torch.sigmoid(hidden_input(rows, items, levels, n_rows, W, c))  # (B, H)
    start = levels if chain is None else chain
    lvk, phk, recon = gibbs_chain(
        rows, items, start, n_rows, W, b, c, k, generator, ph0 if chain is None else None
    )
    f0, fk = items * n_k + levels, items * n_k + lvk  # flat (item, level) index, (nnz,)
    # <V_i^k h_j>_data - <V_i^k h_j>_model, accumulated separately so CD-0 is exactly zero
    size, kw = n_i * n_k, {"dtype": W.dtype, "device": W.device}
    pos = torch.zeros(size, n_h, **kw).index_add_(0, f0, ph0[rows])  # (I*K, H)
    neg = torch.zeros(size, n_h, **kw).index_add_(0, fk, phk[rows])
    grads = {
        "W": ((pos - neg) / n_rows).view(n_i, n_k, n_h),
        "b": (torch.bincount(f0, minlength=size) - torch.bincount(fk, minlength=size))
        .to(W.dtype)
        .div(n_rows)
        .view(n_i, n_k),
        "c": (ph0.sum(0) - phk.sum(0)) / n_rows,
    }
    return grads, lvk, recon
