"""Is a model servable on a dataset? One rule for ``recommend``, the ranker, serving and evaluate.

A model may be served on a dataset when both index the **same item vocabulary**: the same raw item
ids in the same order. Users may differ (a dataset with other users, e.g. a newer log of the same
catalogue, is fine: they are served from their histories). The dataset the model was trained on
(``fit_info["dataset_fingerprint"]``) always passes; any other dataset passes only when the model
saved its item ids and they equal the dataset's under the id rule of
:class:`recsys_ebm.data.vocab.Vocabulary` (``[1, 2]`` equals ``["1", "2"]``; ``"042"`` is not
``42``). A model that saved neither is refused when the item counts differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_model_matches_dataset"]


def check_model_matches_dataset(model: Any, dataset: Any, *, argument: str = "model") -> None:
    """Raise ValueError unless ``model`` indexes the same items as ``dataset`` (module docstring).

    Args:
        model: a fitted recommender (``n_items``, ``item_ids``, ``fit_info``).
        dataset: a :class:`~recsys_ebm.data.dataset.Dataset` (its ``item_vocab`` compares).
        argument: the name the message gives the model: the caller's argument (``model``).
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
    # the dataset's Vocabulary decides (its id rule: 42 and "42" are the same id, "042" is not):
    # equal when the model's k-th id is the dataset's k-th id for every k
    ids = np.asarray(ids, dtype=object).reshape(-1)
    pos = np.asarray(dataset.item_vocab.index(ids, unknown="missing"), dtype=np.int64)
    n = min(len(ids), n_data)
    bad = np.flatnonzero(pos[:n] != np.arange(n))
    if bad.size or len(ids) != n_data:
        diff = int(bad[0]) if bad.size else n
        mine = ids[diff] if diff < len(ids) else "(none)"
        theirs = dataset.item_ids[diff] if diff < n_data else "(none)"
        raise ValueError(
            f"{argument}: the model's item vocabulary differs from the dataset's (dataset "
            f"{dataset.fingerprint}; first difference at item index {diff}: model has "
            f"{_py(mine)!r}, dataset has {_py(theirs)!r}); a model can be served only on a "
            "dataset with the same item ids in the same order"
        )


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x
