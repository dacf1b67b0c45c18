"""The items and interactions a :class:`~recsys_ebm.ranking.ranker.Ranker` is built from.

Components are built from registry names or loaded from saved directories
(:func:`build_components`); they must index the same items (raw ids, in order) as each other
and as the ranker's dataset (:func:`check_same_items`, re-exported by
:mod:`recsys_ebm.ranking.ranker`). The final refit uses train + valid: :func:`binary` of their
sum, or :func:`merge_valid` of a dataset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models.capabilities import CandidateRetriever

if TYPE_CHECKING:
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.models.base import Recommender
    from recsys_ebm.ranking.ranker import RankerConfig

__all__ = ["binary", "build_components", "check_same_items", "merge_valid"]


def build_components(
    config: RankerConfig, name: str, n_items: int | None = None, dataset: Dataset | None = None
) -> list[tuple[Recommender, bool]]:
    """(model, trainable) per configured component: names are built, directories loaded.

    A loaded directory must index the items of ``dataset`` (when given, see
    :func:`recsys_ebm.compat.check_model_matches_dataset`), else ``n_items`` of them, and
    the loaded directories the same items as each other. ``name`` is the ranker's registry name
    (a ranker cannot contain a ranker).

    Raises:
        ConfigError: a component is neither a model name nor a saved directory, is a ranker or
            ranks from ratings; ``candidates = "retriever"`` without a retriever component.
        ValueError: a loaded directory indexes other items.
    """
    from recsys_ebm.compat import check_model_matches_dataset
    from recsys_ebm.models import MODEL_PATHS, get_model_class, load_model

    out = []
    overrides = config.component_config or {}
    for k, ref in enumerate(config.components):
        if ref in MODEL_PATHS:
            if ref == name:
                raise ConfigError("RankerConfig.components: a ranker cannot contain a ranker")
            cls = get_model_class(ref)
            out.append((cls(**overrides.get(ref, {})), True))
        elif (Path(ref) / "model.json").is_file():
            m = load_model(ref, device=config.device)
            if dataset is not None:
                check_model_matches_dataset(
                    m, dataset, argument=f"RankerConfig.components[{k}] ({ref})"
                )
            elif n_items is not None and m.n_items != n_items:
                raise ValueError(
                    f"components: {ref} was trained on {m.n_items} items, data has {n_items}"
                )
            out.append((m, False))
        else:
            raise ConfigError(
                f"RankerConfig.components: {ref!r} is neither a model name "
                f"{sorted(MODEL_PATHS)} nor a saved model directory"
            )
    check_same_items([m for m, t in out if not t], "RankerConfig.components")
    for m, _ in out:
        if m.history_values != "binary":
            raise ConfigError(
                f"RankerConfig.components: {m.name!r} ranks from ratings; the ranker blends "
                "models that rank from interaction histories"
            )
    if config.candidates == "retriever" and not any(
        isinstance(m, CandidateRetriever) for m, _ in out
    ):
        raise ConfigError(
            "RankerConfig.candidates: 'retriever' needs a component with retrieve() "
            "(e.g. components = [..., 'retriever'])"
        )
    return out


def check_same_items(
    models: list[Any], argument: str, *, ref_ids: Any = None, ref: str = ""
) -> None:
    """Raise ValueError unless the models index the same items (and ``ref_ids`` when given).

    Saved item ids are compared where a model has them (same raw ids in the same order); a model
    without ids is compared by the fingerprint of the dataset it was trained on, if any.
    """
    want = None if ref_ids is None else Vocabulary(ref_ids, name="item")
    fps: dict[str, str] = {}  # dataset fingerprint -> first model trained on it
    for k, m in enumerate(models):
        who = f"{argument}[{k}] ({getattr(m, 'name', None) or type(m).__name__})"
        mine = getattr(m, "item_vocab", None)
        if mine is None:
            fp = (getattr(m, "fit_info", None) or {}).get("dataset_fingerprint")
            if fp is not None:
                fps.setdefault(fp, who)
            continue
        if want is None:
            want, ref = mine, who
        elif (diff := mine.first_difference(want)) is not None:  # the Vocabulary id rule
            got = mine.ids[diff] if diff < len(mine) else "(none)"
            exp = want.ids[diff] if diff < len(want) else "(none)"
            raise ValueError(
                f"{who}: its item vocabulary differs from {ref}'s (first difference at item "
                f"index {diff}: {got!r} vs {exp!r}); a ranker blends models trained on the "
                "same items"
            )
    if want is None and len(fps) > 1:
        (a, who_a), (b, who_b) = list(fps.items())[:2]
        raise ValueError(
            f"{who_b}: trained on dataset {b}, {who_a} on dataset {a}, and neither saved its "
            "item ids to compare; a ranker blends models trained on the same items"
        )


def binary(m: sp.csr_matrix) -> sp.csr_matrix:
    """``m`` as float32 CSR with every stored value set to 1."""
    m = sp.csr_matrix(m, dtype=np.float32)
    m.data[:] = 1.0
    return m


def merge_valid(dataset: Dataset) -> Dataset:
    """The dataset with valid folded into train and no valid split (for the final refit).

    A new :class:`Dataset` built from the public fields (``dataclasses.replace`` runs its
    constructor), so it caches its own matrices and shares none with ``dataset``.
    """
    inter = dict(dataset.interactions)
    inter["train"] = pl.concat([inter["train"], inter.pop("valid")], how="vertical_relaxed")
    return dataclasses.replace(dataset, interactions=inter)
