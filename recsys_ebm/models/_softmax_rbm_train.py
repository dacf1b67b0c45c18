"""Minibatch CD-k / PCD-k epochs of the softmax RBMs (:mod:`recsys_ebm.models.softmax_rbm`), run by
the shared loop (:func:`recsys_ebm.models.training.run_training`).

Per epoch, users are shuffled with the seeded generator. A minibatch is gathered straight from
the CSR arrays of level codes as aligned (nnz,) vectors (row, item, level); the whole matrix is
never densified, not even one (B, I, K) block. The gradient is the CD-k estimate of Salakhutdinov
et al. (2007, eq. 6), averaged over the minibatch's users, applied with momentum and L2 weight
decay on W (Hinton, "A Practical Guide to Training RBMs", 2010, secs. 9-10). Validation RMSE
(each validation rating predicted exactly from the user's training ratings) drives early stopping;
the best epoch's parameters are kept. With a checkpoint directory, the whole training state
(parameters, velocities, persistent chains, generators, curves, best epoch) is saved atomically
after every epoch, and a rerun resumes from it to the same parameters as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.io import checkpoint_fingerprint
from recsys_ebm.models._rbm_train import CDTrainer
from recsys_ebm.models.training import (
    EpochBatches,
    EpochCallback,
    TrainingResult,
    run_training,
)

if TYPE_CHECKING:
    from recsys_ebm.models.softmax_rbm import SoftmaxRBM

__all__ = ["SoftmaxRBMTrainer", "batch_entries", "rmse_monitor", "train_softmax_rbm"]


def batch_entries(codes: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``codes.data`` of the users' entries, and each entry's row in the batch.

    Vectorised gather of CSR rows: (nnz_batch,) positions and (nnz_batch,) batch-row indices.
    """
    starts = codes.indptr[users]
    lens = codes.indptr[users + 1] - starts
    offsets = np.cumsum(lens) - lens
    total = int(lens.sum())
    pos = np.arange(total) - np.repeat(offsets, lens) + np.repeat(starts, lens)
    return pos, np.repeat(np.arange(len(users)), lens)


def rmse_monitor(
    model: SoftmaxRBM, codes: sp.csr_matrix, valid: sp.csr_matrix | None
) -> Callable[[], float] | None:
    """The validation RMSE monitor: each call predicts every validation entry exactly from the
    training ratings (``codes``, level codes; ``valid``, rating values; both cases x units).
    None without validation ratings."""
    if valid is None or valid.nnz == 0:
        return None

    def monitor() -> float:
        users = np.flatnonzero(valid.getnnz(axis=1) > 0)
        v = valid[users].tocoo()
        pred = model.predict_from_codes(codes[users], v.row, v.col)
        return float(np.sqrt(np.mean((pred - v.data) ** 2)))

    return monitor


