"""The retriever's user-level objective (``objective="user"``): one row per user per step.

Each step takes a batch of users. Every user's training history is split at random into an
input part, which the user tower encodes, and a held-out target part (each item is a target with
probability ``holdout_fraction``, at least one per user), and the loss is the negative
log-likelihood of the targets under the conditional EBM p(i | input) ∝ exp(-E(u, i))
(:func:`~recsys_ebm.models._retriever_loss.multi_positive_softmax`): a denoising, multi-target
objective in the manner of Mult-DAE (Liang et al., WWW 2018), but the input items are not
targets: they are known positives, removed from the softmax (the accidental hits) as they are
masked when ranking, so the model is trained for exactly the conditional it is ranked by.

Candidates:

* **full** (the catalogue has at most ``full_softmax_max_items`` items, or
  ``softmax="full"``): the exact softmax over every item, no sampling and no correction;
* **sampled** beyond that: the batch's distinct targets plus ``n_negatives`` draws of the
  negative sampler, de-duplicated, each logit corrected by its log inclusion probability
  (:func:`~recsys_ebm.models._retriever_loss.log_inclusion`); a row's own targets are in the
  set for sure (log pi = 0).

Why per user rather than per interaction: the catalogue softmax is computed once per user and
scores every target at once (a step costs B x I x D, not one row per interaction), and each user
weighs the same in the loss, as in the NDCG averaged over users.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.diagnostics import DivergenceError
from recsys_ebm.models._retriever_loss import (
    log_inclusion,
    multi_positive_softmax,
    target_softmax_each,
)
from recsys_ebm.models._retriever_towers import (
    PairedHistory,
    canonical_csr,
    csr_ones,
    lookup,
    sparse_history,
)
from recsys_ebm.models.training import EpochBatches

if TYPE_CHECKING:
    from recsys_ebm.models._retriever_train import RetrieverTrainer

__all__ = [
    "holdout_split",
    "sampled_candidates",
    "split_entries",
    "use_full_softmax",
    "user_epoch",
]


def split_entries(
    rows: sp.csr_matrix, fraction: float, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nnz,) row, column and target flag of every entry of (B, I) histories, row-major.

    Each item is a target with probability ``fraction``; a non-empty row that drew no target
    gives its item with the smallest draw (so every non-empty row has a target; a one-item row's
    input is empty, as a new user's). One float64 draw per entry, in row-major order.
    """
    rows = canonical_csr(rows)  # sorted, distinct columns per row
    n_rows = rows.shape[0]
    r = np.repeat(np.arange(n_rows), np.diff(rows.indptr))  # (nnz,)
    c = rows.indices.astype(np.int64, copy=False)
    u = torch.rand(len(r), generator=generator, dtype=torch.float64).numpy()  # (nnz,)
    tgt = u < fraction
    has = np.zeros(n_rows, dtype=bool)
    has[r[tgt]] = True
    if not has[r].all():
        # the smallest draw of each row: first entry after sorting by (row, draw)
        by_draw = np.lexsort((u, r))
        first = by_draw[np.r_[True, r[by_draw][1:] != r[by_draw][:-1]]]
        tgt[first[~has[r[first]]]] = True
    return r, c, tgt


