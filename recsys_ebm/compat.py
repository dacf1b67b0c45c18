"""Is a model servable on a dataset? One rule for ``recommend``, the ranker, serving and evaluate.

A model may be served on a dataset when both index the **same item vocabulary**: the same raw item
ids in the same order. Users may differ (a dataset with other users, e.g. a newer log of the same
catalogue, is fine: they are served from their histories). The dataset the model was trained on
(``fit_info["dataset_fingerprint"]``) always passes; any other dataset passes only when the model
saved its item ids and they equal the dataset's. A model that saved neither is refused when the
item counts differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_model_matches_dataset"]


def check_model_matches_dataset(model: Any, dataset: Any, *, argument: str = "model") -> None:
    """Raise ValueError unless ``model`` indexes the same items as ``dataset`` (module docstring).

    Args:
        model: a fitted recommender (``n_items``, ``item_ids``, ``fit_info``).
        dataset: a :class:`~recsys_ebm.data.dataset.Dataset`.
        argument: the name the message gives the model (``--model`` in the CLI).
    """
    n_model, n_data = int(model.n_items), int(dataset.n_items)
    if n_model != n_data:
        raise ValueError(
            f"{argument}: the model was trained on {n_model} items, the dataset has {n_data}; "
            "serve a model on a dataset with the same item vocabulary"
        )
    fp = (getattr(model, "fit_info", None) or {}).get("dataset_fingerprint")
    if fp is not None and fp == dataset.fingerprint:
        return
    ids = getattr(model, "item_ids", None)
    if ids is None:
        if fp is None:
            return  # nothing to compare but the count, which matched
        raise ValueError(
            f"{argument}: the model was trained on dataset {fp}, not {dataset.fingerprint}, "
            "and saved no item ids to compare; serve it on the dataset it was trained on"
        )
    mine = [str(x) for x in np.asarray(ids, dtype=object)]
    theirs = [str(x) for x in np.asarray(dataset.item_ids, dtype=object)]
    if mine != theirs:
        diff = next(k for k, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b)
        raise ValueError(
            f"{argument}: the model's item vocabulary differs from the dataset's (dataset "
            f"{dataset.fingerprint}; first difference at item index {diff}: model has "
            f"{mine[diff]!r}, dataset has {theirs[diff]!r}); a model can be served only on a "
            "dataset with the same item ids in the same order"
        )