class SoftmaxRBMTrainer(CDTrainer):
    """Epochs of a softmax RBM on level codes (module docstring).

    Under torchrun (``data_parallel``) each rank takes its contiguous slice of every global
    minibatch of cases, the hidden and level samples are drawn for the global batch
    (:class:`~recsys_ebm.models.distributed.GlobalBatchGenerator`), and the gradients are
    all-reduced, so the parameters equal a 1-process run's. PCD's fantasy levels (one per
    rating) live on every rank; each rank advances those of its own cases, and at the end of
    each epoch, when every case has been visited once, the ranks' levels are summed into one
    chain (each rating's level comes from the one rank that visited it).
    """

    #: runs under torchrun: shards each global batch, all-reduces (models/distributed.py)
    data_parallel = True

    def __init__(self, model: SoftmaxRBM, codes: sp.csr_matrix, *, progress: bool) -> None:
        super().__init__(model, progress=progress, desc="train softmax-rbm")
        cfg, dev = self.config, model.device
        self.codes = codes
        model.init_params(codes.shape[1], self.gen, codes)
        self._init_velocities()
        self.items_all = torch.as_tensor(codes.indices.astype(np.int64), device=dev)  # (nnz,)
        self.levels_all = torch.as_tensor(codes.data.astype(np.int64) - 1, device=dev)  # (nnz,)
        # PCD: one fantasy rating per entry
        self.chain = self.levels_all.clone() if cfg.persistent else None
        self.level_values = torch.as_tensor(model.rating_levels, dtype=torch.float32, device=dev)
        self.n_ratings = np.diff(codes.indptr)  # (cases,) ratings per case
        self.active = np.flatnonzero(self.n_ratings > 0)  # cases with >= 1 rating

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, model, dev = self.config, self.model, self.model.device
        k = cfg.k_at(epoch)
        order = self.active[torch.randperm(self.active.size, generator=self.gen).numpy()]
        batches = EpochBatches(
            order, cfg.batch_size, desc=self.desc, epoch=epoch, epochs=cfg.epochs,
            enabled=self.progress,
        )
        sq_err, n_seen = 0.0, 0
        dp = self.dp
        touched = None  # PCD under torchrun: (nnz,) the ratings this rank advanced this epoch
        if dp is not None and self.chain is not None:
            touched = torch.zeros(self.chain.shape[0], dtype=torch.bool, device=dev)
        for step, users in batches:
            if dp is not None:  # this rank's cases; the draws are the global batch's
                counts = self.n_ratings[users]  # (n,) ratings per case
                users = dp.local(users, self.dev_gen)
                dp.local_entries(counts, self.dev_gen)
            pos_np, rows_np = batch_entries(self.codes, users)
            pos = torch.as_tensor(pos_np, device=dev)
            rows = torch.as_tensor(rows_np, device=dev)
            items, lv0 = self.items_all[pos], self.levels_all[pos]
            start = None if self.chain is None else self.chain[pos]
            grads, lvk, recon = model.cd_step(rows, items, lv0, len(users), k, self.dev_gen, start)
            if self.chain is not None:
                self.chain[pos] = lvk
                if touched is not None:
                    touched[pos] = True
            self.step(grads, epoch, step)
            with torch.no_grad():
                if recon is not None:  # expected rating of the first reconstruction
                    err = recon @ self.level_values - self.level_values[lv0]
                    sq_err += float((err**2).sum())
                    n_seen += int(err.numel())
        if dp is not None:
            sq_err, n_seen = dp.sum(sq_err, n_seen)
            if touched is not None:  # one chain again: each rating from the rank that ran it
                assert self.chain is not None
                mine = {"chain": torch.where(touched, self.chain, 0).double()}
                self.chain = dp.all_reduce(mine, weight=1.0)["chain"].round().long()
        metrics: dict[str, float] = {"cd_k": k, "learning_rate": self.lr}
        if n_seen:
            metrics["reconstruction_rmse"] = (sq_err / n_seen) ** 0.5
        self.lr *= cfg.lr_decay
        return metrics


    def _global_chain(self) -> torch.Tensor | None:
        """PCD's (nnz,) fantasy levels: already one chain on every rank (merged each epoch)."""
        return self.chain

    def _local_chain(self, chain: torch.Tensor) -> torch.Tensor:
        return chain


def train_softmax_rbm(
    model: SoftmaxRBM,
    codes: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    *,
    callback: EpochCallback | None = None,
    progress: bool = False,
    checkpoint_dir: Any = None,
) -> TrainingResult:
    """Fit ``model`` in place on ``codes`` (cases x units CSR, data = level index + 1) with the
    shared loop, early-stopping on the RMSE of ``valid`` (rating values, cases x units, or
    None)."""
    cfg = model.config
    task = SoftmaxRBMTrainer(model, codes, progress=progress)
    levels = [float(x) for x in model.rating_levels]
    return run_training(
        task,
        epochs=cfg.epochs,
        fingerprint=checkpoint_fingerprint(cfg, codes, levels=levels),
        monitor=rmse_monitor(model, codes, valid),
        monitor_name="valid_rmse",
        maximize=False,
        patience=cfg.patience,
        average=cfg.average,
        max_abs_param=cfg.max_abs_param,
        who=type(model).__name__,
        hint=task.hint,
        callback=callback,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        desc=task.desc,
        loss_name="reconstruction_rmse",
    )
