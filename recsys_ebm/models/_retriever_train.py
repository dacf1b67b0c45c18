"""Minibatch epochs of :class:`~recsys_ebm.models.retriever.Retriever`, run by the shared loop
(:func:`recsys_ebm.models.training.run_training`). ``objective="user"`` (the default) runs
:func:`~recsys_ebm.models._retriever_objective.user_epoch`; what follows is the per-interaction
InfoNCE epoch of ``objective="interaction"``.

An epoch is one pass over the training interactions in a seeded random order. Each interaction
(u, i+) is one example: i+ is the positive and the rest of u's training history is the input the
user tower encodes (leave-one-out within the training split; valid and test are never inputs).
Candidates are the batch's positives plus optional sampled negatives; accidental hits (any
candidate in the anchor's training positives) are masked and logits carry the logQ correction
(see :mod:`._retriever_loss`). Adam; bf16 autocast where bf16 products are native (CUDA, and
CPUs with AVX512-BF16 or AMX: :func:`recsys_ebm.device.native_bf16`); early stopping on
validation NDCG@10 (history = train, target = valid) keeping the best epoch's weights; a dict
checkpoint (weights, optimizer, generator, curves) written atomically after every epoch and
resumed from when present.
Every random choice comes from one seeded CPU ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.device import native_bf16
from recsys_ebm.diagnostics import DivergenceError
from recsys_ebm.io import checkpoint_fingerprint
from recsys_ebm.models._retriever_loss import (
    NegativeSampler,
    accidental_hit_mask,
    info_nce,
    log_expected_counts,
)
from recsys_ebm.models._retriever_objective import user_epoch
from recsys_ebm.models._retriever_towers import lookup, sparse_history
from recsys_ebm.models._spectral import spectral_item_vectors
from recsys_ebm.models.distributed import current as current_data_parallel
from recsys_ebm.models.training import (
    EpochBatches,
    EpochCallback,
    TrainingResult,
    check_parameters,
    run_training,
)
from recsys_ebm.models.validation import ndcg_monitor

if TYPE_CHECKING:
    from recsys_ebm.models.retriever import Retriever

__all__ = ["RetrieverTrainer", "batch_history", "train_retriever"]


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def batch_history(
    train: sp.csr_matrix,
    users: np.ndarray,
    held_out: np.ndarray,
    dropout: float,
    generator: torch.Generator,
) -> sp.coo_matrix:
    """(B, I) binary COO: each user's training row minus their held-out positive.

    With ``dropout`` > 0 every remaining item is also dropped independently with that probability.
    """
    coo = train[users].tocoo()
    keep = coo.col != held_out[coo.row]
    if dropout > 0:
        u = torch.rand(coo.nnz, generator=generator).numpy()
        keep &= u >= dropout
    return sp.coo_matrix(
        (np.ones(int(keep.sum()), np.float32), (coo.row[keep], coo.col[keep])), shape=coo.shape
    )


def check_weights(net: torch.nn.Module, limit: float, epoch: int, step: int, lr: float) -> None:
    """Divergence guard: every weight finite and within ``limit``.

    Weights of 1e9 are finite but break the model silently: cosine similarity squares them, the
    squared norm overflows to inf and every vector normalises to 0 (all energies 0).
    """
    check_parameters(
        dict(net.named_parameters()), limit, who="Retriever", epoch=epoch, step=step, lr=lr
    )


class RetrieverTrainer:
    """The retriever's training state (a ``Trainable``, see :mod:`recsys_ebm.models.capabilities`):
    the two-tower net, Adam, the seeded CPU generator, and the fixed inputs of an epoch (the
    examples, the negative sampler, the in-batch frequencies)."""

    desc = "train retriever"
    #: runs under torchrun: shards each global batch, gathers its positives as every rank's
    #: in-batch negatives, all-reduces (models/distributed.py)
    data_parallel = True

    def __init__(
        self,
        model: Retriever,
        train: sp.csr_matrix,
        features: torch.Tensor | None,
        *,
        progress: bool,
    ) -> None:
        cfg = model.config
        self.model, self.config, self.train, self.progress = model, cfg, train, progress
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        n_users, n_items = train.shape
        counts = np.asarray(train.getnnz(axis=0), dtype=np.int64)  # (I,)
        model.n_items = n_items
        self.net = model.build_net(
            n_items, n_users, features, torch.as_tensor(counts > 0), self.gen
        )
        if cfg.init == "spectral":  # every rank draws the same block: the same start
            vecs = spectral_item_vectors(train, cfg.embedding_size, self.gen)  # (I, D)
            with torch.no_grad():
                for table in (self.net.id_emb, self.net.in_emb):
                    if table is not None:
                        table[:n_items] = vecs.to(table.device, table.dtype)
        model.net = self.net
        # fused: one kernel for every parameter (a third of the per-step optimizer time on CPU)
        self.opt = torch.optim.Adam(
            self.net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
            fused=True,
        )
        self.sampler = None
        if cfg.negatives != "none":
            self.sampler = NegativeSampler(counts, cfg.negatives, cfg.popularity_alpha)
        self.active_users = np.flatnonzero(np.diff(train.indptr) > 0)  # (U',) users with items
        self.freq = torch.as_tensor(counts / counts.sum(), dtype=torch.float64)  # in-batch rate
        self.probs = None if self.sampler is None else self.sampler.probs
        coo = train.tocoo()
        self.ex_users = coo.row.astype(np.int64)  # (N,) examples
        self.ex_items = coo.col.astype(np.int64)
        # bf16 autocast where bf16 products are native (CUDA, AVX512-BF16 / AMX CPUs)
        self.amp = cfg.mixed_precision and native_bf16(model.device)
        self.dp = current_data_parallel()  # data-parallel rank or None

    def check(self, epoch: int, step: int) -> None:
        """The divergence guard after an optimiser step."""
        check_weights(self.net, self.config.max_abs_param, epoch, step, self.config.learning_rate)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        if self.config.objective == "user":
            return user_epoch(self, epoch)
        cfg, net, gen, train = self.config, self.net, self.gen, self.train
        dev = self.model.device
        n_items = train.shape[1]
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(self.ex_users), generator=gen).numpy()
        batches = EpochBatches(
            perm, cfg.batch_size, desc=self.desc, epoch=epoch, epochs=cfg.epochs,
            enabled=self.progress,
        )
        total, n_seen = 0.0, 0
        for step, idx in batches:
            users, pos = self.ex_users[idx], self.ex_items[idx]  # (B,)
            b = len(idx)
            hist = batch_history(train, users, pos, cfg.history_dropout, gen)  # global draws
            mine = slice(None)  # this rank's rows of the global batch (all without torchrun)
            if self.dp is not None:
                mine = slice(*self.dp.bounds(b))
                self.dp.local(idx)  # records the split for the all-reduce's weights
                hist = hist.tocsr()[mine]
            hist = sparse_history(hist, dev)
            cands = torch.as_tensor(pos)
            if self.sampler is not None:
                cands = torch.cat([cands, self.sampler.sample(cfg.n_negatives, gen)])  # (C,)
            labels = torch.arange(b)[mine]
            mask = accidental_hit_mask(train, users[mine], cands.numpy(), labels.numpy())  # (B, C)
            log_q = None
            if cfg.logq_correction:
                log_q = log_expected_counts(cands, b, cfg.n_negatives, self.freq, self.probs)
                log_q = log_q.to(dev)
            uid = None
            if net.user_emb is not None:
                uid = torch.as_tensor(users)
                if cfg.user_id_dropout > 0:
                    drop = torch.rand(b, generator=gen) < cfg.user_id_dropout
                    uid = uid.masked_fill(drop, -1)
                uid = uid[mine].to(dev)
            id_drop = None
            if cfg.item_id_dropout > 0:
                id_drop = (torch.rand(n_items, generator=gen) < cfg.item_id_dropout).to(dev)
            autocast = (
                torch.autocast(dev.type, dtype=torch.bfloat16)
                if self.amp
                else contextlib.nullcontext()
            )
            with autocast:
                table = net.item_table(which="out", id_drop=id_drop)  # (I, D)
                in_table = (
                    table if net.in_emb is None else net.item_table(which="in", id_drop=id_drop)
                )
                u = net.encode(hist, uid, in_table)  # (B, D)
                if self.dp is None:
                    v = net.normalize(lookup(table, cands.to(dev)))  # (C, D)
                else:  # the ranks' positives, gathered with autograd, then the shared negatives
                    mine_v = net.normalize(lookup(table, cands[:b][mine].to(dev)))  # (B_r, D)
                    v = torch.cat(
                        [
                            self.dp.gather_rows(mine_v, b),  # (B, D)
                            net.normalize(lookup(table, cands[b:].to(dev))),  # (S, D)
                        ]
                    )
                energies = net.energy(u, v, net.biases(id_drop, cands.to(dev)))  # (B, C)
            loss = info_nce(
                energies,
                labels.to(dev),
                mask=torch.as_tensor(mask, device=dev),
                log_q=log_q,
            )
            if self.dp is None:
                loss_value = float(loss.detach())
            else:  # backward and all-reduce now; the global batch's loss
                loss_value = self.dp.backward(loss, energies, self.opt, net)
            if not np.isfinite(loss_value):
                raise DivergenceError(
                    f"Retriever diverged at epoch {epoch + 1}, step {step + 1}: the InfoNCE loss "
                    f"is {loss_value}; lower learning_rate (now {cfg.learning_rate:g}) or raise "
                    "temperature; nothing was saved"
                )
            if self.dp is None:
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
            self.opt.step()
            check_weights(net, cfg.max_abs_param, epoch, step, cfg.learning_rate)
            total += loss_value * b
            n_seen += b
            batches.set_postfix(loss=total / n_seen)
        # the monitor ranks with the net as it now stands
        net.eval()
        self.model.invalidate_cache()
        return {
            "loss": total / max(1, n_seen),
            "temperature": float(net.tau().detach()),
            "epoch_seconds": time.perf_counter() - t0,
        }

    # ----------------------------------------------------------------- Trainable state hooks
    def parameters_to_check(self) -> dict[str, torch.Tensor]:
        return dict(self.net.named_parameters())

    def snapshot(self) -> dict[str, torch.Tensor]:
        return _cpu(self.net.state_dict())

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": _cpu(self.net.state_dict()),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.net.load_state_dict(st["net"])
        self.opt.load_state_dict(st["opt"])
        self.gen.set_state(st["gen"])


def train_retriever(
    model: Retriever,
    train: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    *,
    features: torch.Tensor | None,
    callback: EpochCallback | None = None,
    progress: bool = False,
    checkpoint_dir: Any = None,
) -> TrainingResult:
    """Fit ``model.net`` in place with the shared loop (module docstring), early-stopping on
    validation NDCG@10 (ranking ``valid`` from ``train``), and set ``model.fit_info``.

    Raises:
        DivergenceError: the loss or a weight became NaN/inf or exceeded ``max_abs_param``.
    """
    cfg = model.config
    task = RetrieverTrainer(model, train, features, progress=progress)
    desc = "validate retriever" if progress else None
    monitor = ndcg_monitor(model, train, valid, progress_desc=desc)
    result = run_training(
        task,
        epochs=cfg.epochs,
        fingerprint=checkpoint_fingerprint(cfg, train),
        monitor=monitor,
        monitor_name="valid_ndcg@10",
        maximize=True,
        patience=cfg.patience,
        validate_every=cfg.validate_every,
        max_abs_param=cfg.max_abs_param,
        who="Retriever",
        callback=callback,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        desc=task.desc,
        loss_name="loss",
    )
    net, n_items = task.net, train.shape[1]
    if cfg.item_id_dropout == 0:  # the OOV row was never trained: the mean warm embedding
        with torch.no_grad():
            warm = net.warm
            for table in (net.id_emb, net.in_emb):
                if table is not None and warm.any():
                    table[n_items] = table[:n_items][warm].mean(0)
            if net.item_bias is not None and warm.any():  # and the mean warm log-prior
                net.item_bias[n_items] = net.item_bias[:n_items][warm].mean()
    net.eval()
    model.invalidate_cache()
    history = result.history
    secs = [h["epoch_seconds"] for h in history]
    restored = result.best_epoch is not None
    model.fit_info = {
        "history": history,
        "epochs_run": len(history),
        "best_epoch": result.best_epoch if restored else len(history) - 1,
        "best_valid_ndcg@10": result.best_score,
        "mean_epoch_seconds": float(np.mean(secs)) if secs else 0.0,
        "temperature": float(net.tau().detach()),
    }
    return result
