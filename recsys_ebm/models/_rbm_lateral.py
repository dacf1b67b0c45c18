"""Lateral item-item couplings of the binary RBM: the semi-restricted RBM (``lateral="ease"``).

A semi-restricted Boltzmann machine (Osindero & Hinton 2008, "Modeling image patches with a
directed hierarchy of Markov random fields") adds visible-visible couplings L (zero diagonal) to
the RBM's energy, scaled here by a learned a:

    E(v, h) = -b.v - c.h - v.W h - (a/2) v.L v,
    F(v)    = -b.v - sum_j softplus(c_j + (v W)_j) - (a/2) v.L v.

The hidden units stay conditionally independent given v, so F stays exact, and the free-energy
difference that ranks item i (item i switched on given the rest of v; L_ii = 0) gains one
linear term:

    dF_i(v) = dF_i^RBM(v) - a ((L + L^T)/2 v)_i.

L is fixed at EASE's item-item matrix B = -P D^-1 (Steck 2019, "Embarrassingly shallow
autoencoders"), P = (X^T X + l2 I)^-1, D = diag(P): the conditional mean of a Gaussian Markov
random field (Steck, "Markov random fields for collaborative filtering", NeurIPS 2019). B is not
symmetric. Ranking and the conditional objective use the term as -a (v B)_i, EASE's own score,
so that with W = 0 and b = 0 the ranking is EASE's: the model is then the conditional
energy-based model p(i | v) = softmax_{j not in v}(-dF_j(v)) (a dependency network, Heckerman
et al. 2000), which is what ``objective="conditional"`` trains; its joint F is the
semi-restricted RBM's with L's symmetric part (exact for a symmetric L, as the tests check).
The hidden units, trained by the conditional objective, model what the pairwise term misses.

``lateral="dlae"`` fixes L at the denoising linear autoencoder's B instead (DLAE; Steck 2020,
"Autoencoders that don't overfit towards the identity"): EASE's closed form trained under input
dropout p = ``holdout_fraction``, the squared-loss solution of the very task the conditional
objective trains on (predict a random held-out part of a row from the rest). Dropout replaces
EASE's zero-diagonal constraint by an L2 penalty that grows with an item's popularity.

Cross-fitting (``lateral_crossfit``): B fitted on every training row has seen each row's
held-out targets (EASE reconstructs X from X; a rare item's couplings are mostly its few users'
own co-occurrences), so on training rows the term is over-confident and the conditional
objective would train a, b and W against a leaked signal that validation rows never show. With
cross-fitting the users are split in two folds and a row's term during training comes from the
B fitted on the other fold alone (L2 scaled by the fold's share of users, so that l2 / |users|
is unchanged), as in cross-fitted "double" machine learning (Chernozhukov et al. 2018); the
served term is the B of all training rows.
Contrastive divergence would need Gibbs steps through L for the visibles: the lateral option
is refused with CD and the hybrid objective (RBMConfig.validate).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["CrossFit", "binary_rows", "ease_couplings", "fit_scale", "lateral_input"]


def binary_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """``m``'s non-zero pattern as :meth:`RBM.visible` reads a history (duplicates summed, then
    1 where > 0): returned as is when canonical with positive entries (``csr_to_torch`` writes
    ones for them), else as a float32 0/1 copy."""
    if m.has_canonical_format and not bool((m.data <= 0).any()):
        return m
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.data = (m.data > 0).astype(np.float32)
    m.eliminate_zeros()
    return m


def ease_couplings(
    train: sp.csr_matrix, l2: float, device: torch.device, dropout: float = 0.0
) -> torch.Tensor:
    """(I, I) item-item couplings of the binarised ``train`` (zero diagonal), with L2 ``l2``.

    ``dropout`` 0: EASE's B = -P D^-1, P = (G + l2 I)^-1, G = X^T X
    (:class:`~recsys_ebm.models.ease.EASE`'s own solve).
    ``dropout`` p > 0: the denoising linear autoencoder (DLAE; Steck 2020, "Autoencoders that
    don't overfit towards the identity", NeurIPS): the closed-form minimiser of the expected
    squared error of reconstructing X from X with each entry dropped with probability p,
    B = (G + Lambda)^-1 G with Lambda = l2 I + p / (1 - p) diag(G), its diagonal zeroed
    (:meth:`EASE._solve <recsys_ebm.models.ease.EASE._solve>`).
    With p = ``holdout_fraction`` it solves, under a Gaussian likelihood, the same task as the
    conditional objective: predict a random held-out part of each row from the rest.
    """
    from recsys_ebm.models.ease import EASE

    x = binary_rows(train).astype(np.float32, copy=True)
    x.data[:] = 1.0
    gram = EASE._gram(x, device)  # (I, I)
    return EASE._solve(gram, float(l2), inplace=True, dropout=dropout).contiguous()


def lateral_input(v: torch.Tensor | sp.csr_matrix, L: torch.Tensor) -> torch.Tensor:
    """(B, I) v L for 0/1 histories v, dense (B, I) or CSR rows, by a sparse product (O(nnz I);
    a sparse product must stay outside bf16 autocast on CUDA)."""
    if isinstance(v, torch.Tensor):
        sv = v.to_sparse()
    else:
        from recsys_ebm.models.base import csr_to_torch

        sv = csr_to_torch(binary_rows(v), L.device)
    with torch.autocast(L.device.type, enabled=False):
        return torch.sparse.mm(sv, L)  # (B, I)


class CrossFit:
    """Two-fold cross-fitted couplings for training (module docstring): ``fold`` (U,) 0/1 per
    training row, drawn from ``generator``; ``couplings[k]`` (I, I) = EASE's B fitted on the
    rows not in fold k. With a fold empty (tiny data), both are ``full``."""

    def __init__(
        self,
        train: sp.csr_matrix,
        l2: float,
        full: torch.Tensor,
        generator: torch.Generator,
        dropout: float = 0.0,
    ) -> None:
        n = train.shape[0]
        self.fold = (torch.rand(n, generator=generator) < 0.5).numpy()  # (U,) bool
        self.couplings: list[torch.Tensor] = []
        for k in (False, True):
            other = np.flatnonzero(self.fold != k)
            if other.size in (0, n):
                self.couplings = [full, full]
                break
            self.couplings.append(
                ease_couplings(train[other], l2 * other.size / n, full.device, dropout)
            )

    def input(self, rows: np.ndarray, v_in: torch.Tensor) -> torch.Tensor:
        """(B, I) v_in L_fold(row) for the (B,) training ``rows`` and their (B, I) inputs."""
        out = torch.empty_like(v_in)
        f = torch.as_tensor(self.fold[rows], device=v_in.device)  # (B,)
        for k, L in enumerate(self.couplings):
            sel = f == bool(k)
            if bool(sel.any()):
                out[sel] = lateral_input(v_in[sel], L)
        return out


def fit_scale(
    train: sp.csr_matrix,
    L: torch.Tensor,
    holdout_fraction: float,
    generator: torch.Generator,
    n_rows: int = 1024,
    crossfit: CrossFit | None = None,
) -> float:
    """The starting a: the maximiser of the conditional log-likelihood of held-out items under
    softmax(a (v_in L)) alone (W = 0, b = 0: EASE's ranking as a softmax), on up to ``n_rows``
    training rows, by golden-section search over log a in [-3, 6] (the likelihood is concave
    in a: a log-sum-exp of terms linear in a); with ``crossfit``, each row's term is its
    cross-fitted one."""
    m = binary_rows(train)
    n = m.shape[0]
    idx = np.sort(torch.randperm(n, generator=generator)[: min(n, n_rows)].numpy())
    v = torch.from_numpy((m[idx].toarray() > 0).astype(np.float32)).to(L.device)  # (B, I)
    u = torch.rand(v.shape, generator=generator).to(L.device)
    target = ((u < holdout_fraction) & (v > 0)).float()  # (B, I)
    v_in = v - target
    with torch.no_grad():
        lat = lateral_input(v_in, L) if crossfit is None else crossfit.input(idx, v_in)
        lat.masked_fill_(v_in > 0, float("-inf"))  # (B, I)

        def nll(log_a: float) -> float:
            logp = torch.log_softmax(lat * math.exp(log_a), dim=1)
            return -float(torch.where(target > 0, logp, torch.zeros_like(logp)).sum())

        lo, hi = -3.0, 6.0
        r = (math.sqrt(5) - 1) / 2
        x1, x2 = hi - r * (hi - lo), lo + r * (hi - lo)
        f1, f2 = nll(x1), nll(x2)
        for _ in range(30):
            if f1 < f2:
                hi, x2, f2 = x2, x1, f1
                x1 = hi - r * (hi - lo)
                f1 = nll(x1)
            else:
                lo, x1, f1 = x1, x2, f2
                x2 = lo + r * (hi - lo)
                f2 = nll(x2)
        return math.exp((lo + hi) / 2)
