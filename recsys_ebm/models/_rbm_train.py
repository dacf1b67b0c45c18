"""Minibatch CD-k / PCD-k epochs for :class:`~recsys_ebm.models.rbm.RBM`, run by the shared loop
(:func:`recsys_ebm.models.training.run_training`), and the parts the softmax RBMs share with it.

Per epoch: users are shuffled with the seeded generator; each minibatch of CSR rows is densified
alone (:class:`BinaryRows`; the whole matrix never is); the gradient step uses momentum and L2
weight decay (Hinton 2010, secs. 9-10). Monitoring: reconstruction error, the mean free-energy
gap between users' training and validation profiles (it widens as the model overfits; Hinton
2010 sec. 6), and validation NDCG@10 for early stopping (the best epoch's parameters are kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.io import checkpoint_fingerprint
from recsys_ebm.models._checks import csr_to_torch
from recsys_ebm.models._rbm_lateral import binary_rows
from recsys_ebm.models._rbm_math import hidden_prob, visible_prob
from recsys_ebm.models.distributed import GlobalBatchGenerator
from recsys_ebm.models.distributed import current as current_data_parallel
from recsys_ebm.models.training import (
    EpochBatches,
    EpochCallback,
    Monitor,
    TrainingResult,
    check_parameters,
    run_training,
)

if TYPE_CHECKING:
    from recsys_ebm.models.rbm import RBM
    from recsys_ebm.models.softmax_rbm import SoftmaxRBM

__all__ = [
    "BinaryRows",
    "CDSchedule",
    "CDTrainer",
    "FreeEnergyGap",
    "RBMTrainer",
    "momentum_step",
    "train_rbm",
]

_PARAMS = ("W", "b", "c")


class CDSchedule:
    """Config methods shared by the RBM family (``RBMConfig``, ``SoftmaxRBMConfig``): checks of
    the contrastive-divergence fields (iterate averaging's ``average`` included) and the k
    schedule."""

    def _validate_cd(self) -> None:
        name = type(self).__name__
        self._check_positive("n_hidden", "epochs", "batch_size", "learning_rate", "init_std")
        self._check_positive("lr_decay", "max_abs_param")
        self._check_nonnegative("patience", "seed")
        if self.cd_k < 0 or any(k < 0 for k in self.k_schedule):
            raise ConfigError(
                f"{name}.cd_k/k_schedule: expected >= 0, got {self.cd_k}, {list(self.k_schedule)}"
            )
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{name}.momentum: expected [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"{name}.weight_decay: expected >= 0, got {self.weight_decay}")
        if not 0 <= self.average < 1:
            raise ConfigError(f"{name}.average: expected a decay in [0, 1), got {self.average}")

    def k_at(self, epoch: int) -> int:
        """CD steps at ``epoch``: ``cd_k``, or the k schedule's entry (epochs split evenly)."""
        if not self.k_schedule:
            return self.cd_k
        stage = min(len(self.k_schedule) - 1, epoch * len(self.k_schedule) // self.epochs)
        return self.k_schedule[stage]


def momentum_step(
    params: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    vel: dict[str, torch.Tensor],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """Ascend the CD gradient in place: velocity = momentum * velocity + lr * (grad - decay * W),
    L2 decay on W only (Hinton, "A Practical Guide to Training RBMs", 2010, secs. 9-10)."""
    with torch.no_grad():
        for name in _PARAMS:
            v = vel[name].mul_(momentum).add_(grads[name], alpha=lr)
            if name == "W" and weight_decay:  # in place: no (I, H) temporary
                v.add_(params["W"], alpha=-lr * weight_decay)
            params[name].add_(v)


class BinaryRows:
    """(B, I) 0/1 float rows of a (U, I) CSR matrix (1 where the entry is > 0, as
    :meth:`RBM.visible <recsys_ebm.models.rbm.RBM.visible>` reads them), densified per
    minibatch from index arrays: the whole matrix never is. The CSR is read as a binary
    canonical pattern once (:func:`binary_rows`: the caller's matrix is not modified); a batch
    then costs one ragged gather of its column indices and one scatter (about 0.4 ms less than
    scipy's fancy row indexing plus ``toarray`` for 32 of ML-100K's rows, which a CD epoch pays
    at every step)."""

    def __init__(self, m: sp.csr_matrix, device: torch.device) -> None:
        b = binary_rows(m)  # duplicates summed, then 1 where > 0: sorted, distinct columns
        self.indptr, self.indices = b.indptr.astype(np.int64), b.indices.astype(np.int64)
        self.n_cols, self.device = b.shape[1], device

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        starts = self.indptr[rows]  # (B,)
        lens = self.indptr[rows + 1] - starts  # (B,)
        row_of = np.repeat(np.arange(len(rows)), lens)  # (nnz,)
        # position of each entry in ``indices``: its row's start + its rank within the row
        pos = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        v = torch.zeros(len(rows), self.n_cols, device=self.device)  # (B, I)
        r = torch.from_numpy(row_of).to(self.device)
        c = torch.from_numpy(self.indices[pos]).to(self.device)
        return v.index_put_((r, c), torch.ones((), device=self.device))


class CDTrainer:
    """The training state the RBM family shares (a ``Trainable``, see
    :mod:`recsys_ebm.models.capabilities`): the model's ``W``, ``b``, ``c`` (read and written
    through ``model.parameters()`` / ``model.set_parameters()``), their momentum velocities,
    the persistent chain, the CPU and device generators, and the learning rate (decayed after
    every epoch).
    Subclasses implement :meth:`train_epoch`."""

    #: named in divergence errors: the extra remedy
    hint = " or raise weight_decay"

    def __init__(self, model: RBM | SoftmaxRBM, *, progress: bool, desc: str) -> None:
        cfg = model.config
        self.model, self.config, self.progress, self.desc = model, cfg, progress, desc
        # data-parallel rank or None (models/distributed.py: global-batch draws, all-reduce)
        self.dp = current_data_parallel()
        make = torch.Generator if self.dp is None else GlobalBatchGenerator
        self.gen = make(device="cpu").manual_seed(cfg.seed)
        dev = model.device
        self.dev_gen = self.gen if dev.type == "cpu" else make(dev).manual_seed(cfg.seed)
        self.lr = cfg.learning_rate
        self.vel: dict[str, torch.Tensor] = {}
        self.chain: torch.Tensor | None = None

    def _init_velocities(self) -> None:
        self.vel = {k: torch.zeros_like(t) for k, t in self.model.parameters().items()}

    def step(self, grads: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        """One momentum step on the model's parameters, then the divergence guard."""
        momentum = 0.5 if epoch < 5 else self.config.momentum
        params = self.model.parameters()
        if self.dp is not None:  # the global batch's mean gradient, on every rank
            self.dp.all_reduce(grads)
        momentum_step(params, grads, self.vel, self.lr, momentum, self.config.weight_decay)
        self.check_step(epoch, step)

    def check_step(self, epoch: int, step: int) -> None:
        """The divergence guard after a gradient step, naming the epoch, step and lr."""
        check_parameters(
            self.model.parameters(),
            self.config.max_abs_param,
            who=type(self.model).__name__,
            epoch=epoch,
            step=step,
            lr=self.lr,
            hint=self.hint,
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        raise NotImplementedError

    # ----------------------------------------------------------------- Trainable state hooks
    def parameters_to_check(self) -> dict[str, torch.Tensor]:
        return self.model.parameters()

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {n: t.clone() for n, t in self.model.parameters().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        dev = self.model.device
        self.model.set_parameters({n: t.to(dev) for n, t in state.items()})

    def state_dict(self) -> dict[str, Any]:
        """W, b, c, their velocities, the persistent chain, both generators and the lr."""
        st: dict[str, Any] = {n: t.cpu() for n, t in self.model.parameters().items()}
        st.update({"vel_" + n: v.cpu() for n, v in self.vel.items()})
        chain = self._global_chain()
        st["chain"] = chain.cpu() if chain is not None else torch.zeros(0)
        st["gen"] = self.gen.get_state()
        if self.dev_gen is not self.gen:
            st["dev_gen"] = self.dev_gen.get_state()
        st["lr"] = self.lr
        return st

    def load_state_dict(self, st: dict[str, Any]) -> None:
        dev = self.model.device
        names = tuple(self.model.parameters())  # W, b, c (and the RBM's lateral scale a)
        self.model.set_parameters({n: st[n].to(dev) for n in names})
        self.vel = {n: st["vel_" + n].to(dev) for n in names}
        self.gen.set_state(st["gen"])
        if self.dev_gen is not self.gen:
            self.dev_gen.set_state(st["dev_gen"])
        self.chain = st["chain"].to(dev) if st["chain"].numel() else None
        if self.chain is not None and self.dp is not None:  # this rank's own chains
            self.chain = self._local_chain(self.chain)
        self.lr = st["lr"]

    def _global_chain(self) -> torch.Tensor | None:
        """The persistent chains of every rank (a checkpoint holds the global state): the
        ranks' (B_r, I) shares of the (B, I) chains, gathered."""
        if self.chain is not None and self.dp is not None:
            return self.dp.gather_rows(self.chain, self.config.batch_size)
        return self.chain

    def _local_chain(self, chain: torch.Tensor) -> torch.Tensor:
        """This rank's share of checkpointed global chains (the inverse of _global_chain)."""
        assert self.dp is not None
        return self.dp.local_block(chain)


class RBMTrainer(CDTrainer):
    """Epochs of :class:`~recsys_ebm.models.rbm.RBM` (module docstring)."""

    #: runs under torchrun: shards each global batch, all-reduces (models/distributed.py)
    data_parallel = True

    def __init__(
        self, model: RBM, train: sp.csr_matrix, valid: sp.csr_matrix | None, *, progress: bool
    ) -> None:
        super().__init__(model, progress=progress, desc="train rbm")
        self.train, self.valid = train, valid
        self.rows = BinaryRows(train, model.device)  # minibatch rows -> (B, I) visible
        self.energy_gap = FreeEnergyGap(train, valid, self.config.seed, model.device)
        n_items = train.shape[1]
        model.init_params(n_items, self.gen, train)
        self._init_velocities()
        cfg = self.config
        if cfg.persistent:
            self.chain = torch.bernoulli(
                torch.full((cfg.batch_size, n_items), 0.5), generator=self.gen
            ).to(model.device)
            if self.dp is not None:  # each rank keeps its own share of the chains
                self.chain = self.dp.local_block(self.chain)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, model, train = self.config, self.model, self.train
        n_users = train.shape[0]
        k = cfg.k_at(epoch)
        order = torch.randperm(n_users, generator=self.gen).numpy()
        batches = EpochBatches(
            order, cfg.batch_size, desc=self.desc, epoch=epoch, epochs=cfg.epochs,
            enabled=self.progress,
        )
        recon, seen = 0.0, 0
        for step, rows in batches:
            if self.dp is not None:  # this rank's slice (PCD: draws for its chains)
                draws = cfg.batch_size if cfg.persistent else None
                rows = self.dp.local(rows, self.dev_gen, draws_for=draws)
            v0 = self.rows(rows)  # (B, I)
            grads, vk, rec = model.cd_step(v0, k, self.dev_gen, self.chain)
            if cfg.persistent:
                self.chain = vk
            self.step(grads, epoch, step)
            with torch.no_grad():
                if rec is None:  # PCD or k = 0: one extra mean-field pass
                    rec = visible_prob(hidden_prob(v0, model.W, model.c), model.W, model.b)
                recon += float(((v0 - rec) ** 2).sum())
                seen += v0.numel()
        if self.dp is not None:
            recon, seen = self.dp.sum(recon, seen)
        metrics = {
            "cd_k": k,
            "learning_rate": self.lr,
            "reconstruction_error": recon / max(1, seen),
        }
        metrics.update(self.energy_gap(model))
        self.lr *= cfg.lr_decay
        return metrics


class FreeEnergyGap:
    """Mean per-item free energy of a fixed sample of users' training and validation profiles,
    and their gap (it widens as the model overfits; Hinton 2010 sec. 6): an epoch metric.

    The sample (up to 500 users with a validation item, drawn once from ``seed``) is kept as two
    sparse CSR histories, so each epoch costs two sparse products, not a densification of both
    profiles; the same users every epoch make the curve comparable across epochs.
    """

    def __init__(
        self, train: sp.csr_matrix, valid: sp.csr_matrix | None, seed: int, device: torch.device
    ) -> None:
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        if valid is None or valid.nnz == 0:
            return
        rows = np.flatnonzero(valid.getnnz(axis=1) > 0)
        rng = np.random.default_rng(seed)
        sample = rng.choice(rows, size=min(500, rows.size), replace=False)
        for m in (train, valid):
            v = binary_rows(m[sample])  # as RBM.visible reads the rows
            n = torch.as_tensor(v.getnnz(axis=1), dtype=torch.float32, device=device)
            self.parts.append((csr_to_torch(v, device), n.clamp(min=1)))  # (S, I), (S,)

    def __call__(self, model: RBM) -> dict[str, float]:
        """``free_energy_train``, ``free_energy_valid``, ``free_energy_gap``; empty without
        validation data."""
        if not self.parts:
            return {}
        out = []
        with torch.no_grad():
            # F(v) = -b.v - sum_j softplus(c_j + (vW)_j), from one product with [W, b] (I, H + 1)
            wb = torch.cat([model.W, model.b[:, None]], 1)
            for hist, n in self.parts:
                vwb = torch.sparse.mm(hist, wb)  # (S, H + 1)
                f = -vwb[:, -1] - F.softplus(vwb[:, :-1] + model.c).sum(dim=1)  # (S,)
                out.append(float((f / n).mean()))  # per item: profiles differ in length
        return {
            "free_energy_train": out[0],
            "free_energy_valid": out[1],
            "free_energy_gap": out[0] - out[1],
        }


def train_rbm(
    model: RBM,
    train: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    *,
    monitor: Monitor | None,
    callback: EpochCallback | None = None,
    progress: bool = False,
    checkpoint_dir: Any = None,
) -> TrainingResult:
    """Fit ``model`` in place with the shared loop; ``monitor`` is its validation NDCG@10."""
    cfg = model.config
    if getattr(cfg, "objective", "cd") == "cd":
        task: RBMTrainer = RBMTrainer(model, train, valid, progress=progress)
        loss_name = "reconstruction_error"
    else:  # the conditional objectives (their module imports this one)
        from recsys_ebm.models._rbm_conditional import ConditionalTrainer

        task = ConditionalTrainer(model, train, valid, progress=progress)
        loss_name = "conditional_nll"
    return run_training(
        task,
        epochs=cfg.epochs,
        fingerprint=checkpoint_fingerprint(cfg, train),
        monitor=monitor,
        monitor_name="valid_ndcg@10",
        maximize=True,
        patience=cfg.patience,
        validate_every=cfg.validate_every,
        max_abs_param=cfg.max_abs_param,
        who=type(model).__name__,
        hint=task.hint,
        callback=callback,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        desc=task.desc,
        loss_name=loss_name,
        average=cfg.average,
    )
