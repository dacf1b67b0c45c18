"""Model registry: CLI names -> classes, imported lazily so optional parts stay optional."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from recsys_ebm.models.base import Recommender, as_user_items

__all__ = ["MODEL_PATHS", "Recommender", "as_user_items", "get_model_class", "load_model"]

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


def load_model(path: str | Path, *, device: str = "cpu") -> Recommender:
    """Load any saved model directory, dispatching on the name stored in ``model.json``."""
    meta_path = Path(path) / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"model: no model.json in {path} (not a saved model directory)")
    name = json.loads(meta_path.read_text())["model"]
    return get_model_class(name).load(path, device=device)
