"""Minibatch CD-k / PCD-k training loop for :class:`~recsys_ebm.models.rbm.RBM`.

Per epoch: users are shuffled with the seeded generator; each minibatch of CSR rows is densified
alone (the whole matrix never is); the gradient step uses momentum and L2 weight decay
(Hinton 2010, secs. 9-10). Monitoring: reconstruction error, the mean free-energy gap between
users' training and validation profiles (it widens as the model overfits; Hinton 2010 sec. 6),
and validation NDCG@10 for early stopping (the best epoch's parameters are kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.diagnostics import ConfigError, DivergenceError
from recsys_ebm.io import checkpoint_fingerprint, resume_checkpoint, save_checkpoint
from recsys_ebm.models._rbm_math import free_energy, hidden_prob, visible_prob
from recsys_ebm.progress import progress as make_progress

__all__ = [
    "BestEpoch",
    "CDSchedule",
    "check_params",
    "momentum_step",
    "pack_state",
    "train_rbm",
    "unpack_state",
]

_PARAMS = ("W", "b", "c")


class CDSchedule:
    """Config methods shared by the RBM family (``RBMConfig``, ``SoftmaxRBMConfig``): checks of
    the contrastive-divergence fields and the k schedule."""

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

    def k_at(self, epoch: int) -> int:
        """CD steps at ``epoch``: ``cd_k``, or the k schedule's entry (epochs split evenly)."""
        if not self.k_schedule:
            return self.cd_k
        stage = min(len(self.k_schedule) - 1, epoch * len(self.k_schedule) // self.epochs)
        return self.k_schedule[stage]


def momentum_step(
    model: Any,
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
            g = grads[name]
            if name == "W" and weight_decay:
                g = g - weight_decay * model.W
            vel[name].mul_(momentum).add_(g, alpha=lr)
            getattr(model, name).add_(vel[name])


def check_params(model: Any, epoch: int, step: int | None = None, lr: float | None = None) -> None:
    """Divergence guard, run after every gradient step: W, b and c finite and within
    ``max_abs_param`` (one fused reduction per parameter, one host sync).

    It runs before the next step samples: Bernoulli/multinomial sampling of the NaN
    probabilities that non-finite weights produce would crash inside torch instead.

    Raises:
        DivergenceError: naming the model, the epoch (1-based) and step, the parameter, and
            suggesting a lower ``learning_rate``.
    """
    with torch.no_grad():
        peaks = torch.stack([getattr(model, n).abs().amax().float() for n in _PARAMS]).cpu()
    limit = model.config.max_abs_param
    if bool((peaks <= limit).all()):  # False for NaN too
        return
    k = int((~(peaks <= limit)).nonzero()[0, 0])  # the first of W, b, c out of bounds
    name, big = _PARAMS[k], float(peaks[k])
    what = f"{name} has NaN/inf values" if not np.isfinite(big) else f"max |{name}| = {big:.3g}"
    where = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else "")
    now = f" (now {lr:g})" if lr is not None else ""
    raise DivergenceError(
        f"{type(model).__name__} diverged at {where}: {what} (max_abs_param={limit:g}); "
        f"lower learning_rate{now} or raise weight_decay; nothing was saved"
    )


class BestEpoch:
    """Early stopping on a validation score: the best score so far, its epoch and a copy of the
    parameters then, and the epochs since it last improved (``bad``)."""

    def __init__(self, maximize: bool) -> None:
        self.maximize = maximize
        self.score: float | None = None
        self.epoch: int | None = None
        self.params: dict[str, torch.Tensor] | None = None
        self.bad = 0

    def update(self, model: Any, score: float | None, epoch: int) -> None:
        """Record ``score`` (None: no validation this epoch, nothing changes)."""
        if score is None:
            return
        if self.score is None or (score > self.score if self.maximize else score < self.score):
            self.score, self.epoch, self.bad = score, epoch, 0
            self.params = {n: getattr(model, n).clone() for n in _PARAMS}
        else:
            self.bad += 1

    def fields(self) -> dict[str, Any]:
        """Checkpoint fields (the parameters travel through :func:`pack_state`)."""
        return {"bad": self.bad, "best_score": self.score, "best_epoch": self.epoch}

    def resume(self, st: dict[str, Any], params: dict[str, torch.Tensor] | None) -> None:
        """Restore from a checkpoint's :meth:`fields` and :func:`unpack_state`'s parameters."""
        self.bad = st["bad"]
        if params is not None:
            self.score, self.epoch, self.params = st["best_score"], st.get("best_epoch"), params

    def restore(self, model: Any) -> None:
        """Put the best epoch's parameters back into ``model`` (when there was one)."""
        for n, t in (self.params or {}).items():
            setattr(model, n, t)


def pack_state(
    model: Any,
    vel: dict[str, torch.Tensor],
    chain: torch.Tensor | None,
    gen: torch.Generator,
    dev_gen: torch.Generator,
    best_params: dict[str, torch.Tensor] | None,
    **fields: Any,
) -> dict[str, Any]:
    """A checkpoint of an RBM-family training loop: W, b, c, their velocities, the persistent
    chain, both generators, the best epoch's parameters and the loop's own ``fields``."""
    st: dict[str, Any] = {n: getattr(model, n).cpu() for n in _PARAMS}
    st.update({"vel_" + n: v.cpu() for n, v in vel.items()})
    st["chain"] = chain.cpu() if chain is not None else torch.zeros(0)
    st["gen"] = gen.get_state()
    if dev_gen is not gen:
        st["dev_gen"] = dev_gen.get_state()
    if best_params:
        st.update({"best_" + n: t.cpu() for n, t in best_params.items()})
    st.update(fields)
    return st


def unpack_state(
    model: Any,
    st: dict[str, Any],
    vel: dict[str, torch.Tensor],
    gen: torch.Generator,
    dev_gen: torch.Generator,
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor] | None]:
    """Restore :func:`pack_state` output in place; returns (chain or None, best parameters)."""
    dev = model.device
    for n in _PARAMS:
        setattr(model, n, st[n].to(dev))
        vel[n] = st["vel_" + n].to(dev)
    gen.set_state(st["gen"])
    if dev_gen is not gen:
        dev_gen.set_state(st["dev_gen"])
    chain = st["chain"].to(dev) if st["chain"].numel() else None
    best = {n: st["best_" + n].to(dev) for n in _PARAMS} if "best_W" in st else None
    return chain, best


