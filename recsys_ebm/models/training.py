"""The one training loop of the iterative models (binary RBM, softmax RBMs, retriever).

:func:`run_training` owns what every such fit shares: the epochs, the per-epoch callback, early
stopping on a monitor that is passed in (a callable returning the validation score, so models
need nothing from the evaluation layer), checkpoint and resume with the fingerprint check
(:mod:`recsys_ebm.io`), the divergence guard (:func:`check_parameters`) and progress
(:mod:`recsys_ebm.progress`). A model supplies a :class:`~recsys_ebm.models.capabilities.Trainable`
task: ``train_epoch`` (one pass over the data, returning that epoch's figures), ``state_dict`` /
``load_state_dict`` (the whole training state, for checkpoints), ``snapshot`` / ``restore`` (the
model parameters, for the best epoch) and ``parameters_to_check`` (for the guard).

Per epoch, in order: ``train_epoch``; the guard over ``parameters_to_check``; the parameter
average (``average`` > 0, below); the monitor (its score is recorded under ``monitor_name``); the
history; the best epoch; the checkpoint (written atomically, so a kill leaves the previous one);
the callback; progress; early stopping after ``patience`` epochs without a better score. At the
end the best epoch's parameters are restored.
A checkpoint resumes to the same parameters as an uninterrupted run.

Iterate averaging (``average`` = a > 0; Polyak & Juditsky 1992, "Acceleration of stochastic
approximation by averaging"; for RBMs, Swersky et al. 2010, "A tutorial on stochastic
approximation algorithms for training restricted Boltzmann machines and deep belief nets"): after
epoch t (1-based) the loop updates an average of the parameters over epochs,

    theta_avg <- d_t * theta_avg + (1 - d_t) * theta,   d_t = min(a, (t - 1) / (t + 1)),

and the monitor, the best epoch's snapshot and, without a monitor, the final model are the
average, while training goes on from the raw iterate theta. It damps the noise of stochastic
gradients (CD's Gibbs samples, minibatches) that a single iterate carries. The early d_t are
Shamir & Zhang's (2013) polynomial-decay averaging with eta = 1 (weights growing linearly with
t), so a short run is not held back by its first, poor iterates (a plain exponential average
started at epoch 1 keeps a^(t-1) of it: half after 8 epochs at a = 0.9); from t = (1 + a) /
(1 - a) on (19 epochs at 0.9) it is the exponential average with decay a.

Data-parallel (inside :func:`recsys_ebm.models.distributed.data_parallel`, one process per rank):
every rank runs ``train_epoch`` (the trainers shard the batches and all-reduce) and
``state_dict`` (it may gather, e.g. persistent chains); rank 0 alone reads the checkpoint (its
state is broadcast, so a checkpoint written with N ranks resumes with M), validates (the score is
broadcast, so every rank keeps the same best epoch), decides early stopping (broadcast), writes
checkpoints, calls the callback (MLflow) and shows progress. Every rank keeps its own parameter
average, the same on all of them: the parameters it averages are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_ebm.diagnostics import DivergenceError
from recsys_ebm.io import resume_checkpoint, save_checkpoint
from recsys_ebm.models.capabilities import Trainable
from recsys_ebm.models.distributed import current as current_data_parallel
from recsys_ebm.progress import progress as make_progress

__all__ = [
    "BestEpoch",
    "EpochCallback",
    "Monitor",
    "TrainingResult",
    "batch_progress",
    "check_parameters",
    "EpochBatches",
    "run_training",
]

#: a validation score of the model as it stands (higher or lower is better: ``maximize``)
Monitor = Callable[[], float]
#: ``callback(epoch, metrics)`` once per epoch, after its checkpoint is written
EpochCallback = Callable[[int, dict[str, float]], None]


def check_parameters(
    params: dict[str, torch.Tensor],
    limit: float,
    *,
    who: str,
    epoch: int,
    step: int | None = None,
    lr: float | None = None,
    hint: str = "",
) -> None:
    """Divergence guard: every tensor of ``params`` finite and within ``limit`` in absolute
    value (one fused reduction per tensor, one host sync).

    Run after every gradient step (before the next step samples from NaN probabilities, which
    would crash inside torch) and by :func:`run_training` after every epoch.

    Raises:
        DivergenceError: naming ``who``, the epoch (1-based) and step, the first tensor out of
            bounds, and suggesting a lower learning rate (``hint`` adds another remedy).
    """
    if not params:
        return
    names = list(params)
    with torch.no_grad():
        peaks = torch.stack([params[n].detach().abs().amax().float() for n in names]).cpu()
    if bool((peaks <= limit).all()):  # False for NaN too
        return
    k = int((~(peaks <= limit)).nonzero()[0, 0])  # the first tensor out of bounds
    name, big = names[k], float(peaks[k])
    what = f"{name} has NaN/inf values" if not np.isfinite(big) else f"max |{name}| = {big:.3g}"
    where = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else "")
    now = f" (now {lr:g})" if lr is not None else ""
    raise DivergenceError(
        f"{who} diverged at {where}: {what} (max_abs_param={limit:g}); "
        f"lower learning_rate{now}{hint}; nothing was saved"
    )


class EpochBatches:
    """``(step, order[s : s + batch_size])`` for each minibatch of one epoch, in ``order`` (a
    seeded permutation), under the epoch's inner progress bar (:func:`batch_progress`), whose
    postfix :meth:`set_postfix` sets (e.g. the running loss)."""

    def __init__(
        self,
        order: np.ndarray,
        batch_size: int,
        *,
        desc: str,
        epoch: int,
        epochs: int,
        enabled: bool,
    ) -> None:
        self.order, self.batch_size = order, batch_size
        self.bar = batch_progress(
            range(0, len(order), batch_size), desc=desc, epoch=epoch, epochs=epochs, enabled=enabled
        )

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for step, s in enumerate(self.bar):
            yield step, self.order[s : s + self.batch_size]

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_postfix(**values)


def batch_progress(
    iterable: Iterable[Any], *, desc: str, epoch: int, epochs: int, enabled: bool
) -> Any:
    """The inner (per batch) progress bar of one epoch: ``"{desc} epoch e/E"``."""
    return make_progress(
        iterable,
        desc=f"{desc} epoch {epoch + 1}/{epochs}",
        unit="batch",
        enabled=enabled,
        leave=False,
    )


class BestEpoch:
    """Early-stopping bookkeeping: the best score so far, its epoch, a snapshot of the model's
    parameters then (whatever the task's ``snapshot`` returns), and the epochs since the score
    last improved (``bad``)."""

    def __init__(self, maximize: bool) -> None:
        self.maximize = maximize
        self.score: float | None = None
        self.epoch: int | None = None
        self.state: dict[str, Any] | None = None
        self.bad = 0

    def update(
        self, score: float | None, epoch: int, snapshot: Callable[[], dict[str, Any]]
    ) -> None:
        """Record ``score`` (None: no validation this epoch, nothing changes); on a new best,
        keep ``snapshot()``."""
        if score is None:
            return
        if self.score is None or (score > self.score if self.maximize else score < self.score):
            self.score, self.epoch, self.bad = score, epoch, 0
            self.state = snapshot()
        else:
            self.bad += 1

    def fields(self) -> dict[str, Any]:
        """Checkpoint fields."""
        return {
            "bad": self.bad,
            "best_score": self.score,
            "best_epoch": self.epoch,
            "best_state": self.state or {},
        }

    def resume(self, st: dict[str, Any]) -> None:
        """Restore from a checkpoint's :meth:`fields` (or the RBMs' earlier layout, where the
        best parameters were stored as ``best_W``, ``best_b``, ``best_c``)."""
        self.bad = st["bad"]
        state = st.get("best_state")
        if state is None:  # checkpoints written before the shared loop (RBM family)
            state = {
                k[5:]: v
                for k, v in st.items()
                if k.startswith("best_") and isinstance(v, torch.Tensor)
            }
        if state:
            self.score, self.epoch, self.state = st["best_score"], st.get("best_epoch"), state


@dataclass
class TrainingResult:
    """What :func:`run_training` did: per-epoch ``history`` (each entry ``{"epoch": e, ...}``),
    the best monitored score and its epoch (None without a monitor), and whether it stopped
    early."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def run_training(
    task: Trainable,
    *,
    epochs: int,
    fingerprint: str,
    monitor: Monitor | None = None,
    monitor_name: str = "valid_score",
    maximize: bool = True,
    patience: int = 0,
    validate_every: int = 1,
    max_abs_param: float = float("inf"),
    who: str = "model",
    hint: str = "",
    callback: EpochCallback | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    desc: str = "train",
    loss_name: str | None = None,
    average: float = 0.0,
) -> TrainingResult:
    """Train ``task`` for up to ``epochs`` epochs (module docstring).

    Args:
        task: the model's epoch step and state (a ``Trainable``), freshly initialised.
        epochs: total epochs (a resumed run continues from the checkpoint's next epoch).
        fingerprint: what a checkpoint must match to be resumed
            (:func:`recsys_ebm.io.checkpoint_fingerprint`).
        monitor: the validation score after each epoch, or None (no early stopping; the last
            epoch's parameters are kept).
        monitor_name: the history key of the monitored score (e.g. ``"valid_ndcg@10"``).
        maximize: whether a higher score is better.
        patience: stop after this many epochs without a better score (0 = never).
        validate_every: run ``monitor`` after every this many epochs (and after the last one);
            the epochs between have no score, so the best epoch is one of the validated ones.
            Validation costs a full ranking of the validation users: a quarter of the
            retriever's and a third of the RBM's ML-100K fit when run after every epoch.
        max_abs_param: bound of the divergence guard run after each epoch.
        who, hint: the model named in a divergence error, and an extra remedy it suggests.
        callback: ``callback(epoch, metrics)`` after each epoch (metrics without ``epoch``).
        checkpoint_dir: write a checkpoint there after each epoch and resume from it.
        progress: show an epoch bar (a bar on a terminal, log lines otherwise).
        desc: the bar's label (``"train rbm"``).
        loss_name: the metric shown as ``loss`` on the bar.
        average: the largest decay a of the average of the parameters over epochs (module
            docstring), in [0, 1); 0 = no averaging (the raw iterate is validated and kept).

    Raises:
        ValueError: the checkpoint belongs to another config or training matrix.
        ModelFileError: the checkpoint is corrupt or unsafe.
        DivergenceError: a checked parameter became NaN/inf or exceeded ``max_abs_param``.
    """
    if type(validate_every) is not int or validate_every < 1:  # bool is an int subclass
        raise ValueError(f"validate_every: expected an int >= 1, got {validate_every!r}")
    if isinstance(average, bool) or not isinstance(average, int | float) or not 0 <= average < 1:
        raise ValueError(f"average: expected a decay in [0, 1), got {average!r}")
    result = TrainingResult()
    best = BestEpoch(maximize=maximize)
    start = 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    dp = current_data_parallel()
    main = dp is None or dp.is_main  # validates, writes, logs, shows progress
    progress = progress and main
    on_main = dp.on_main if dp is not None else (lambda fn: fn())
    if dp is not None and not vars(type(task)).get("data_parallel", False):
        # declared by the concrete class: a subclass with its own step must shard it too
        raise ValueError(
            f"distributed: {who}'s {type(task).__name__} has no data-parallel training "
            "(its class does not declare data_parallel = True); train it in one process"
        )
    st = on_main(lambda: resume_checkpoint(ckpt, fingerprint))
    avg: dict[str, Any] | None = None  # the averaged parameters (average > 0)
    if st is not None:
        task.load_state_dict(st)
        result.history, start = list(st["history"]), st["epoch"] + 1
        best.resume(st)
        avg = st.get("average_state")
    bar = make_progress(epochs, desc=desc, unit="epoch", enabled=progress, initial=start)
    for epoch in range(start, epochs):
        metrics = dict(task.train_epoch(epoch))
        check_parameters(task.parameters_to_check(), max_abs_param, who=who, epoch=epoch, hint=hint)
        raw = None
        if average:  # validate (and keep as best) the average; train on from the raw iterate
            raw = task.snapshot()
            avg = _averaged(avg, raw, min(float(average), epoch / (epoch + 2)))
            task.restore(avg)
        due = (epoch + 1) % validate_every == 0 or epoch + 1 == epochs
        score = on_main(monitor) if monitor is not None and due else None
        if score is not None:
            metrics[monitor_name] = score
        result.history.append({"epoch": epoch, **metrics})
        best.update(score, epoch, task.snapshot)
        if raw is not None:
            task.restore(raw)
        if ckpt is not None:
            state = task.state_dict()
            state.update(
                history=result.history, epoch=epoch, fingerprint=fingerprint, **best.fields()
            )
            if avg is not None:
                state["average_state"] = avg
            if main:
                save_checkpoint(ckpt, state)
        if callback is not None and main:
            callback(epoch, dict(metrics))
        shown = {}
        if loss_name is not None and loss_name in metrics:
            shown["loss"] = metrics[loss_name]
        if score is not None:
            shown[monitor_name.replace("_", " ")] = score
        bar.update(1, **shown)
        # best.bad counts validations without a gain: validate_every epochs each
        stop = bool(patience and best.bad * validate_every >= patience)
        if dp is not None:  # rank 0's decision (the same on every rank: the scores are its)
            stop = dp.broadcast_object(stop)
        if stop:
            bar.write(f"early stop at epoch {epoch + 1}: no gain in {patience} epochs")
            result.stopped_early = True
            break
    bar.close()
    if best.state:
        task.restore(best.state)
    elif avg is not None:  # no monitor: the average of the last epoch is the model
        task.restore(avg)
    result.best_score, result.best_epoch = best.score, best.epoch
    return result


def _averaged(avg: dict[str, Any] | None, raw: dict[str, Any], decay: float) -> dict[str, Any]:
    """avg <- decay * avg + (1 - decay) * raw for floating tensors (raw's own copy the first
    time, and for other entries); ``raw`` is a snapshot, so nothing of the task is aliased.
    The caller's decay at 0-based epoch e is min(a, e / (e + 2)): 0 at the first epoch."""
    if avg is None:
        return {k: v.clone() if torch.is_tensor(v) else v for k, v in raw.items()}
    out = {}
    for k, v in raw.items():
        a = avg.get(k)
        if torch.is_tensor(v) and v.is_floating_point() and torch.is_tensor(a):
            out[k] = a.to(v.device).mul(decay).add_(v, alpha=1.0 - decay)
        else:
            out[k] = v.clone() if torch.is_tensor(v) else v
    return out
