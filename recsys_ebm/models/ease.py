"""EASE: Embarrassingly Shallow Autoencoders (Steck, WWW 2019), as energies.

Closed form: with Gram matrix G = X^T X + lambda I and P = G^-1,
    B_ij = -P_ij / P_jj  (i != j),  B_jj = 0,
and the score of item j for a user with history x is (x B)_j. Energy = -(x B)_j.
``dropout`` p > 0 solves the denoising linear autoencoder (DLAE, Steck 2020) instead:
B_ij = -P_ij Lambda_jj with P = (X^T X + Lambda)^-1, Lambda = lambda I + p/(1-p) diag(X^T X).

Memory: the item-item matrices are I x I float32. Fitting holds G (4 I^2 bytes), overwritten in
place by its Cholesky factor, and P = G^-1 from torch.cholesky_inverse (another 4 I^2 bytes),
which then becomes B in place: peak ~ 8 I^2 bytes plus the transient sparse product X^T X. For
I = 20,000 items that is 3.2 GB; serving holds only B (4 I^2 bytes = 1.6 GB). The validation
search over ``l2_grid`` keeps G alive and needs one more I x I matrix (12 I^2 bytes).

The L2 strength ``l2`` is chosen on the validation split when ``l2_grid`` is given and ``fit``
receives ``valid`` (best NDCG@10 of history=train vs target=valid).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.config import Config
from recsys_ebm.device import resolve_device
from recsys_ebm.diagnostics import ConfigError, DivergenceError
from recsys_ebm.models.base import (
    EpochCallback,
    Recommender,
    as_user_items,
    check_fit_inputs,
    check_items_at,
    csr_to_torch,
)
from recsys_ebm.models.capabilities import EnergyFactors

__all__ = ["EASE", "EASEConfig"]

#: rank of the truncated SVD of B that proxies EASE in the ranker's cascade (energy_factors);
#: the cascade re-scores its candidates with the exact B, so the rank only sets candidate recall
PROXY_RANK = 64


@dataclasses.dataclass(frozen=True)
class EASEConfig(Config):
    #: L2 strength; Steck reports 200-1000 as best on ML-20M / Netflix sized data
    l2: float = 250.0
    #: candidates for ``l2`` searched on the validation split (empty = use ``l2`` as is)
    l2_grid: tuple[float, ...] = (50.0, 100.0, 250.0, 500.0, 1000.0)
    #: 0: EASE (Steck 2019). p > 0: the denoising linear autoencoder DLAE (Steck 2020), trained
    #: in closed form under input dropout p (EASE._solve). Validation NDCG@10 at p = 0.5 and
    #: l2 = 250 against EASE's best l2: ML-100K 0.2177 vs 0.2132, ml-latest-small 0.1709 vs
    #: 0.1689, movietweetings-100k 0.1269 vs 0.1247 (benchmarks/README.md, "DLAE").
    dropout: float = 0.0
    #: progress on stderr (one step per solve and validation pass): a tqdm bar on a terminal,
    #: timestamped lines in a log (:mod:`recsys_ebm.progress`)
    progress: bool = True
    device: str = "auto"

    def validate(self) -> None:
        self._check_positive("l2")  # finiteness of l2 and of every l2_grid value: Config
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"EASEConfig.dropout: expected in [0, 1), got {self.dropout}")
        if any(v <= 0 for v in self.l2_grid):
            raise ConfigError(
                f"EASEConfig.l2_grid: expected positive values, got {list(self.l2_grid)}"
            )


class EASE(Recommender):
    name = "ease"
    is_baseline = True
    config_class = EASEConfig

    def __init__(self, config: EASEConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.device = resolve_device(self.config.device)
        self.B: torch.Tensor | None = None  # (I, I)

    @staticmethod
    def _gram(train: sp.csr_matrix, device: torch.device) -> torch.Tensor:
        g = (train.T @ train).toarray().astype(np.float32, copy=False)  # (I, I)
        return torch.from_numpy(g).to(device)

    @staticmethod
    def _solve(
        gram: torch.Tensor, l2: float, *, inplace: bool = False, dropout: float = 0.0
    ) -> torch.Tensor:
        """B from a Gram matrix; with ``inplace`` the Gram matrix's memory is reused.

        ``dropout`` p > 0 gives the denoising linear autoencoder instead (DLAE; Steck 2020,
        "Autoencoders that don't overfit towards the identity", NeurIPS): the closed-form
        minimiser of E ||X - (X * M / (1 - p)) B||^2 + l2 ||B||^2 over dropout masks M that keep
        each entry with probability 1 - p, B = (G + Lambda)^-1 G with G = X^T X and
        Lambda = l2 I + p / (1 - p) diag(G): dropout acts as an L2 penalty that grows with an
        item's popularity, in place of EASE's zero-diagonal constraint. Ranking masks the
        seen items, so only B's off-diagonal part, -P_ij Lambda_jj with P = (G + Lambda)^-1,
        is kept (the diagonal is zeroed as EASE's)."""
        g = gram if inplace else gram.clone()
        lam = g.diagonal() * (dropout / (1.0 - dropout)) + l2 if dropout > 0 else None  # (I,)
        g.diagonal().add_(l2 if lam is None else lam)
        try:
            torch.linalg.cholesky(g, out=g)  # (I, I) lower factor, in place
        except torch.linalg.LinAlgError as exc:  # l2 too small for an (almost) singular X^T X
            raise DivergenceError(
                f"EASE: X^T X + l2 I is not positive definite with l2={l2:g} (items with "
                f"identical histories need a larger l2); raise l2 / the l2_grid values ({exc})"
            ) from exc
        p = torch.cholesky_inverse(g)  # (I, I) = (X^T X + l2 I)^-1, or (G + Lambda)^-1
        del g
        if lam is None:
            p.div_(-p.diagonal().clone())  # B_ij = -P_ij / P_jj (column-wise)
        else:
            p.mul_(-lam[None, :])  # DLAE: B_ij = -P_ij Lambda_jj (column-wise)
        p.diagonal().zero_()
        return p

    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        """Solve for B (with the validation search over ``l2_grid`` when ``valid`` is given).

        Raises:
            DivergenceError: B is not finite (an ill-conditioned Gram matrix: raise ``l2``).
        """
        from recsys_ebm.progress import progress

        train, valid = check_fit_inputs(train, valid)
        binary = train.copy()
        binary.data[:] = 1.0
        self.n_items = train.shape[1]
        grid = list(self.config.l2_grid) if valid is not None and valid.nnz else []
        show = self.config.progress
        # steps: the Gram matrix, one solve + validation pass per grid value, the final solve
        bar = progress(len(grid) + 2, desc="train ease", unit="step", enabled=show)
        bar.set_postfix(step=f"Gram matrix X^T X ({self.n_items} items)")
        gram = self._gram(binary, self.device)
        bar.update(1)
        self.fit_info = {"l2": self.config.l2}
        if grid:
            from recsys_ebm.models.validation import evaluate_ranking

            valid = as_user_items(valid, self.n_items, "valid")
            scores = {}
            for step, l2 in enumerate(grid):
                bar.set_postfix(step=f"solve l2={l2:g}")
                self.B = self._solve(gram, l2, dropout=self.config.dropout)
                self._check_finite(l2)
                desc = "validate ease" if show else None
                scores[l2] = evaluate_ranking(self, binary, valid, (10,), progress_desc=desc)[
                    "ndcg@10"
                ]
                if callback is not None:
                    callback(step, {"l2": l2, "valid_ndcg@10": scores[l2]})
                bar.update(1, **{"valid ndcg@10": scores[l2]})
            best = max(scores, key=scores.get)
            self.fit_info = {
                "l2": best,
                "valid_ndcg@10_by_l2": {str(k): v for k, v in scores.items()},
            }
            self.config = self.config.replace(l2=best)
        bar.set_postfix(step=f"solve l2={self.config.l2:g}")
        self.B = self._solve(gram, self.config.l2, inplace=True, dropout=self.config.dropout)
        del gram
        self._check_finite(self.config.l2)
        bar.update(1)
        bar.close()
        return self

    def _check_finite(self, l2: float) -> None:
        assert self.B is not None
        if not bool(torch.isfinite(self.B).all()):
            self.B = None
            raise DivergenceError(
                f"EASE: the solve with l2={l2:g} gave non-finite weights B (an ill-conditioned "
                "Gram matrix); raise l2 / the l2_grid values; nothing was saved"
            )

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        assert self.B is not None
        x = csr_to_torch(user_items, self.device)  # (B, I) sparse binary history
        b = self.B if items is None else self.B[:, torch.as_tensor(items, device=self.device)]
        return -(x @ b)  # (B, I) energies

    def energy_factors(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None
    ) -> EnergyFactors:
        """A proxy for the ranker's cascade (capabilities.FactorScorer): with the truncated SVD
        B ~ P_r S_r Q_r^T (rank :data:`PROXY_RANK`, computed once per B), E(u, i) = -x_u B_i ~
        (-x_u P_r S_r) . Q_r,i. ``rescore``: :meth:`energies_at` gives the exact energies of
        the cascade's candidates (a gather over each history). ``users`` is ignored."""
        user_items = as_user_items(user_items, self._check_fitted())
        p, q = self._proxy()
        x = csr_to_torch(user_items, self.device)  # (B, I) sparse history
        return EnergyFactors(-(x @ p), q, None, exact=False, rescore=True)

    def _proxy(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_r S_r (I, r), Q_r (I, r)) of B, cached until B changes (fit / load)."""
        assert self.B is not None
        cached = getattr(self, "_proxy_cache", None)
        if cached is None or cached[0] is not self.B:
            u, sv, v = _truncated_svd(self.B, min(PROXY_RANK, self.B.shape[0]))
            cached = (self.B, (u * sv).contiguous(), v.contiguous())
            self._proxy_cache = cached
        return cached[1], cached[2]

    def energies_at(self, user_items: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
        """(U, C) float32 exact energies -x_u B[:, c] of each row at its own (U, C) items: a
        gather of B at (history item, candidate) pairs, O(nnz(history) x C)."""
        n_items = self._check_fitted()
        user_items = as_user_items(user_items, n_items)
        idx = check_items_at(items, user_items.shape[0], n_items)  # (U, C)
        with torch.no_grad():
            return self._at(user_items, torch.as_tensor(idx, device=self.device)).cpu().numpy()

    def _at(self, user_items: sp.csr_matrix, cand: torch.Tensor) -> torch.Tensor:
        """(B, C) -x_u B[:, c] for (B, C) long candidates on the model's device (x_u binary:
        each stored entry counts 1, as in :meth:`_energies_block`)."""
        assert self.B is not None
        dev, n_items = self.device, self.B.shape[0]
        coo = user_items.tocoo()
        rows = torch.as_tensor(coo.row, dtype=torch.long, device=dev)  # (nnz,)
        hist = torch.as_tensor(coo.col, dtype=torch.long, device=dev)  # (nnz,)
        # int32 positions while I^2 fits (half the index traffic of int64)
        small = n_items * n_items < 2**31
        idx = torch.int32 if small else torch.long
        flat = cand.to(idx)[rows]  # (nnz, C) each history entry's row of candidates
        if self.B.is_contiguous():  # B[j, c] at j I + c of the row-major buffer
            flat += (hist * n_items).to(idx)[:, None]
            buf = self.B
        else:  # the solve leaves B column-major: B[j, c] = B^T[c, j], no copy
            flat *= n_items
            flat += hist.to(idx)[:, None]
            buf = self.B.T.contiguous()
        # (nnz, C); every stored entry counts 1, as in energies (a binary history)
        terms = buf.reshape(-1).index_select(0, flat.reshape(-1)).view(flat.shape)
        out = torch.zeros(cand.shape, dtype=torch.float32, device=dev)  # (B, C)
        return out.index_add_(0, rows, terms).neg_()

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.B is not None
        return {"B": self.B}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.B = tensors["B"].to(self.device)


def _truncated_svd(
    a: torch.Tensor, rank: int, *, oversample: int = 16, power_iters: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-``rank`` SVD (U (n, r), S (r,), V (n, r)) of a square (n, n) ``a`` by the randomized
    range finder with power iterations (Halko, Martinsson & Tropp, SIAM Review 2011, algs. 4.4
    and 5.1), drawn from a seeded generator (no global RNG)."""
    n = a.shape[0]
    q = min(n, rank + oversample)
    g = torch.Generator(device=a.device).manual_seed(seed)
    y = a @ torch.randn(n, q, generator=g, device=a.device, dtype=a.dtype)  # (n, q)
    for _ in range(power_iters):  # re-orthonormalised subspace iteration
        y, _ = torch.linalg.qr(y)
        y, _ = torch.linalg.qr(a.T @ y)
        y = a @ y
    basis, _ = torch.linalg.qr(y)  # (n, q)
    uh, sv, vt = torch.linalg.svd(basis.T @ a, full_matrices=False)  # (q, q), (q,), (q, n)
    return (basis @ uh[:, :rank]), sv[:rank], vt[:rank].T