def _monitor(
    model: Any, train: sp.csr_matrix, valid: sp.csr_matrix | None, gen_seed: int, show: bool
) -> dict:
    from recsys_ebm.evaluation.protocol import evaluate_ranking

    out: dict[str, float] = {}
    if valid is None or valid.nnz == 0:
        return out
    rows = np.flatnonzero(valid.getnnz(axis=1) > 0)
    rng = np.random.default_rng(gen_seed)
    sample = rng.choice(rows, size=min(500, rows.size), replace=False)
    with torch.no_grad():
        f_train = free_energy(model._dense(train[sample]), model.W, model.b, model.c)
        f_valid = free_energy(model._dense(valid[sample]), model.W, model.b, model.c)
    # per-item normalisation: training and validation profiles differ in length
    n_t = torch.as_tensor(train[sample].getnnz(axis=1), dtype=torch.float32, device=f_train.device)
    n_v = torch.as_tensor(valid[sample].getnnz(axis=1), dtype=torch.float32, device=f_train.device)
    out["free_energy_train"] = float((f_train / n_t.clamp(min=1)).mean())
    out["free_energy_valid"] = float((f_valid / n_v.clamp(min=1)).mean())
    out["free_energy_gap"] = out["free_energy_train"] - out["free_energy_valid"]
    desc = "validate rbm" if show else None
    out["valid_ndcg@10"] = evaluate_ranking(model, train, valid, (10,), progress_desc=desc)[
        "ndcg@10"
    ]
    return out


