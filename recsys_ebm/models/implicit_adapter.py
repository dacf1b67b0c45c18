"""ALS and BPR from the ``implicit`` library behind the energy contract (energy = -score).

* ALS: Hu, Koren & Volinsky (ICDM 2008), confidence-weighted matrix factorisation.
* BPR: Rendle et al. (UAI 2009), pairwise ranking matrix factorisation.

Training uses implicit's CPU classes (``implicit.cpu.*``). Serving is ours: scores are
``user_factors @ item_factors.T``, computed in torch. A user passed with a training-row index
(``users``) is served from the learned factors (implicit's default); a user without one (-1, or
``users=None``) is **folded in** from the history passed at call time with the ALS normal
equations on the fixed item factors Y (the exact ALS user update, Hu et al. eq. 4):

    (Y^T Y + reg I + (c - 1) Y_s^T Y_s) u = c Y_s^T 1,     Y_s = rows of Y for the history items,

with c = ``alpha`` for ALS and c = 1 for BPR (whose item biases are kept: u gets a 1 in the bias
slot). Seen items are masked by the base class from the matrix passed at call time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.config import Config
from recsys_ebm.device import current_threads
from recsys_ebm.diagnostics import DivergenceError
from recsys_ebm.models.base import (
    EpochCallback,
    Recommender,
    as_user_items,
    check_fit_inputs,
    csr_to_torch,
)
from recsys_ebm.models.capabilities import EnergyFactors

__all__ = ["ALS", "ALSConfig", "BPR", "BPRConfig"]


@dataclasses.dataclass(frozen=True)
class ALSConfig(Config):
    factors: int = 64  # implicit's default is 100; 64 is as good on ML-100K and faster
    regularization: float = 0.05
    alpha: float = 2.0  # confidence of an observed interaction
    epochs: int = 15  # implicit's ``iterations``
    seed: int = 0
    #: 0 = the process's thread count (``--threads`` / ``RECSYS_EBM_THREADS``, else the CPUs it
    #: may use: affinity mask and cgroup quota), not implicit's "all cores"
    num_threads: int = 0

    def validate(self) -> None:
        self._check_positive("factors", "alpha", "epochs")
        self._check_nonnegative("regularization", "num_threads", "seed")


@dataclasses.dataclass(frozen=True)
class BPRConfig(Config):
    factors: int = 64
    learning_rate: float = 0.05
    regularization: float = 0.01
    epochs: int = 100  # implicit's ``iterations``
    seed: int = 0
    #: 0 = the process's thread count (as ALS). Any value but 1 makes BPR non-deterministic:
    #: implicit's Hogwild SGD threads update shared factors without locks (see :class:`BPR`)
    num_threads: int = 0

    def validate(self) -> None:
        self._check_positive("factors", "learning_rate", "epochs")
        self._check_nonnegative("regularization", "num_threads", "seed")


class _FactorModel(Recommender):
    """Shared serving for factor models: energies = -(u . y_i)."""

    #: confidence c of the fold-in normal equations
    _confidence: float = 1.0
    #: number of trailing bias columns in the factors (BPR: 1)
    _bias_cols: int = 0

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.user_factors: torch.Tensor | None = None  # (U, F)
        self.item_factors: torch.Tensor | None = None  # (I, F)

    def _make(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        train = check_fit_inputs(train, valid)[0].copy()
        train.data[:] = 1.0
        import implicit.cpu  # noqa: F401  loads scipy's BLAS, which must exist before the limit
        from implicit.recommender_base import ModelFitError as ImplicitFitError
        from threadpoolctl import threadpool_limits

        diverged = (
            f"{self.name}: the factors are NaN/inf after training (implicit checks them only "
            f"at the end of its {self.config.epochs} epochs); {self._diverged_hint()}; nothing "
            "was saved"
        )
        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
            model = self._make()
            try:
                model.fit(train, show_progress=False)
            except ImplicitFitError as exc:  # implicit's own NaN check
                raise DivergenceError(diverged) from exc
        uf = np.asarray(model.user_factors, dtype=np.float32)
        itf = np.asarray(model.item_factors, dtype=np.float32)
        if not (np.isfinite(uf).all() and np.isfinite(itf).all()):
            raise DivergenceError(diverged)
        self.user_factors = torch.from_numpy(uf)
        self.item_factors = torch.from_numpy(itf)
        self.n_items = train.shape[1]
        self.fit_info = {"n_train_users": int(train.shape[0])}
        return self

    def _diverged_hint(self) -> str:
        return "raise regularization"

    def fold_in(self, user_items: sp.csr_matrix) -> torch.Tensor:
        """(B, F) user factors from histories alone (module docstring's normal equations)."""
        assert self.item_factors is not None
        y = self.item_factors
        nb = self._bias_cols
        yf = y[:, : y.shape[1] - nb]  # (I, F') factor part
        f = yf.shape[1]
        c = self._confidence
        reg = float(self.config.regularization)  # both configs define it
        x = csr_to_torch(user_items, torch.device("cpu"))  # (B, I)
        yty = yf.T @ yf + reg * torch.eye(f)  # (F', F')
        outer = (yf[:, :, None] * yf[:, None, :]).reshape(len(yf), f * f)  # (I, F'^2)
        a = yty + (c - 1.0) * (x @ outer).reshape(-1, f, f)  # (B, F', F')
        rhs = c * (x @ yf)  # (B, F')
        u = torch.linalg.solve(a, rhs.unsqueeze(-1)).squeeze(-1)  # (B, F')
        if nb:  # BPR: the bias slot of a user vector is 1, so item biases still count
            u = torch.cat([u, torch.ones(u.shape[0], nb)], dim=1)
        return u

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        assert self.item_factors is not None
        u = self._user_block(user_items, users)  # (B, F)
        y = self.item_factors if items is None else self.item_factors[torch.as_tensor(items)]
        return -(u @ y.T)  # (B, I)

    def energy_factors(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None
    ) -> EnergyFactors:
        """Exact: E(u, i) = (-u) . y_i (capabilities.FactorScorer; the ranker's cascade)."""
        user_items = as_user_items(user_items, self._check_fitted())
        users = self._check_users(users, user_items.shape[0])
        assert self.item_factors is not None
        u = self._user_block(user_items, users)  # (B, F)
        return EnergyFactors(-u, self.item_factors, None, exact=True)

    def _user_block(self, user_items: sp.csr_matrix, users: np.ndarray | None) -> torch.Tensor:
        """(B, F) user factors: the learned ones of known rows, folded in for the rest."""
        assert self.user_factors is not None and self.item_factors is not None
        n_rows = user_items.shape[0]
        known = np.zeros(n_rows, dtype=bool)
        if users is not None:
            known = (users >= 0) & (users < self.user_factors.shape[0])
        u = torch.empty(n_rows, self.item_factors.shape[1])  # (B, F)
        if known.any():  # known users: their learned factors (implicit's default)
            u[torch.as_tensor(np.flatnonzero(known))] = self.user_factors[
                torch.as_tensor(users[known])
            ]
        if not known.all():  # the rest are folded in from the history passed now
            rest = np.flatnonzero(~known)
            u[torch.as_tensor(rest)] = self.fold_in(user_items[rest])
        return u

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.user_factors is not None and self.item_factors is not None
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.user_factors = tensors["user_factors"].float()
        self.item_factors = tensors["item_factors"].float()


class ALS(_FactorModel):
    name = "als"
    is_baseline = True
    config_class = ALSConfig

    @property
    def _confidence(self) -> float:  # type: ignore[override]
        return float(self.config.alpha)

    def _make(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        return AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            iterations=cfg.epochs,
            num_threads=cfg.num_threads or current_threads(),
            random_state=cfg.seed,
        )


class BPR(_FactorModel):
    """Bayesian personalised ranking through ``implicit.cpu.bpr``.

    **Not reproducible with more than one thread.** implicit's BPR runs Hogwild SGD: its
    threads update shared factors without locks, so the result depends on how the threads
    interleave, and two fits with the same ``seed`` differ (on ML-100K every user's top-20
    changed). ``num_threads=1`` makes a fit reproducible, at the cost of speed. ALS solves
    exact least-squares steps and is not affected.
    """

    name = "bpr"
    is_baseline = True
    config_class = BPRConfig
    _bias_cols = 1  # implicit's BPR keeps an item bias as the last factor column

    def _diverged_hint(self) -> str:
        return f"lower learning_rate (now {self.config.learning_rate:g})"

    def _make(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cfg = self.config
        return BayesianPersonalizedRanking(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            iterations=cfg.epochs,
            num_threads=cfg.num_threads or current_threads(),
            random_state=cfg.seed,
        )
