"""Model registry: CLI names -> classes, imported lazily so optional parts stay optional."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys_ebm.models.base import Recommender, as_user_items

__all__ = [
    "MODEL_PATHS",
    "Recommender",
    "as_user_items",
    "baseline_names",
    "get_model_class",
    "load_model",
]

#: ``--model NAME`` -> "module:Class". Every entry passes tests/recommender_mixin.py.
MODEL_PATHS: dict[str, str] = {
    "popularity": "recsys_ebm.models.popularity:Popularity",
    "ease": "recsys_ebm.models.ease:EASE",
    "als": "recsys_ebm.models.implicit_adapter:ALS",
    "bpr": "recsys_ebm.models.implicit_adapter:BPR",
    "rbm": "recsys_ebm.models.rbm:RBM",
    "softmax-rbm": "recsys_ebm.models.softmax_rbm:SoftmaxRBM",
    "retriever": "recsys_ebm.models.retriever:Retriever",
    "ranker": "recsys_ebm.ranking.ranker:Ranker",
}


def get_model_class(name: str) -> type[Recommender]:
    """Return the class registered under ``name``.

    Raises:
        ValueError: ``name`` is not a registered model (the message lists the known ones).
    """
    if name not in MODEL_PATHS:
        raise ValueError(f"model: expected one of {sorted(MODEL_PATHS)}, got {name!r}")
    module, cls = MODEL_PATHS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def baseline_names() -> tuple[str, ...]:
    """Registry names of the baseline models (classes with ``is_baseline = True``), in order."""
    return tuple(
        name
        for name, path in MODEL_PATHS.items()
        if path.startswith("recsys_ebm.models.") and get_model_class(name).is_baseline
    )


def load_model(path: str | Path, *, device: str = "cpu") -> Recommender:
    """Load any saved model directory, dispatching on the name stored in ``model.json``.

    Raises:
        FileNotFoundError: no model.json (or no weights) in ``path``.
        ModelFileError: a file is corrupt, truncated or lacks a tensor (names the file).
    """
    meta_path = Path(path) / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"model: no model.json in {path} (not a saved model directory)")
    from recsys_ebm.models.base import read_model_json

    name = read_model_json(meta_path)["model"]
    if name not in MODEL_PATHS:
        raise ValueError(
            f"{meta_path}: holds an unknown model {name!r}; expected one of {sorted(MODEL_PATHS)}"
        )
    return get_model_class(name).load(path, device=device)


def __getattr__(name: str) -> Any:
    # base imports torch: load it on first use, so `recsys-ebm --help` (which reads only
    # MODEL_PATHS) stays fast (PEP 562)
    if name in ("Recommender", "as_user_items"):
        from recsys_ebm.models import base

        return getattr(base, name)
    raise AttributeError(f"module 'recsys_ebm.models' has no attribute {name!r}")