def train_rbm(
    model: Any,
    train: sp.csr_matrix,
    valid: sp.csr_matrix | None,
    *,
    callback: Any = None,
    progress: bool = False,
    checkpoint_dir: Path | None = None,
) -> None:
    cfg = model.config
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    dev_gen = (
        gen if model.device.type == "cpu" else torch.Generator(model.device).manual_seed(cfg.seed)
    )
    n_users, n_items = train.shape
    model.init_params(n_items, gen, train)
    vel = {k: torch.zeros_like(getattr(model, k)) for k in ("W", "b", "c")}
    chain = None
    if cfg.persistent:
        chain = torch.bernoulli(torch.full((cfg.batch_size, n_items), 0.5), generator=gen).to(
            model.device
        )
    history: list[dict[str, float]] = []
    best = BestEpoch(maximize=True)  # validation NDCG@10
    start_epoch, lr = 0, cfg.learning_rate
    fingerprint = checkpoint_fingerprint(cfg, train)
    st = resume_checkpoint(checkpoint_dir, fingerprint)
    if st is not None:
        chain, best_params = unpack_state(model, st, vel, gen, dev_gen)
        history, start_epoch, lr = st["history"], st["epoch"] + 1, st["lr"]
        best.resume(st, best_params)

    bar = make_progress(
        cfg.epochs, desc="train rbm", unit="epoch", enabled=progress, initial=start_epoch
    )
    for epoch in range(start_epoch, cfg.epochs):
        k = cfg.k_at(epoch)
        momentum = 0.5 if epoch < 5 else cfg.momentum
        order = torch.randperm(n_users, generator=gen).numpy()
        batches = make_progress(
            range(0, n_users, cfg.batch_size),
            desc=f"train rbm epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            enabled=progress,
            leave=False,
        )
        recon, seen = 0.0, 0
        for step, s in enumerate(batches):
            rows = order[s : s + cfg.batch_size]
            v0 = model._dense(train[rows])  # (B, I)
            grads, vk, rec = model.cd_step(v0, k, dev_gen, chain)
            if cfg.persistent:
                chain = vk
            momentum_step(model, grads, vel, lr, momentum, cfg.weight_decay)
            check_params(model, epoch, step, lr)
            with torch.no_grad():
                if rec is None:  # PCD or k = 0: one extra mean-field pass
                    rec = visible_prob(hidden_prob(v0, model.W, model.c), model.W, model.b)
                recon += float(((v0 - rec) ** 2).sum())
                seen += v0.numel()
        check_params(model, epoch, lr=lr)
        metrics = {
            "epoch": epoch,
            "cd_k": k,
            "learning_rate": lr,
            "reconstruction_error": recon / max(1, seen),
        }
        metrics.update(_monitor(model, train, valid, cfg.seed + epoch, progress))
        history.append(metrics)
        if callback is not None:
            callback(epoch, {k_: v for k_, v in metrics.items() if k_ != "epoch"})
        best.update(model, metrics.get("valid_ndcg@10"), epoch)
        lr *= cfg.lr_decay
        if checkpoint_dir is not None:
            st = pack_state(
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
            save_checkpoint(checkpoint_dir, st)
        shown = {"loss": metrics["reconstruction_error"]}
        if "valid_ndcg@10" in metrics:
            shown["valid ndcg@10"] = metrics["valid_ndcg@10"]
        bar.update(1, **shown)
        if cfg.patience and best.bad >= cfg.patience:
            bar.write(f"early stop at epoch {epoch + 1}: no gain in {cfg.patience} epochs")
            break
    bar.close()
    best.restore(model)
    model.fit_info = {
        "history": history,
        "epochs_run": len(history),
        "best_valid_ndcg@10": best.score,
    }
