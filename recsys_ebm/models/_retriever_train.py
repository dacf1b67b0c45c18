"""Minibatch InfoNCE training loop for :class:`~recsys_ebm.models.retriever.Retriever`.

An epoch is one pass over the training interactions in a seeded random order. Each interaction
(u, i+) is one example: i+ is the positive and the rest of u's training history is the input the
user tower encodes (leave-one-out within the training split; valid and test are never inputs).
Candidates are the batch's positives plus optional sampled negatives; accidental hits (any
candidate in the anchor's training positives) are masked and logits carry the logQ correction
(see :mod:`._retriever_loss`). Adam; bf16 autocast on CUDA; early stopping on validation NDCG@10
(history = train, target = valid) keeping the best epoch's weights; a dict checkpoint (weights,
optimizer, generator, curves) written atomically after every epoch and resumed from when present.
Every random choice comes from one seeded CPU ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.diagnostics import DivergenceError
from recsys_ebm.io import checkpoint_fingerprint, resume_checkpoint, save_checkpoint
from recsys_ebm.models._retriever_loss import (
    NegativeSampler,
    accidental_hit_mask,
    info_nce,
    log_expected_counts,
)
from recsys_ebm.models._retriever_towers import lookup, sparse_history
from recsys_ebm.progress import progress as make_progress

__all__ = ["train_retriever"]


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


def _validate(
    model: Any, train: sp.csr_matrix, valid: sp.csr_matrix | None, show: bool
) -> dict[str, float]:
    from recsys_ebm.evaluation.protocol import evaluate_ranking

    if valid is None or valid.nnz == 0:
        return {}
    model.net.eval()
    model.invalidate_cache()
    desc = "validate retriever" if show else None
    return {
        "valid_ndcg@10": evaluate_ranking(model, train, valid, (10,), progress_desc=desc)["ndcg@10"]
    }


def check_weights(net: torch.nn.Module, limit: float, epoch: int, step: int, lr: float) -> None:
    """Divergence guard: every weight finite and within ``limit`` (one fused reduction).

    Weights of 1e9 are finite but break the model silently: cosine similarity squares them, the
    squared norm overflows to inf and every vector normalises to 0 (all energies 0).
    """
    with torch.no_grad():
        peaks = torch.stack([p.detach().abs().amax().float() for p in net.parameters()])
        value = float(peaks.amax())
        if value <= limit:  # False for NaN too
            return
        names = [n for n, _ in net.named_parameters()]
        name = names[int(peaks.nan_to_num(nan=float("inf")).argmax())]
        what = "NaN/inf values" if not np.isfinite(value) else f"max |weight| = {value:.3g}"
        raise DivergenceError(
            f"Retriever diverged at epoch {epoch + 1}, step {step + 1}: {name} has {what} "
            f"(max_abs_param={limit:g}); lower learning_rate (now {lr:g}); nothing was saved"
        )


def train_retriever(
    model: Any,
    train: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    *,
    features: torch.Tensor | None,
    callback: Any = None,
    progress: bool = False,
    checkpoint_dir: Path | None = None,
) -> None:
    """Fit ``model.net`` in place (module docstring).

    Raises:
        DivergenceError: the loss or a weight became NaN/inf or exceeded ``max_abs_param``.
    """
    cfg = model.config
    dev = model.device
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    n_users, n_items = train.shape
    counts = np.asarray(train.getnnz(axis=0), dtype=np.int64)  # (I,)
    model.n_items = n_items
    net = model.build_net(n_items, n_users, features, torch.as_tensor(counts > 0), gen)
    model.net = net
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sampler = None
    if cfg.negatives != "none":
        sampler = NegativeSampler(counts, cfg.negatives, cfg.popularity_alpha)
    freq = torch.as_tensor(counts / counts.sum(), dtype=torch.float64)  # (I,) in-batch rate
    probs = None if sampler is None else sampler.probs
    coo = train.tocoo()
    ex_users, ex_items = coo.row.astype(np.int64), coo.col.astype(np.int64)  # (N,) examples
    amp = cfg.mixed_precision and dev.type == "cuda"

    history: list[dict[str, float]] = []
    best_score, best_state, best_epoch, bad, start = None, None, -1, 0, 0

    fingerprint = checkpoint_fingerprint(cfg, train)
    st = resume_checkpoint(checkpoint_dir, fingerprint)
    if st is not None:
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        history, bad, start = st["history"], st["bad"], st["epoch"] + 1
        best_score, best_epoch = st["best_score"], st["best_epoch"]
        best_state = st["best_state"] or None

    bar = make_progress(
        cfg.epochs, desc="train retriever", unit="epoch", enabled=progress, initial=start
    )
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(ex_users), generator=gen).numpy()
        batches = make_progress(
            range(0, len(perm), cfg.batch_size),
            desc=f"train retriever epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            enabled=progress,
            leave=False,
        )
        total, n_seen = 0.0, 0
        for step, s in enumerate(batches):
            idx = perm[s : s + cfg.batch_size]
            users, pos = ex_users[idx], ex_items[idx]  # (B,)
            b = len(idx)
            hist = sparse_history(batch_history(train, users, pos, cfg.history_dropout, gen), dev)
            cands = torch.as_tensor(pos)
            if sampler is not None:
                cands = torch.cat([cands, sampler.sample(cfg.n_negatives, gen)])  # (C,)
            labels = torch.arange(b)
            mask = accidental_hit_mask(train, users, cands.numpy(), labels.numpy())  # (B, C)
            log_q = None
            if cfg.logq_correction:
                log_q = log_expected_counts(cands, b, cfg.n_negatives, freq, probs).to(dev)
            uid = None
            if net.user_emb is not None:
                uid = torch.as_tensor(users)
                if cfg.user_id_dropout > 0:
                    drop = torch.rand(b, generator=gen) < cfg.user_id_dropout
                    uid = uid.masked_fill(drop, -1)
                uid = uid.to(dev)
            id_drop = None
            if cfg.item_id_dropout > 0:
                id_drop = (torch.rand(n_items, generator=gen) < cfg.item_id_dropout).to(dev)
            autocast = (
                torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
            )
            with autocast:
                table = net.item_table(which="out", id_drop=id_drop)  # (I, D)
                in_table = (
                    table if net.in_emb is None else net.item_table(which="in", id_drop=id_drop)
                )
                u = net.encode(hist, uid, in_table)  # (B, D)
                v = net._norm(lookup(table, cands.to(dev)))  # (C, D)
                energies = net.energy(u, v)  # (B, C)
            loss = info_nce(
                energies,
                labels.to(dev),
                mask=torch.as_tensor(mask, device=dev),
                log_q=log_q,
            )
            loss_value = float(loss.detach())
            if not np.isfinite(loss_value):
                raise DivergenceError(
                    f"Retriever diverged at epoch {epoch + 1}, step {step + 1}: the InfoNCE loss "
                    f"is {loss_value}; lower learning_rate (now {cfg.learning_rate:g}) or raise "
                    "temperature; nothing was saved"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            check_weights(net, cfg.max_abs_param, epoch, step, cfg.learning_rate)
            total += loss_value * b
            n_seen += b
            batches.set_postfix(loss=total / n_seen)
        metrics: dict[str, float] = {
            "loss": total / max(1, n_seen),
            "temperature": float(net.tau().detach()),
            "epoch_seconds": time.perf_counter() - t0,
        }
        metrics.update(_validate(model, train, valid, progress))
        score = metrics.get("valid_ndcg@10")
        if score is not None:
            if best_score is None or score > best_score:
                best_score, best_state, best_epoch, bad = score, _cpu(net.state_dict()), epoch, 0
            else:
                bad += 1
        history.append({"epoch": epoch, **metrics})
        if checkpoint_dir is not None:
            save_checkpoint(
                checkpoint_dir,
                {
                    "net": _cpu(net.state_dict()),
                    "opt": opt.state_dict(),
                    "gen": gen.get_state(),
                    "epoch": epoch,
                    "history": history,
                    "bad": bad,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_state": best_state or {},
                    "fingerprint": fingerprint,
                },
            )
        if callback is not None:
            callback(epoch, metrics)
        shown = {"loss": metrics["loss"]}
        if score is not None:
            shown["valid ndcg@10"] = score
        bar.update(1, **shown)
        if cfg.patience and bad >= cfg.patience:
            bar.write(f"early stop at epoch {epoch + 1}: no gain in {cfg.patience} epochs")
            break
    bar.close()

    if best_state is not None:
        net.load_state_dict(best_state)
    if cfg.item_id_dropout == 0:  # the OOV row was never trained: the mean warm embedding
        with torch.no_grad():
            warm = net.warm
            for table in (net.id_emb, net.in_emb):
                if table is not None and warm.any():
                    table[n_items] = table[:n_items][warm].mean(0)
    net.eval()
    model.invalidate_cache()
    secs = [h["epoch_seconds"] for h in history]
    model.fit_info = {
        "history": history,
        "epochs_run": len(history),
        "best_epoch": best_epoch if best_state is not None else len(history) - 1,
        "best_valid_ndcg@10": best_score,
        "mean_epoch_seconds": float(np.mean(secs)) if secs else 0.0,
        "temperature": float(net.tau().detach()),
    }
