"""Bernoulli RBM collaborative filter (Salakhutdinov, Mnih & Hinton 2007, binary-visible form).

One RBM is shared by all users: a user's history is one visible vector over the catalogue.
Training is contrastive divergence (CD-k, Hinton 2002) or persistent CD (Tieleman 2008), with
momentum, L2 weight decay, a learning-rate schedule and a k schedule, following Hinton's
"A Practical Guide to Training RBMs" (2010). Ranking uses the exact conditional free-energy
difference dF_i (see :mod:`recsys_ebm.models._rbm_math`): energy(u, i) = dF_i(v_u).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.config import Config
from recsys_ebm.device import resolve_device
from recsys_ebm.models._rbm_math import free_energy, free_energy_delta, gibbs_chain, hidden_prob
from recsys_ebm.models._rbm_train import CDSchedule
from recsys_ebm.models.base import EpochCallback, Recommender, as_user_items, check_fit_inputs

__all__ = ["RBM", "RBMConfig"]


@dataclasses.dataclass(frozen=True)
class RBMConfig(CDSchedule, Config):
    n_hidden: int = 200  # best of {100, 200, 400} on ML-100K validation (benchmarks/README.md)
    epochs: int = 30
    batch_size: int = 32  # small batches: more updates per epoch on ~1k users
    learning_rate: float = 0.05
    momentum: float = 0.9  # 0.5 for the first 5 epochs, then this (Hinton 2010, sec. 9)
    weight_decay: float = 1e-4  # L2 on W (Hinton 2010, sec. 10)
    lr_decay: float = 0.97  # multiplicative per epoch
    cd_k: int = 1
    #: k per training stage, e.g. [1, 3, 5, 9]: the epochs are split evenly across the entries
    k_schedule: tuple[int, ...] = ()
    persistent: bool = False  # PCD: fantasy chains carried across minibatches
    init_std: float = 0.01
    patience: int = 5  # epochs without validation NDCG@10 gain before stopping (0 = never)
    max_abs_param: float = 1e4  # divergence guard
    checkpoint_dir: str = ""  # save after every epoch and resume from here when set
    #: progress on stderr: a tqdm bar on a terminal, timestamped lines in a log
    #: (:mod:`recsys_ebm.progress`)
    progress: bool = True
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        self._validate_cd()


class RBM(Recommender):
    """Binary RBM over items; energy(u, i) = exact dF_i of the user's history vector."""

    name = "rbm"
    config_class = RBMConfig

    def __init__(self, config: RBMConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.device = resolve_device(self.config.device)
        self.W: torch.Tensor | None = None  # (I, H)
        self.b: torch.Tensor | None = None  # (I,) visible biases
        self.c: torch.Tensor | None = None  # (H,) hidden biases

    # ------------------------------------------------------------------ maths
    def init_params(self, n_items: int, generator: torch.Generator, train: sp.csr_matrix | None):
        cfg = self.config
        self.n_items = n_items
        self.W = torch.randn(n_items, cfg.n_hidden, generator=generator) * cfg.init_std
        # visible biases at the log-odds of each item's base rate (Hinton 2010, sec. 8)
        if train is not None and train.shape[0]:
            p = np.clip(np.asarray(train.getnnz(axis=0)) / train.shape[0], 1e-4, 1 - 1e-4)
            self.b = torch.as_tensor(np.log(p / (1 - p)), dtype=torch.float32)
        else:
            self.b = torch.zeros(n_items)
        self.c = torch.zeros(cfg.n_hidden)
        self.W, self.b, self.c = (t.to(self.device) for t in (self.W, self.b, self.c))

    def cd_gradient(
        self,
        v0: torch.Tensor,
        k: int,
        generator: torch.Generator | None,
        chain: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Stochastic CD-k (or PCD-k when ``chain`` is given) estimate of d log p(v0) / d theta.

        Returns (gradients averaged over the batch, the chain's new state).
        """
        assert self.W is not None and self.b is not None and self.c is not None
        grads, vk, _ = self.cd_step(v0, k, generator, chain)
        return grads, vk

    def cd_step(
        self,
        v0: torch.Tensor,
        k: int,
        generator: torch.Generator | None,
        chain: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """:meth:`cd_gradient` plus the reconstruction p(v | h) of v0 (free with CD, k >= 1)."""
        assert self.W is not None and self.b is not None and self.c is not None
        ph0 = hidden_prob(v0, self.W, self.c)  # (B, H) positive phase
        if chain is None:  # CD: the negative chain starts at the data
            vk, phk, recon = gibbs_chain(v0, self.W, self.b, self.c, k, generator, ph0)
        else:  # PCD: it continues the persistent fantasy particles
            vk, phk, _ = gibbs_chain(chain, self.W, self.b, self.c, k, generator)
            recon = None
        n0, nk = v0.shape[0], vk.shape[0]
        grads = {
            "W": v0.T @ ph0 / n0 - vk.T @ phk / nk,  # (I, H)
            "b": v0.mean(0) - vk.mean(0),
            "c": ph0.mean(0) - phk.mean(0),
        }
        return grads, vk, recon

    def free_energy(self, user_items: sp.csr_matrix) -> np.ndarray:
        """(U,) free energy of each history row (lower = more plausible profile)."""
        self._check_fitted()
        user_items = as_user_items(user_items, self.n_items)
        out = []
        for s in range(0, user_items.shape[0], 1024):
            v = self.visible(user_items[s : s + 1024])
            out.append(free_energy(v, self.W, self.b, self.c).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def visible(self, m: sp.csr_matrix) -> torch.Tensor:
        """(B, I) float 0/1 visible vectors of CSR history rows, on the model's device."""
        v = torch.from_numpy(m.toarray()).to(self.device)
        return (v > 0).float()  # (B, I) binary visible vectors

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        assert self.W is not None
        v = self.visible(user_items)
        idx = None if items is None else torch.as_tensor(items, device=self.device)
        with torch.no_grad():
            return free_energy_delta(v, self.W, self.b, self.c, idx)  # (B, I)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        from recsys_ebm.models._rbm_train import train_rbm
        from recsys_ebm.models.validation import ndcg_monitor

        train, valid = check_fit_inputs(train, valid)
        show = self.config.progress  # recsys_ebm.progress: a bar on a TTY, else log lines
        ckpt = Path(self.config.checkpoint_dir) if self.config.checkpoint_dir else None
        monitor = ndcg_monitor(self, train, valid, progress_desc="validate rbm" if show else None)
        result = train_rbm(
            self,
            train,
            valid,
            monitor=monitor,
            callback=callback,
            progress=show,
            checkpoint_dir=ckpt,
        )
        self.fit_info = {
            "history": result.history,
            "epochs_run": result.epochs_run,
            "best_valid_ndcg@10": result.best_score,
        }
        return self

    # ------------------------------------------------------------------ training state hooks
    def parameters(self) -> dict[str, torch.Tensor]:
        """The fitted tensors by name: ``W`` (I, H), ``b`` (I,), ``c`` (H,) (not copies)."""
        assert self.W is not None and self.b is not None and self.c is not None
        return {"W": self.W, "b": self.b, "c": self.c}

    def set_parameters(self, params: dict[str, torch.Tensor]) -> None:
        """Replace ``W``, ``b`` and ``c`` (the tensors are used as given)."""
        self.W, self.b, self.c = params["W"], params["b"], params["c"]

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.W is not None
        return {"W": self.W, "b": self.b, "c": self.c}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.W = tensors["W"].to(self.device)
        self.b = tensors["b"].to(self.device)
        self.c = tensors["c"].to(self.device)
