"""The ranker's final refit on train + valid, early-stopped models included.

After the blend weights are learned on the validation split, the ranker refits its trainable
components on train + valid, as every baseline is refitted after its validation search
(benchmarks/quality.py). A model that early-stops on validation (the RBM, the retriever) has no
validation split left to stop on, so it is refitted for the number of epochs that validation
chose: ``epochs = best_epoch + 1, patience = 0`` - the usual "retrain on all the data for the
selected number of epochs" of early stopping (Goodfellow, Bengio & Courville 2016, sec. 7.8,
algorithm 7.2). The refitted model sees about 1 / (1 - valid_fraction) times the data, so the
same epoch count means slightly more updates, the schedule that algorithm prescribes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["best_epoch", "refit_model"]


def best_epoch(model: Any) -> int | None:
    """0-based index of the early-stopped epoch of a fitted model, or None.

    ``fit_info["best_epoch"]`` when the model records it, else the epoch of the best monitored
    validation score in ``fit_info["history"]`` (``valid_ndcg@10``, higher is better, or
    ``valid_rmse``, lower is better). None when the model did not early-stop on validation.
    """
    info = getattr(model, "fit_info", None) or {}
    if info.get("best_epoch") is not None:
        return int(info["best_epoch"])
    hist = info.get("history") or []
    for key, better in (("valid_ndcg@10", max), ("valid_rmse", min)):
        scored = [(h[key], h["epoch"]) for h in hist if h.get(key) is not None]
        if scored:
            return int(better(scored, key=lambda t: t[0])[1])
    return None


def _fields(model: Any) -> set[str]:
    cfg = getattr(model, "config", None)
    return {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()


def refit_model(model: Any, fit: Callable[[Any], Any]) -> int | None:
    """Refit ``model`` with ``fit(model)`` (on train + valid); returns the epochs it was given.

    A model that early-stopped on validation (:func:`best_epoch` is not None and its config has
    ``epochs`` and ``patience``) first gets ``epochs = best_epoch + 1`` and ``patience = 0``
    (and its ``checkpoint_dir``, when set, a ``-refit`` sibling: the refit is another run).
    Other models are refitted with their config as it is (None is returned).
    """
    ep = best_epoch(model)
    fields = _fields(model)
    if ep is None or not {"epochs", "patience"} <= fields:
        fit(model)
        return None
    changes: dict[str, Any] = {"epochs": ep + 1, "patience": 0}
    if "checkpoint_dir" in fields and model.config.checkpoint_dir:
        ckpt = Path(model.config.checkpoint_dir)
        changes["checkpoint_dir"] = str(ckpt.with_name(ckpt.name + "-refit"))
    model.config = model.config.replace(**changes)
    fit(model)
    return ep + 1
