"""Bernoulli RBM collaborative filter (Salakhutdinov, Mnih & Hinton 2007, binary-visible form).

One RBM is shared by all users: a user's history is one visible vector over the catalogue.
Training is contrastive divergence (CD-k, Hinton 2002) or persistent CD (Tieleman 2008), with
momentum, L2 weight decay, a learning-rate schedule and a k schedule, following Hinton's
"A Practical Guide to Training RBMs" (2010). Ranking uses the exact conditional free-energy
difference dF_i (see :mod:`recsys_ebm.models._rbm_math`): energy(u, i) = dF_i(v_u).
``objective="conditional"`` / ``"hybrid"`` instead trains the conditional that ranking uses,
softmax(-dF) over the catalogue, on held-out parts of each training row (alone or mixed with CD;
Larochelle & Bengio 2008): :mod:`recsys_ebm.models._rbm_conditional`.
``lateral="ease"`` (or ``"dlae"``) adds fixed item-item couplings (EASE's matrix, or its
denoising variant DLAE's, scaled by a learned a) to the
energy: the semi-restricted RBM of :mod:`recsys_ebm.models._rbm_lateral`, where dF_i gains
-a (v L)_i.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.config import Config
from recsys_ebm.device import resolve_device
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models._candidates import bounded_topk, candidate_count
from recsys_ebm.models._rbm_lateral import (
    CrossFit,
    binary_rows,
    ease_couplings,
    fit_scale,
    lateral_input,
)
from recsys_ebm.models._rbm_math import (
    dropout_mask,
    free_energy,
    free_energy_delta,
    free_energy_delta_approx,
    free_energy_delta_at,
    free_energy_delta_lower,
    gibbs_chain,
    hidden_prob,
)
from recsys_ebm.models._rbm_train import CDSchedule
from recsys_ebm.models.base import (
    EpochCallback,
    Recommender,
    as_user_items,
    check_fit_inputs,
    check_items_at,
    csr_to_torch,
    mask_block,
)
from recsys_ebm.models.capabilities import EnergyFactors

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
    k_schedule: tuple[int, ...] = ()  # k per stage, e.g. [1, 3, 5, 9]: epochs split evenly
    persistent: bool = False  # PCD: fantasy chains carried across minibatches
    init_std: float = 0.01
    patience: int = 5  # epochs without validation NDCG@10 gain before stopping (0 = never)
    #: validation NDCG@10 after every this many epochs (and the last): the averaged curve is
    #: smooth, so 2 scores as 1 does one split back and keeps the fit within issue 13's 15x ALS
    validate_every: int = 2
    #: iterate averaging (models/training.py; Polyak & Juditsky 1992, Swersky et al. 2010): the
    #: model validated, kept at the best epoch and served is an average over epochs of the
    #: parameters, theta_avg <- d_t theta_avg + (1 - d_t) theta with d_t = min(a, (t-1)/(t+1)),
    #: while CD goes on from theta: it removes the noise of CD's Gibbs samples that one iterate
    #: keeps. Chosen one split back (rbm_average.py). 0 = the raw iterate (default until 12-07)
    average: float = 0.9
    #: dropout on the hidden units in CD (Srivastava et al. 2014, sec. 8; objective "cd" only):
    #: each row keeps each hidden unit with probability q = 1 - p through its Gibbs chain; the
    #: model served is the thinned RBMs' geometric mean, stored as a plain RBM with visible bias
    #: b / q (models/_rbm_math.py). Validation one split back, 6 seeds (rbm_dropout.py): ML-100K
    #: 0.2100 vs 0.2058 without (0 = none: the default until 2026-12-07), ml-latest-small 0.1617
    #: vs 0.1604, movietweetings-100k (2 seeds) 0.1221 vs 0.1218
    hidden_dropout: float = 0.2
    max_abs_param: float = 1e4  # divergence guard
    checkpoint_dir: str = ""  # save after every epoch and resume from here when set
    #: progress on stderr: a tqdm bar on a terminal, timestamped lines in a log
    #: (:mod:`recsys_ebm.progress`)
    progress: bool = True
    seed: int = 0
    device: str = "auto"
    #: "cd": contrastive divergence on log p(v) (momentum SGD, ``learning_rate``); "conditional":
    #: the conditional log-likelihood of held-out items, softmax of -dF (_rbm_conditional; Adam,
    #: ``conditional_lr``); "hybrid": conditional + ``cd_weight`` x CD (Larochelle & Bengio
    #: 2008). CD stays the default: the others gain little on validation (ML-100K 0.198 CD, 0.201,
    #: 0.203; ml-latest-small 0.149, 0.153, 0.155) at 4-8x the fit time (rbm_objectives.py).
    objective: Literal["cd", "conditional", "hybrid"] = "cd"
    holdout_fraction: float = 0.5  # share of each row held out as targets, re-drawn every step
    conditional_lr: float = 0.01  # Adam step size of "conditional" / "hybrid"
    cd_weight: float = 1.0  # "hybrid": weight of the CD (generative) gradient
    #: sampled softmax with logQ correction: items sampled per step (0 or >= the catalogue:
    #: the exact softmax over every item)
    n_negatives: int = 0
    #: "ease": fixed item-item couplings L = EASE's B (fitted on the training matrix with L2
    #: ``lateral_l2``), scaled by a learned a: dF_i gains -a (v L)_i (the semi-restricted RBM,
    #: :mod:`recsys_ebm.models._rbm_lateral`); needs ``objective="conditional"``, exact
    #: softmax. Opt-in: it does not beat EASE on validation (n_hidden 20, batch 128: ML-100K
    #: 0.2125 vs EASE 0.2132, ml-latest-small 0.1669 vs 0.1689, movietweetings-100k 0.1190 vs
    #: 0.1247; benchmarks/rbm_objectives.py). "dlae": the couplings of EASE trained under input
    #: dropout p = ``holdout_fraction`` (DLAE, Steck 2020: the closed-form squared-loss solution
    #: of the conditional objective's own held-out task; _rbm_lateral.ease_couplings). Also
    #: opt-in: its couplings alone rank above EASE on validation on all three datasets, but the
    #: trained hidden units add at most +0.0012 (ml-latest-small) and cost 0.006 on
    #: movietweetings-100k (benchmarks/README.md, "DLAE couplings")
    lateral: Literal["none", "ease", "dlae"] = "none"
    lateral_l2: float = 250.0  # EASE's default L2
    #: train against two-fold cross-fitted couplings (_rbm_lateral: B fitted on all rows has
    #: seen each row's held-out targets); serving uses the B of all training rows
    lateral_crossfit: bool = True

    def validate(self) -> None:
        self._validate_cd()
        if self.validate_every < 1:
            raise ConfigError(f"RBMConfig.validate_every: expected >= 1, got {self.validate_every}")
        self._check_positive("conditional_lr", "lateral_l2")
        if self.lateral != "none" and (self.objective != "conditional" or self.n_negatives):
            raise ConfigError(
                f"RBMConfig.lateral: {self.lateral!r} needs objective='conditional' with the "
                f"exact softmax (n_negatives=0), got objective={self.objective!r}, "
                f"n_negatives={self.n_negatives} (CD would need Gibbs steps through L)"
            )
        self._check_nonnegative("cd_weight", "n_negatives")
        if not 0 <= self.hidden_dropout < 1:
            raise ConfigError(
                f"RBMConfig.hidden_dropout: expected [0, 1), got {self.hidden_dropout}"
            )
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError(
                f"RBMConfig.holdout_fraction: expected in (0, 1), got {self.holdout_fraction}"
            )

    @property
    def keep(self) -> float:
        """q = 1 - hidden_dropout with objective "cd", else 1 (the conditional objectives train
        the served model itself, every hidden unit in place)."""
        return 1.0 - self.hidden_dropout if self.objective == "cd" else 1.0


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
        self.L: torch.Tensor | None = None  # (I, I) fixed lateral couplings (lateral="ease")
        self.a: torch.Tensor | None = None  # (1,) their learned scale
        self.crossfit: CrossFit | None = None  # cross-fitted training couplings, during fit

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
        self.b /= cfg.keep  # hidden_dropout: stored as b / q (the thinned b above)
        self.c = torch.zeros(cfg.n_hidden)
        self.W, self.b, self.c = (t.to(self.device) for t in (self.W, self.b, self.c))
        self.L = self.a = None
        if cfg.lateral != "none":
            if train is None:
                raise ValueError("train: expected the training matrix with lateral, got None")
            # start at EASE's ranking: b = 0 and a = the softmax's best scale for it
            drop = cfg.holdout_fraction if cfg.lateral == "dlae" else 0.0
            self.L = ease_couplings(train, cfg.lateral_l2, self.device, drop)  # (I, I)
            self.b = torch.zeros(n_items, device=self.device)
            self.crossfit = None  # the training couplings (dropped after fit)
            if cfg.lateral_crossfit:
                self.crossfit = CrossFit(train, cfg.lateral_l2, self.L, generator, drop)
            a = fit_scale(train, self.L, cfg.holdout_fraction, generator, crossfit=self.crossfit)
            self.a = torch.tensor([a], dtype=torch.float32, device=self.device)

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
        q = self.config.keep  # dropout RBM: the thinned RBMs' visible bias is
        b = self.b * q if q < 1 else self.b  # q x the stored one (module _rbm_math)
        ph0 = hidden_prob(v0, self.W, self.c)  # (B, H) positive phase
        keep0 = keep = None  # (B, H) each row's kept hidden units (hidden_dropout)
        if q < 1:
            keep0 = dropout_mask(v0.shape[0], self.W.shape[1], q, generator, v0)
            ph0 = ph0 * keep0
        if chain is None:  # CD: the negative chain starts at the data
            vk, phk, recon = gibbs_chain(v0, self.W, b, self.c, k, generator, ph0, keep0)
        else:  # PCD: it continues the persistent fantasy particles (masks of their own)
            if q < 1:
                keep = dropout_mask(chain.shape[0], self.W.shape[1], q, generator, chain)
            vk, phk, _ = gibbs_chain(chain, self.W, b, self.c, k, generator, keep=keep)
            recon = None
        n0, nk = v0.shape[0], vk.shape[0]
        # (I, H) <v h>_data - <v h>_model: the second product accumulates into the first (BLAS
        # scales the output in place), no separate divide and subtract passes over (I, H)
        if vk is v0:  # CD-0: the chain never moved, the gradient is exactly zero
            g_w = torch.zeros_like(self.W)
        else:
            # (a data-parallel rank with no rows of a batch: empty products, its share dropped)
            g_w = torch.mm(v0.T, ph0).addmm_(
                vk.T, phk, beta=1.0 / max(n0, 1), alpha=-1.0 / max(nk, 1)
            )
        grads = {
            "W": g_w,  # (I, H)
            # the stored b / q moves so that the thinned b moves as CD's gradient says
            "b": (v0.mean(0) - vk.mean(0)) / q,
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
            f = free_energy(v, self.W, self.b, self.c)  # (B,)
            if self.L is not None:  # -(a/2) v.L v (_rbm_lateral)
                f = f - self.a * (lateral_input(v, self.L) * v).sum(dim=1) / 2
            out.append(f.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def visible(self, m: sp.csr_matrix) -> torch.Tensor:
        """(B, I) float 0/1 visible vectors of CSR history rows, on the model's device."""
        if self.device.type == "cuda":  # densify there: a (B, I) host array + copy per batch
            coo = m.tocoo()  # dominated a 100k-item epoch (benchmarks/distributed.py)
            idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
            val = torch.from_numpy(coo.data.astype(np.float32))
            v = torch.sparse_coo_tensor(idx, val, coo.shape, check_invariants=False)
            return (v.to(self.device).to_dense() > 0).float()  # (B, I); duplicates summed
        v = torch.from_numpy(m.toarray()).to(self.device)
        return (v > 0).float()  # (B, I) binary visible vectors

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        assert self.W is not None
        v = self.visible(user_items)
        idx = None if items is None else torch.as_tensor(items, device=self.device)
        with torch.no_grad():
            out = free_energy_delta(v, self.W, self.b, self.c, idx)  # (B, I)
            lat = self._lateral(user_items)
            if lat is not None:
                out -= lat if idx is None else lat[:, idx]
            return out

    def _lateral(self, user_items: sp.csr_matrix) -> torch.Tensor | None:
        """(B, I) a (v L), the lateral term of -dF (_rbm_lateral), or None without one."""
        if self.L is None:
            return None
        return lateral_input(user_items, self.L).mul_(self.a)

    # ------------------------------------------------------------------ serving
    #: exact dF computed for this many candidates first (None: 2 x n, at least n + 32; see
    #: recsys_ebm.models._candidates); recommend's result is exact whatever the value. 0 turns
    #: the bound off: every item's exact dF (the reference path)
    serve_candidates: int | None = None

    def _hidden_input(self, user_items: sp.csr_matrix) -> torch.Tensor:
        """(B, H) x = c + v W by a sparse product, v as :meth:`visible` reads the rows
        (duplicates summed, then 1 where > 0)."""
        return csr_to_torch(binary_rows(user_items), self.device) @ self.W + self.c

    def _bound(
        self, user_items: sp.csr_matrix
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x = c + v W (B, H), lower bound of dF (B, I), the lateral term a v L (B, I) or None)
        of CSR history rows, without densifying them. The lateral term is exact, so
        subtracting it from the RBM's bound keeps a bound."""
        assert self.W is not None and self.b is not None and self.c is not None
        x = self._hidden_input(user_items)  # (B, H)
        lower = free_energy_delta_lower(x, self.W, self.b)
        lat = self._lateral(user_items)
        if lat is not None:
            lower -= lat
        return x, lower, lat

    def _top_block(
        self,
        user_items: sp.csr_matrix,
        users: np.ndarray | None,
        k: int,
        exclude_seen: bool,
        exclude: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Exact top-k dF: the one-matmul lower bound picks candidates, exact dF re-ranks
        them, uncertified rows widen (:func:`~recsys_ebm.models._candidates.bounded_topk`)."""
        if self.serve_candidates == 0:
            return None
        with torch.no_grad():
            x, lower, lat = self._bound(user_items)
            mask_block(lower, user_items, exclude_seen, exclude)
            # with the history masked its items are never served: their exact dF (which reads
            # v) is never needed, and the (B, I) history is not densified
            v = None if exclude_seen else self.visible(user_items)
            W, b = self.W, self.b

            def exact_at(rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
                out = free_energy_delta_at(v, x, W, b, items, rows)  # (b, C)
                return out if lat is None else out - lat[rows[:, None], items]

            return bounded_topk(lower, exact_at, k, self.serve_candidates)

    def candidates(
        self,
        user_items: sp.csr_matrix,
        n_candidates: int,
        *,
        exclude_seen: bool = True,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """(U, C) int64 item indices of the C lowest lower bounds of dF per row (best first),
        seen items excluded unless ``exclude_seen`` is False; -1 pads rows with fewer
        servable items. The bound is one matmul (:func:`free_energy_delta_lower`)."""
        n_items = self._check_fitted()
        user_items = as_user_items(user_items, n_items)
        if isinstance(n_candidates, bool) or not isinstance(n_candidates, int | np.integer):
            raise TypeError(f"n_candidates: expected a positive int, got {n_candidates!r}")
        if n_candidates <= 0:
            raise ValueError(f"n_candidates: expected a positive int, got {n_candidates}")
        c = candidate_count(int(n_candidates), n_items, int(n_candidates))
        out = np.full((user_items.shape[0], c), -1, dtype=np.int64)
        for s in range(0, user_items.shape[0], batch_size):
            block = user_items[s : s + batch_size]
            with torch.no_grad():
                lower = mask_block(self._bound(block)[1], block, exclude_seen, None)
                val, idx = torch.topk(lower, c, dim=1, largest=False, sorted=True)
            out[s : s + batch_size] = idx.masked_fill(torch.isinf(val), -1).cpu().numpy()
        return out

    def energy_factors(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None
    ) -> EnergyFactors:
        """The second-order expansion of dF as factors (capabilities.FactorScorer; the ranker's
        cascade): with s = sigmoid(x), dF_i ~ -b_i + [-s, -s (1 - s) / 2] . [W_i, W_i^2]
        (:func:`~recsys_ebm.models._rbm_math.free_energy_delta_approx`, error at most
        sum_j |W_ij|^3 / 62 per item). Not re-scored by the cascade (``rescore`` False): the
        bound is the price of one matmul instead of C x H softplus terms per user. ``users``
        is ignored. With lateral couplings the factors gain the exact -a v . L_:,i: u's columns are
        then the (B, I) history and v's a L^T (rank I: exact but not cheap)."""
        user_items = as_user_items(user_items, self._check_fitted())
        with torch.no_grad():
            s = torch.sigmoid(self._hidden_input(user_items))  # (B, H)
            u = torch.cat([s, s * (1 - s) / 2], dim=1).neg_()  # (B, 2H)
            v = torch.cat([self.W, self.W.square()], dim=1)  # (I, 2H)
            if self.L is not None:
                hist = self.visible(user_items).neg_()  # (B, I)
                u = torch.cat([u, hist], dim=1)  # (B, 2H + I)
                v = torch.cat([v, self.L.T * self.a], dim=1)  # (I, 2H + I)
        return EnergyFactors(u, v, -self.b, exact=False, rescore=False)

    def approx_energies(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """(U, I) float32 second-order Taylor approximation of dF (one matmul per block;
        :func:`~recsys_ebm.models._rbm_math.free_energy_delta_approx`, error <= sum_j |W_ij|^3
        / 62 for unseen items). ``users`` is accepted and ignored (one shared model)."""
        n_items = self._check_fitted()
        user_items = as_user_items(user_items, n_items)
        out = np.empty(user_items.shape, dtype=np.float32)
        for s in range(0, user_items.shape[0], batch_size):
            block = user_items[s : s + batch_size]
            with torch.no_grad():
                x = self._hidden_input(block)  # (B, H)
                approx = free_energy_delta_approx(x, self.W, self.b)  # (B, I)
                lat = self._lateral(block)
                if lat is not None:  # exact: the bound's error is the RBM part's alone
                    approx -= lat
                out[s : s + batch_size] = approx.cpu()
        return out

    def energies_at(self, user_items: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
        """(U, C) float32 exact dF of each row at its own item indices ``items`` (U, C)."""
        n_items = self._check_fitted()
        user_items = as_user_items(user_items, n_items)
        idx = check_items_at(items, user_items.shape[0], n_items)  # (U, C)
        with torch.no_grad():
            v = self.visible(user_items)  # (U, I)
            x = self._hidden_input(user_items)  # (U, H)
            it = torch.as_tensor(idx, dtype=torch.long, device=self.device)
            out = free_energy_delta_at(v, x, self.W, self.b, it)  # (U, C)
            lat = self._lateral(user_items)
            if lat is not None:
                out -= lat.gather(1, it)
            return out.cpu().numpy()

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
        try:
            result = train_rbm(
                self,
                train,
                valid,
                monitor=monitor,
                callback=callback,
                progress=show,
                checkpoint_dir=ckpt,
            )
        finally:
            self.crossfit = None  # training-only couplings (2 I x I floats)
        scored = [h["epoch"] for h in result.history if h.get("valid_ndcg@10") is not None]
        best = max(scored, key=lambda e: result.history[e]["valid_ndcg@10"]) if scored else None
        self.fit_info = {
            "history": result.history,
            "epochs_run": result.epochs_run,
            "best_valid_ndcg@10": result.best_score,
            "best_epoch": best,  # 0-based; refit on train + valid with epochs=best_epoch + 1
        }
        return self

    # ------------------------------------------------------------------ training state hooks
    def parameters(self) -> dict[str, torch.Tensor]:
        """The fitted tensors by name: ``W`` (I, H), ``b`` (I,), ``c`` (H,) and, with lateral
        couplings, their scale ``a`` (1,) (not copies; L is fixed, not a parameter)."""
        assert self.W is not None and self.b is not None and self.c is not None
        out = {"W": self.W, "b": self.b, "c": self.c}
        if self.a is not None:
            out["a"] = self.a
        return out

    def set_parameters(self, params: dict[str, torch.Tensor]) -> None:
        """Replace ``W``, ``b``, ``c`` and ``a`` if given (the tensors are used as given)."""
        self.W, self.b, self.c = params["W"], params["b"], params["c"]
        if "a" in params:
            self.a = params["a"]

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.W is not None
        out = {"W": self.W, "b": self.b, "c": self.c}
        if self.L is not None:
            out.update(L=self.L, a=self.a)
        return out

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.W = tensors["W"].to(self.device)
        self.b = tensors["b"].to(self.device)
        self.c = tensors["c"].to(self.device)
        self.L = tensors["L"].to(self.device) if "L" in tensors else None
        self.a = tensors["a"].to(self.device) if "a" in tensors else None
