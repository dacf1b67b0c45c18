"""The ranker's business filters: config exclude / allow lists (raw item ids), a call's allow
list (item indices) and genre predicates over the item metadata kept with the ranker.

:meth:`~recsys_ebm.ranking.ranker.Ranker.recommend` turns the mask into an exclude list, so a
filtered-out item is never served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from recsys_ebm.data.vocab import Vocabulary

if TYPE_CHECKING:
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.ranking.ranker import RankerConfig

__all__ = ["allowed_mask", "genres_of", "item_vocabulary"]


def allowed_mask(
    config: RankerConfig,
    n_items: int,
    item_vocab: Vocabulary | None,
    item_genres: list[list[str]] | None,
    allow: Any,
    genres_any: Any,
) -> np.ndarray:
    """(I,) bool: True for the items that config ``exclude_items`` / ``allow_items`` /
    ``genres_any``, ``allow`` (item indices) and ``genres_any`` (genre names) let through.

    Raises:
        ValueError: ``allow`` holds an index outside the catalogue, or genres are asked for
            and there is no item metadata.
    """
    ok = np.ones(n_items, dtype=bool)
    if config.exclude_items or config.allow_items:
        vocab = item_vocabulary(item_vocab, n_items)  # unknown config ids match nothing
        excl = vocab.index(list(config.exclude_items), unknown="missing")
        ok[excl[excl >= 0]] = False
        if config.allow_items:
            keep = np.zeros(n_items, dtype=bool)
            allow_idx = vocab.index(list(config.allow_items), unknown="missing")
            keep[allow_idx[allow_idx >= 0]] = True
            ok &= keep
    if allow is not None:
        a = np.asarray(allow, dtype=np.int64).ravel()
        if a.size and (a.min() < 0 or a.max() >= n_items):
            raise ValueError(f"allow: item indices must lie in [0, {n_items}), got {a}")
        keep = np.zeros(n_items, dtype=bool)
        keep[a] = True
        ok &= keep
    wanted = set(config.genres_any) | set(genres_any or ())
    if wanted:
        if item_genres is None:
            raise ValueError(
                "genres_any: this ranker has no item metadata (fit it with fit_dataset on a "
                "dataset that has genres)"
            )
        ok &= np.array([bool(wanted & set(g)) for g in item_genres], dtype=bool)
    return ok


def item_vocabulary(item_vocab: Vocabulary | None, n_items: int) -> Vocabulary:
    """The item vocabulary, or item indices as ids when the ranker saved none."""
    if item_vocab is not None:
        return item_vocab
    return Vocabulary(np.arange(n_items), name="item")


def genres_of(dataset: Dataset) -> list[list[str]] | None:
    """Per item index, the item's genre names from the dataset's metadata (None without a
    ``genres`` column); items missing from the metadata get no genre."""
    meta = dataset.item_metadata
    if meta is None or "genres" not in meta.columns:
        return None
    out: list[list[str]] = [[] for _ in range(dataset.n_items)]
    pos = dataset.item_index(meta["item_id"], unknown="missing")  # -1: not in the catalogue
    for k, g in zip(pos.tolist(), meta["genres"].to_list(), strict=True):
        if k >= 0:
            out[k] = [str(x) for x in (g or [])]
    return out