def holdout_split(
    rows: sp.csr_matrix, fraction: float, generator: torch.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(B, I) binary ``(inputs, targets)`` CSR from (B, I) histories (:func:`split_entries`)."""
    r, c, tgt = split_entries(rows, fraction, generator)
    ones = np.ones
    inputs = sp.csr_matrix(
        (ones(int((~tgt).sum()), np.float32), (r[~tgt], c[~tgt])), shape=rows.shape
    )
    targets = sp.csr_matrix((ones(int(tgt.sum()), np.float32), (r[tgt], c[tgt])), shape=rows.shape)
    return inputs, targets


def _dense(m: sp.csr_matrix, cols: np.ndarray | None, n_cols: int) -> torch.Tensor:
    """(B, C) bool of ``m``'s entries; ``cols`` maps item -> candidate column (-1 = absent)."""
    coo = m.tocoo()
    c = coo.col if cols is None else cols[coo.col]
    keep = c >= 0
    out = torch.zeros(m.shape[0], n_cols, dtype=torch.bool)
    out[torch.as_tensor(coo.row[keep]), torch.as_tensor(c[keep])] = True
    return out


def sampled_candidates(
    inputs: sp.csr_matrix,
    targets: sp.csr_matrix,
    negatives: torch.Tensor,
    log_pi: torch.Tensor | Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """De-duplicated candidates of a sampled-softmax step and their per-row tensors.

    Args:
        inputs, targets: (B, I) CSR of the split histories.
        negatives: (S,) sampled item indices.
        log_pi: a callable (C,) items -> (C,) log inclusion probabilities.

    Returns:
        cands (C,) sorted distinct items; targets (B, C) bool; mask (B, C) bool (the row's input
        items); log_q (B, C) (0 at the row's own targets, which are in the set for sure).
    """
    items = np.union1d(targets.indices, negatives.numpy())  # (C,) sorted, distinct
    col = np.full(targets.shape[1], -1, dtype=np.int64)
    col[items] = np.arange(len(items))
    cands = torch.as_tensor(items, dtype=torch.long)
    tmask = _dense(targets, col, len(items))  # (B, C)
    mask = _dense(inputs, col, len(items))
    log_q = log_pi(cands)[None, :].expand(tmask.shape).masked_fill(tmask, 0.0)  # (B, C)
    return cands, tmask, mask, log_q


def use_full_softmax(config: Any, n_items: int) -> bool:
    """Whether ``objective="user"`` uses the exact catalogue softmax for ``n_items`` items."""
    if config.softmax == "auto":
        return n_items <= config.full_softmax_max_items
    return config.softmax == "full"


def _full_each_batch(
    rows: sp.csr_matrix, lo: int, hi: int, fraction: float, gen: torch.Generator, dev: torch.device
) -> tuple[PairedHistory, torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's rows [lo, hi) of a global batch, for the exact catalogue softmax in ``"each"``
    mode: (B_r, I) sparse inputs (with their transpose), (B_r, I) bool history (targets and
    inputs, out of every denominator) and the (T,) targets' rows and columns. The split draws
    cover the global batch (every rank's generator stays in step)."""
    r, c, tgt = split_entries(rows, fraction, gen)  # (nnz,) of the global batch
    if (lo, hi) != (0, rows.shape[0]):  # a rank's share (row-major: one contiguous run)
        a, b = np.searchsorted(r, [lo, hi])
        r, c, tgt = r[a:b] - lo, c[a:b], tgt[a:b]
    shape = (hi - lo, rows.shape[1])
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    flat[r * shape[1] + c] = True
    removed = torch.from_numpy(flat).view(shape)  # (B_r, I)
    t_rows = torch.as_tensor(r[tgt]).to(dev)
    t_cols = torch.as_tensor(c[tgt]).to(dev)
    r_in, c_in = r[~tgt], c[~tgt]  # the inputs, row-major: their CSR structure
    indptr = np.r_[0, np.cumsum(np.bincount(r_in, minlength=shape[0]))]
    order = np.argsort(c_in, kind="stable")  # the transpose's, for the pooling's backward
    t_indptr = np.r_[0, np.cumsum(np.bincount(c_in, minlength=shape[1]))]
    hist = PairedHistory(
        csr_ones(indptr, c_in, shape, dev), csr_ones(t_indptr, r_in[order], shape[::-1], dev)
    )
    return hist, removed.to(dev), t_rows, t_cols


def user_epoch(task: RetrieverTrainer, epoch: int) -> dict[str, float]:
    """One pass over the users with a training item, in a seeded random order (module doc)."""
    cfg, net, gen, train = task.config, task.net, task.gen, task.train
    dev = task.model.device
    n_items = train.shape[1]
    full = use_full_softmax(cfg, n_items)
    # the exact softmax in "each" mode runs from index form: no (B, I) target / input masks
    by_index = full and cfg.target_softmax == "each"
    t0 = time.perf_counter()
    net.train()
    perm = task.active_users[torch.randperm(len(task.active_users), generator=gen).numpy()]
    batches = EpochBatches(
        perm, cfg.batch_size, desc=task.desc, epoch=epoch, epochs=cfg.epochs,
        enabled=task.progress,
    )
    total, n_seen = 0.0, 0
    for step, users in batches:  # users: (B,) the global batch
        b = len(users)
        lo, hi = (0, b) if task.dp is None else task.dp.bounds(b)
        mine = slice(lo, hi)  # this rank's rows of the global batch (all without torchrun)
        if by_index:
            hist, removed, t_rows, t_cols = _full_each_batch(
                train[users], lo, hi, cfg.holdout_fraction, gen, dev
            )
            cands = None
        else:
            inputs, targets = holdout_split(train[users], cfg.holdout_fraction, gen)
            if full:
                log_q = cands = None
                tmask = _dense(targets, None, n_items)  # (B, I)
                mask = _dense(inputs, None, n_items)
            else:
                neg, probs = torch.zeros(0, dtype=torch.long), None  # no sampler: targets only
                if task.sampler is not None:
                    neg = task.sampler.sample(cfg.n_negatives, gen)  # (S,)
                    probs = task.sampler.probs

                def log_pi(
                    c: torch.Tensor, n_t: int = targets.nnz, probs: Any = probs
                ) -> torch.Tensor:
                    return log_inclusion(c, n_t, cfg.n_negatives, task.freq, probs)

                cands, tmask, mask, log_q = sampled_candidates(inputs, targets, neg, log_pi)
            hist = sparse_history(inputs[mine], dev)
        uid = None
        if net.user_emb is not None:
            uid = torch.as_tensor(users)
            if cfg.user_id_dropout > 0:
                uid = uid.masked_fill(torch.rand(b, generator=gen) < cfg.user_id_dropout, -1)
        id_drop = None
        if cfg.item_id_dropout > 0:
            id_drop = (torch.rand(n_items, generator=gen) < cfg.item_id_dropout).to(dev)
        if task.dp is not None:
            task.dp.local(users)  # records the split for the all-reduce's weights
        autocast = (
            torch.autocast(dev.type, dtype=torch.bfloat16) if task.amp else contextlib.nullcontext()
        )
        with autocast:
            table = net.item_table(which="out", id_drop=id_drop)  # (I, D)
            in_table = table if net.in_emb is None else net.item_table(which="in", id_drop=id_drop)
            u = net.encode(hist, None if uid is None else uid[mine].to(dev), in_table)  # (B, D)
            v = net.normalize(table if cands is None else lookup(table, cands.to(dev)))  # (C, D)
            bias = net.biases(id_drop, None if cands is None else cands.to(dev))  # (C,) or None
            logits = net.logits(u, v, bias)  # (B, C) = -E
        if by_index:
            loss = target_softmax_each(logits.float(), removed, t_rows, t_cols)
        else:
            loss = multi_positive_softmax(
                -logits,
                tmask[mine].to(dev),
                mask=mask[mine].to(dev),
                log_q=None if log_q is None else log_q[mine].to(dev),
                mode=cfg.target_softmax,
            )
        if task.dp is None:
            loss_value = float(loss.detach())
            task.opt.zero_grad(set_to_none=True)
            loss.backward()
        else:  # backward and all-reduce now; the global batch's loss
            loss_value = task.dp.backward(loss, logits, task.opt, net)
        if not np.isfinite(loss_value):
            raise DivergenceError(
                f"Retriever diverged at epoch {epoch + 1}, step {step + 1}: the softmax loss "
                f"is {loss_value}; lower learning_rate (now {cfg.learning_rate:g}) or raise "
                "temperature; nothing was saved"
            )
        task.opt.step()
        task.check(epoch, step)
        total += loss_value * b
        n_seen += b
        batches.set_postfix(loss=total / n_seen)
    net.eval()
    task.model.invalidate_cache()
    return {
        "loss": total / max(1, n_seen),
        "temperature": float(net.tau().detach()),
        "epoch_seconds": time.perf_counter() - t0,
    }
