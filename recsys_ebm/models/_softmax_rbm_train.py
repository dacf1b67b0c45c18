"""Minibatch CD-k / PCD-k training loop for :class:`~recsys_ebm.models.softmax_rbm.SoftmaxRBM`.

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

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.io import checkpoint_fingerprint, resume_checkpoint, save_checkpoint
from recsys_ebm.models._rbm_train import (
    BestEpoch,
    check_params,
    momentum_step,
    pack_state,
    unpack_state,
)
from recsys_ebm.progress import progress as make_progress

__all__ = ["batch_entries", "train_softmax_rbm"]


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


def _valid_rmse(model: Any, codes: sp.csr_matrix, valid: sp.csr_matrix) -> float:
    """RMSE of the expected rating of every validation entry given the training ratings."""
    users = np.flatnonzero(valid.getnnz(axis=1) > 0)
    v = valid[users].tocoo()
    pred = model._predict_from_codes(codes[users], v.row, v.col)
    return float(np.sqrt(np.mean((pred - v.data) ** 2)))


def train_softmax_rbm(
    model: Any,
    codes: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    *,
    callback: Any = None,
    progress: bool = False,
    checkpoint_dir: Path | None = None,
) -> None:
    """Fit ``model`` in place on ``codes`` (users x items CSR, data = level index + 1).

    ``valid`` holds rating values (users x items) for early stopping, or None.
    """
    cfg = model.config
    dev = model.device
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    dev_gen = gen if dev.type == "cpu" else torch.Generator(dev).manual_seed(cfg.seed)
    n_users, n_items = codes.shape
    model.init_params(n_items, gen, codes)
    n_k = model.W.shape[1]
    items_all = torch.as_tensor(codes.indices.astype(np.int64), device=dev)  # (nnz,)
    levels_all = torch.as_tensor(codes.data.astype(np.int64) - 1, device=dev)  # (nnz,)
    chain = levels_all.clone() if cfg.persistent else None  # PCD: one fantasy rating per entry
    level_values = torch.as_tensor(model.rating_levels, dtype=torch.float32, device=dev)  # (K,)
    vel = {n: torch.zeros_like(getattr(model, n)) for n in ("W", "b", "c")}
    active = np.flatnonzero(codes.getnnz(axis=1) > 0)  # users with at least one rating
    history: list[dict[str, float]] = []
    best = BestEpoch(maximize=False)  # validation RMSE
    lr, start = cfg.learning_rate, 0
    levels = [float(x) for x in model.rating_levels]
    fingerprint = checkpoint_fingerprint(cfg, codes, levels=levels)
    st = resume_checkpoint(checkpoint_dir, fingerprint)
    if st is not None:
        chain, best_params = unpack_state(model, st, vel, gen, dev_gen)
        history, lr, start = st["history"], st["lr"], st["epoch"] + 1
        best.resume(st, best_params)
    bar = make_progress(
        cfg.epochs, desc="train softmax-rbm", unit="epoch", enabled=progress, initial=start
    )
    for epoch in range(start, cfg.epochs):
        k = cfg.k_at(epoch)
        momentum = 0.5 if epoch < 5 else cfg.momentum
        order = active[torch.randperm(active.size, generator=gen).numpy()]
        batches = make_progress(
            range(0, order.size, cfg.batch_size),
            desc=f"train softmax-rbm epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            enabled=progress,
            leave=False,
        )
        sq_err, n_seen = 0.0, 0
        for step, s in enumerate(batches):
            users = order[s : s + cfg.batch_size]
            pos_np, rows_np = batch_entries(codes, users)
            pos = torch.as_tensor(pos_np, device=dev)
            rows = torch.as_tensor(rows_np, device=dev)
            items, lv0 = items_all[pos], levels_all[pos]
            start = None if chain is None else chain[pos]
            grads, lvk, recon = model.cd_step(rows, items, lv0, len(users), k, dev_gen, start)
            if chain is not None:
                chain[pos] = lvk
            momentum_step(model, grads, vel, lr, momentum, cfg.weight_decay)
            check_params(model, epoch, step, lr)
            with torch.no_grad():
                if recon is not None:  # expected rating of the first reconstruction
                    err = recon @ level_values - level_values[lv0]
                    sq_err += float((err**2).sum())
                    n_seen += int(err.numel())
        check_params(model, epoch, lr=lr)
        metrics: dict[str, float] = {"epoch": epoch, "cd_k": k, "learning_rate": lr}
        if n_seen:
            metrics["reconstruction_rmse"] = (sq_err / n_seen) ** 0.5
        if valid is not None and valid.nnz:
            metrics["valid_rmse"] = _valid_rmse(model, codes, valid)
        history.append(metrics)
        if callback is not None:
            callback(epoch, {k_: v for k_, v in metrics.items() if k_ != "epoch"})
        best.update(model, metrics.get("valid_rmse"), epoch)
        lr *= cfg.lr_decay
        if checkpoint_dir is not None:
            state = pack_state(
                model,
                vel,
                chain,
                gen,
                dev_gen,
                best.params,
                history=history,
                epoch=epoch,
                lr=lr,
                fingerprint=fingerprint,
                **best.fields(),
            )
            save_checkpoint(checkpoint_dir, state)
        shown = {}
        if "reconstruction_rmse" in metrics:
            shown["loss"] = metrics["reconstruction_rmse"]
        if "valid_rmse" in metrics:
            shown["valid rmse"] = metrics["valid_rmse"]
        bar.update(1, **shown)
        if cfg.patience and best.bad >= cfg.patience:
            bar.write(f"early stop at epoch {epoch + 1}: no gain in {cfg.patience} epochs")
            break
    bar.close()
    best.restore(model)
    model.fit_info = {
        "history": history,
        "epochs_run": len(history),
        "best_valid_rmse": best.score,
        "best_epoch": best.epoch,
        "n_levels": n_k,
    }
