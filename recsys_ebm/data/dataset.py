"""A prepared dataset directory and its Python handle, :class:`Dataset`.

Directory layout (format version 1)::

    manifest.json            format version, source, options, counts, content fingerprint
    users.parquet            index (Int64), user_id (raw, Int64 or String)
    items.parquet            index (Int64), item_id (raw)
    item_metadata.parquet    item_id, title, genres (list[str]) - when the source has them
    interactions/{split}.parquet   user_idx, item_idx, rating, timestamp
    matrices/{split}.npz     (users x items) float32 CSR of ones
    matrices/{split}_ratings.npz   same pattern, rating values (when ratings exist)

Splits: ``train``, ``valid`` (optional), ``test``, and for the held-out-users protocol
``fold_in`` - the 80 % of each held-out user's history that is given to the model at evaluation
time (never trained on). Every matrix has the full (n_users, n_items) shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_ebm.data.vocab import Vocabulary

__all__ = ["DATASET_FORMAT_VERSION", "SPLIT_NAMES", "Dataset"]

DATASET_FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "valid", "test", "fold_in")


@dataclass
class Dataset:
    """Prepared interactions: vocabularies, per-split matrices and the manifest.

    Build one with :func:`recsys_ebm.data.prepare.prepare` or load one with :meth:`load`.
    """

    users: pl.DataFrame  # index, user_id
    items: pl.DataFrame  # index, item_id
    interactions: dict[str, pl.DataFrame]  # split -> user_idx, item_idx, rating, timestamp
    manifest: dict[str, Any] = field(default_factory=dict)
    item_metadata: pl.DataFrame | None = None
    path: Path | None = None

    # ------------------------------------------------------------------ shape and vocabularies
    @property
    def n_users(self) -> int:
        return self.users.height

    @property
    def n_items(self) -> int:
        return self.items.height

    @cached_property
    def user_vocab(self) -> Vocabulary:
        """The user :class:`~recsys_ebm.data.vocab.Vocabulary` (raw id <-> row index)."""
        return Vocabulary(self.users["user_id"], name="user")

    @cached_property
    def item_vocab(self) -> Vocabulary:
        """The item :class:`~recsys_ebm.data.vocab.Vocabulary` (raw id <-> column index)."""
        return Vocabulary(self.items["item_id"], name="item")

    @property
    def user_ids(self) -> np.ndarray:
        """(U,) raw user id of each index (read-only object array)."""
        return self.user_vocab.ids

    @property
    def item_ids(self) -> np.ndarray:
        """(I,) raw item id of each index (read-only object array)."""
        return self.item_vocab.ids

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))

    def user_index(
        self, raw_ids: Any, *, unknown: str = "missing", argument: str = "raw_ids"
    ) -> np.ndarray:
        """Raw user ids -> (n,) int64 row indices, under the vocabulary's id rule.

        ``"42"`` finds 42 and 42 finds ``"42"``, but ``"042"`` does not find 42 (see
        :mod:`recsys_ebm.data.vocab`). Unknown ids map to -1 (``unknown="missing"``, the
        default) or raise a ValueError naming ``argument`` (``unknown="raise"``).
        """
        return self.user_vocab.index(raw_ids, unknown=unknown, argument=argument)

    def item_index(
        self, raw_ids: Any, *, unknown: str = "missing", argument: str = "raw_ids"
    ) -> np.ndarray:
        """Raw item ids -> (n,) int64 column indices; the policies of :meth:`user_index`."""
        return self.item_vocab.index(raw_ids, unknown=unknown, argument=argument)

    # ------------------------------------------------------------------ matrices
    @property
    def splits(self) -> list[str]:
        return [s for s in SPLIT_NAMES if s in self.interactions]

    def matrix(self, split: str, *, values: str = "binary") -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR of ``split``; ``values`` is "binary" or "rating"."""
        if split not in self.interactions:
            raise KeyError(f"split: {split!r} not in this dataset (has {self.splits})")
        if values not in ("binary", "rating"):
            raise ValueError(f"values: expected 'binary' or 'rating', got {values!r}")
        key = (split, values)
        cache = self.__dict__.setdefault("_matrix_cache", {})
        if key not in cache:
            df = self.interactions[split]
            if values == "rating":
                if df["rating"].null_count() == df.height and df.height:
                    raise ValueError(f"values: split {split!r} has no ratings")
                data = df["rating"].fill_null(0.0).to_numpy().astype(np.float32)
            else:
                data = np.ones(df.height, dtype=np.float32)
            cache[key] = build_csr(
                df["user_idx"].to_numpy(), df["item_idx"].to_numpy(), data, self.shape
            )
        return cache[key]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)

    @property
    def train(self) -> sp.csr_matrix:
        return self.matrix("train")

    @property
    def valid(self) -> sp.csr_matrix | None:
        return self.matrix("valid") if "valid" in self.interactions else None

    @property
    def test(self) -> sp.csr_matrix:
        return self.matrix("test")

    def history(self, split: str, *, values: str = "binary") -> sp.csr_matrix:
        """The history a model sees when it is evaluated on ``split`` (and whose items are masked).

        * ``valid``: train (+ fold-in for held-out users).
        * ``test``: train + valid (+ fold-in): everything known before the test period.

        ``values="rating"`` gives the same pattern with rating values (for rating models such
        as the softmax RBM); the target split is never included.
        """
        if split == "valid":
            parts = ["train", "fold_in"]
        elif split == "test":
            parts = ["train", "valid", "fold_in"]
        else:
            raise ValueError(f"split: expected 'valid' or 'test', got {split!r}")
        mats = [self.matrix(p, values=values) for p in parts if p in self.interactions]
        out = mats[0]
        for m in mats[1:]:
            out = out + m  # the parts are disjoint, so rating values are never summed
        out = out.tocsr()
        if values == "binary":
            out.data[:] = 1.0
        return out

    def ratings(self, split: str) -> sp.csr_matrix:
        """Rating values of ``split`` as CSR (for the softmax RBM and RMSE)."""
        return self.matrix(split, values="rating")

    @property
    def has_ratings(self) -> bool:
        return bool(self.manifest.get("has_ratings", False))

    def eval_users(self, split: str = "test") -> np.ndarray:
        """Indices of users with at least one interaction in ``split`` and a non-empty history."""
        target = self.matrix(split).getnnz(axis=1) > 0
        hist = self.history(split).getnnz(axis=1) > 0
        return np.flatnonzero(target & hist)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the dataset directory atomically."""
        from recsys_ebm.data.store import save_dataset

        return save_dataset(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Load a directory written by ``recsys-ebm prepare`` or :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` is not a prepared dataset directory.
            ValueError: the directory has another format version.
        """
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(
                f"data: {path} is not a prepared dataset (no manifest.json); "
                "run `recsys-ebm prepare --out DIR` first"
            )
        manifest = json.loads(mpath.read_text())
        if manifest.get("format_version") != DATASET_FORMAT_VERSION:
            raise ValueError(
                f"data: {path} has dataset format {manifest.get('format_version')}, "
                f"this version reads {DATASET_FORMAT_VERSION}"
            )
        interactions = {
            s: pl.read_parquet(path / "interactions" / f"{s}.parquet")
            for s in SPLIT_NAMES
            if (path / "interactions" / f"{s}.parquet").is_file()
        }
        meta_path = path / "item_metadata.parquet"
        ds = cls(
            users=pl.read_parquet(path / "users.parquet"),
            items=pl.read_parquet(path / "items.parquet"),
            interactions=interactions,
            manifest=manifest,
            item_metadata=pl.read_parquet(meta_path) if meta_path.is_file() else None,
            path=path,
        )
        cache = ds.__dict__.setdefault("_matrix_cache", {})
        for s in interactions:
            f = path / "matrices" / f"{s}.npz"
            if f.is_file():
                cache[(s, "binary")] = sp.csr_matrix(sp.load_npz(f), dtype=np.float32)
        return ds

    def summary(self) -> dict[str, Any]:
        """Users, items, interactions per split and density, as printed by ``prepare``."""
        counts = {s: int(self.interactions[s].height) for s in self.splits}
        total = sum(counts.values())
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": counts,
            "density": total / max(1, self.n_users * self.n_items),
        }


def build_csr(
    rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR from COO triples without densifying; duplicates (there should be none) are summed."""
    m = sp.csr_matrix(
        (data.astype(np.float32), (rows.astype(np.int64), cols.astype(np.int64))),
        shape=shape,
        dtype=np.float32,
    )
    m.sort_indices()
    return m

