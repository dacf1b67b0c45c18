"""Most-popular baseline: energy(u, i) = -log(1 + count_i), the same for every user."""

from __future__ import annotations

import dataclasses
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.config import Config
from recsys_ebm.models.base import EpochCallback, Recommender, as_user_items, check_fit_inputs
from recsys_ebm.models.capabilities import EnergyFactors

__all__ = ["Popularity", "PopularityConfig"]


@dataclasses.dataclass(frozen=True)
class PopularityConfig(Config):
    """No hyperparameters; kept for the shared config/registry plumbing."""


class Popularity(Recommender):
    """Ranks items by training interaction count (the same list for every user)."""

    name = "popularity"
    is_baseline = True
    config_class = PopularityConfig

    def __init__(self, config: PopularityConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.item_energy: torch.Tensor | None = None  # (I,)

    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        train, _ = check_fit_inputs(train, valid)
        counts = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float64)  # (I,)
        self.n_items = train.shape[1]
        self.item_energy = torch.as_tensor(-np.log1p(counts), dtype=torch.float32)
        self.fit_info = {"n_train_interactions": int(train.nnz)}
        return self

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        assert self.item_energy is not None
        e = self.item_energy if items is None else self.item_energy[torch.as_tensor(items)]
        # a copy: recommend() writes +inf over seen items in place, and a one-row expand() is
        # "contiguous", so it would write into item_energy itself (corrupting later answers)
        return e.expand(user_items.shape[0], -1).clone()  # (B, I)

    def energy_factors(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None
    ) -> EnergyFactors:
        """Exact: no factors, E(u, i) = bias_i (capabilities.FactorScorer)."""
        user_items = as_user_items(user_items, self._check_fitted())
        assert self.item_energy is not None
        e = self.item_energy
        return EnergyFactors(e.new_zeros(user_items.shape[0], 0), e.new_zeros(len(e), 0), e, True)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.item_energy is not None
        return {"item_energy": self.item_energy}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.item_energy = tensors["item_energy"].float()
