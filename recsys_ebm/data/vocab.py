"""The one mapping between raw ids (users, items) and integer indices: :class:`Vocabulary`.

Raw ids live at the edges (input files, requests, output files); inside, everything is an index
``0 .. len(vocab) - 1``. Every part of the package that turns raw ids into indices - the
:class:`~recsys_ebm.data.dataset.Dataset`, every model, the ranker, serving and the batch job -
goes through this class, so one id gets one answer everywhere.

**The id rule.** A vocabulary holds either integer ids or string ids (never a mix), stored in
their original type. A query matches an id when both are written the same way in decimal:

* ``42`` and ``"42"`` name the same id, whichever type the vocabulary holds; an integral float
  (``42.0``, as pandas and JSON produce) counts as the int ``42``.
* Nothing else is converted: ``"042"``, ``" 42"`` and ``"+42"`` do not find ``42`` (zero-padded
  string ids, such as MovieTweetings' ``"0000008"``, stay strings and match only themselves),
  ``42.5``, booleans and ``None`` find nothing.

**Unknown ids.** :meth:`Vocabulary.index` raises ``ValueError`` naming the argument and the first
few unknown ids (``unknown="raise"``, the default), or returns ``-1`` for them when asked
(``unknown="missing"``). Never an ``IndexError``.

Lookups are vectorised (numpy ``searchsorted`` over the sorted ids, polars for string parsing):
100k ids take well under a second (tens of milliseconds from a typed array). A vocabulary saves
as a JSON list of its ids (the ``items.json`` / ``users.json`` of a model directory), written
atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys_ebm.io import atomic_file

__all__ = ["UNKNOWN_POLICIES", "Vocabulary"]

#: what :meth:`Vocabulary.index` does with an id it does not hold
UNKNOWN_POLICIES = ("raise", "missing")
_SHOW = 5  # unknown / duplicate ids quoted in a message
_INT64_MAX = float(np.iinfo(np.int64).max)


class Vocabulary:
    """Raw ids <-> indices ``0 .. n-1`` under one id rule (see the module docstring).

    Args:
        ids: the raw id of each index, in index order: a sequence, numpy array or polars Series
            of ints, or of strings. A :class:`Vocabulary` is copied.
        name: what the ids are ("item", "user"), used in error messages.

    Raises:
        TypeError: ``ids`` mixes ints and strings, or holds another type (floats, None...).
        ValueError: ``ids`` holds a duplicate (under the id rule).

    Example:
        >>> v = Vocabulary([10, 42, 7], name="item")
        >>> v.index([42, "7"]).tolist()
        [1, 2]
        >>> v.index(["042", 10], unknown="missing").tolist()
        [-1, 0]
    """

    __slots__ = ("_ids", "_kind", "_name", "_objects", "_order", "_sorted", "_text")

    def __init__(self, ids: Any, *, name: str = "") -> None:
        self._name = str(name)
        if isinstance(ids, Vocabulary):
            values, kind = ids._ids, ids._kind
        else:
            values, kind = _typed_ids(ids, name)
        self._ids = values
        self._kind: Literal["int", "str"] = kind
        self._order = np.argsort(values, kind="stable")
        self._sorted = values[self._order]
        self._objects: np.ndarray | None = None
        self._text: np.ndarray | None = None
        if len(values) > 1:
            dup = self._sorted[1:] == self._sorted[:-1]
            if dup.any():
                few = [_py(x) for x in np.unique(self._sorted[1:][dup])[:_SHOW]]
                raise ValueError(
                    f"ids: {self._where} needs unique ids; got {int(dup.sum())} "
                    f"duplicate(s), e.g. {few}"
                )

    # ------------------------------------------------------------------ basic protocol
    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> Literal["int", "str"]:
        """``"int"`` or ``"str"``: the type the ids are stored in."""
        return self._kind

    @property
    def ids(self) -> np.ndarray:
        """(n,) read-only object array: the raw id (Python int or str) of each index."""
        if self._objects is None:
            obj = self._ids.astype(object) if self._kind == "int" else self._ids.tolist()
            arr = np.empty(len(self._ids), dtype=object)
            arr[:] = obj
            arr.setflags(write=False)
            self._objects = arr
        return self._objects

    def to_series(self, name: str = "id") -> pl.Series:
        """The ids as a typed polars Series (Int64 or String), in index order."""
        dtype = pl.Int64 if self._kind == "int" else pl.String
        return pl.Series(name, self._ids, dtype=dtype)

    def to_list(self) -> list[Any]:
        """The ids as a list of Python ints or strs, in index order (what :meth:`save` writes)."""
        return self._ids.tolist()

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __iter__(self) -> Iterator[Any]:
        return iter(self.to_list())

    def __contains__(self, raw_id: object) -> bool:
        return bool(self.index([raw_id], unknown="missing")[0] >= 0)

    def __eq__(self, other: object) -> bool:
        """Same ids in the same order, under the id rule (``[1, 2]`` equals ``["1", "2"]``)."""
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.first_difference(other) is None

    __hash__ = None  # type: ignore[assignment]  # equality is by content across kinds

    def first_difference(self, other: Vocabulary) -> int | None:
        """Index of the first position where the two vocabularies' ids differ (under the id
        rule), ``min(len)`` when one is a prefix of the other, None when they are equal."""
        n = min(len(self), len(other))
        if self._kind == other._kind:
            neq = self._ids[:n] != other._ids[:n]
        else:
            neq = self._as_text()[:n] != other._as_text()[:n]
        hits = np.flatnonzero(neq)
        if hits.size:
            return int(hits[0])
        return None if len(self) == len(other) else n

    def __repr__(self) -> str:
        head = self.to_list()[:3]
        more = ", ..." if len(self) > 3 else ""
        return (
            f"Vocabulary(name={self._name!r}, kind={self._kind!r}, n={len(self)}, "
            f"ids=[{', '.join(map(repr, head))}{more}])"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"ids": self._ids, "kind": self._kind, "name": self._name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ids"], name=state["name"])  # type: ignore[misc]

    # ------------------------------------------------------------------ lookups
    def index(
        self,
        raw_ids: Any,
        *,
        unknown: str = "raise",
        argument: str = "raw_ids",
    ) -> np.ndarray:
        """Raw ids -> (n,) int64 indices (a single id gives a length-1 array).

        Args:
            raw_ids: one raw id, or a sequence / numpy array / polars Series of them.
            unknown: ``"raise"`` (default) or ``"missing"`` (unknown ids map to -1).
            argument: the caller's argument name, quoted in the error message.

        Raises:
            ValueError: ``unknown="raise"`` and some id is not in the vocabulary (the message
                names ``argument`` and up to five unknown ids); or a bad ``unknown``.
        """
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown: expected one of {UNKNOWN_POLICIES}, got {unknown!r}")
        arr = _as_query_array(raw_ids)
        keys, ok = self._normalise(arr)
        out = np.full(arr.shape[0], -1, dtype=np.int64)
        if len(self) and ok.any():
            pos = np.searchsorted(self._sorted, keys[ok])
            pos = np.minimum(pos, len(self) - 1)
            hit = self._sorted[pos] == keys[ok]
            found = np.full(pos.shape[0], -1, dtype=np.int64)
            found[hit] = self._order[pos[hit]]
            out[ok] = found
        if unknown == "raise" and (out < 0).any():
            raise self._unknown_error(arr, out, argument)
        return out

    def get(self, raw_id: Any, default: int = -1) -> int:
        """Index of one raw id, or ``default`` when the vocabulary does not hold it."""
        k = int(self.index([raw_id], unknown="missing")[0])
        return k if k >= 0 else default

    def lookup(self, indices: Any) -> np.ndarray:
        """Indices -> raw ids (object array); the inverse of :meth:`index`.

        Raises:
            ValueError: an index is outside ``0 .. len - 1`` (``-1`` included).
        """
        idx = np.asarray(indices, dtype=np.int64)
        bad = (idx < 0) | (idx >= len(self))
        if bad.any():
            raise ValueError(
                f"indices: expected indices of {self._where} in 0..{len(self) - 1}, got "
                f"{idx[bad][:_SHOW].tolist()}"
            )
        return self.ids[idx]

    @property
    def _where(self) -> str:
        return f"the {self._name} vocabulary" if self._name else "the vocabulary"

    def _as_text(self) -> np.ndarray:
        if self._text is None:
            self._text = self._ids.astype(str) if self._kind == "int" else self._ids
        return self._text

    def _normalise(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Query array -> (keys in this vocabulary's type, mask of the keys that can match)."""
        ints, strs, ok_i, ok_s = _split_query(arr)
        n = arr.shape[0]
        if self._kind == "int":
            keys = np.zeros(n, dtype=np.int64)
            keys[ok_i] = ints[ok_i]
            if ok_s.any():
                parsed, good = _parse_decimal(strs[ok_s])
                sub = np.flatnonzero(ok_s)
                keys[sub[good]] = parsed[good]
                ok_s = ok_s.copy()
                ok_s[sub[~good]] = False
            return keys, ok_i | ok_s
        keys = np.empty(n, dtype=object)
        keys[:] = ""
        keys[ok_s] = strs[ok_s]
        if ok_i.any():
            keys[ok_i] = ints[ok_i].astype(str).tolist()
        return keys.astype(str), ok_i | ok_s

    def _unknown_error(self, arr: np.ndarray, out: np.ndarray, argument: str) -> ValueError:
        miss = np.flatnonzero(out < 0)
        few = [_py(x) for x in arr[miss[:_SHOW]]]
        more = f" (and {miss.size - _SHOW} more)" if miss.size > _SHOW else ""
        return ValueError(
            f"{argument}: {miss.size} of {arr.shape[0]} id(s) not in {self._where} "
            f"({len(self)} {self._kind} ids): {few!r}{more}. Ids match "
            "as an int or its decimal string (42 or '42'); '042' is not 42"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the ids as a JSON list, atomically (replaces an existing file)."""
        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_list()))
        return path

    @classmethod
    def load(cls, path: str | Path, *, name: str = "") -> Vocabulary:
        """Read a JSON list of ids written by :meth:`save` (or a model's items.json).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a JSON list of unique ints or strings (names the file).
        """
        path = Path(path)
        try:
            ids = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"path: {path} is not valid JSON ({exc})") from exc
        if not isinstance(ids, list):
            raise ValueError(f"path: {path}: expected a JSON list of ids, got {type(ids).__name__}")
        try:
            return cls(ids, name=name)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"path: {path}: {exc}") from exc


# ---------------------------------------------------------------------- helpers
def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _typed_ids(ids: Any, name: str) -> tuple[np.ndarray, Literal["int", "str"]]:
    """Vocabulary ids -> (int64 or unicode numpy array, kind)."""
    name = f"{name} ids" if name else "ids"
    if isinstance(ids, pl.Series):
        if ids.dtype.is_integer():
            return ids.cast(pl.Int64).to_numpy().astype(np.int64), "int"
        if ids.dtype == pl.String:
            if ids.null_count():
                raise TypeError(f"ids: {name} cannot be null")
            return _unicode(ids.to_list()), "str"
        raise TypeError(f"ids: expected integer or string {name}, got a {ids.dtype} Series")
    if isinstance(ids, str) or not isinstance(ids, Iterable | np.ndarray):
        raise TypeError(
            f"ids: expected a sequence of {name} (ints or strings), got {type(ids).__name__}"
        )
    arr = np.asarray(ids) if isinstance(ids, np.ndarray) else _object_array(list(ids))
    if arr.ndim != 1:
        raise TypeError(f"ids: expected a 1-D sequence of {name}, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), "int"
    if arr.dtype.kind == "U":
        return arr, "str"
    if arr.dtype.kind == "O":
        values = arr.tolist()
        if all(isinstance(x, int) and not isinstance(x, bool) for x in values):
            return np.asarray(values, dtype=np.int64).reshape(-1), "int"
        if all(isinstance(x, str) for x in values):
            return _unicode(values), "str"
        bad = next((x for x in values if isinstance(x, bool) or not isinstance(x, int | str)), None)
        what = "a mix of ints and strings" if bad is None else f"{type(bad).__name__} {bad!r}"
        raise TypeError(f"ids: {name} must be all ints or all strings, got {what}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), "int"
    raise TypeError(f"ids: {name} must be ints or strings, got dtype {arr.dtype}")


def _unicode(values: list[str]) -> np.ndarray:
    return np.asarray(values, dtype=str) if values else np.zeros(0, dtype="<U1")


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [_py(x) for x in values]
    return out


def _as_query_array(raw_ids: Any) -> np.ndarray:
    """One id or many -> a 1-D numpy array (object for Python lists, so nothing is coerced)."""
    if isinstance(raw_ids, pl.Series):
        return (
            raw_ids.to_numpy() if raw_ids.dtype.is_numeric() else _object_array(raw_ids.to_list())
        )
    if isinstance(raw_ids, np.ndarray):
        return raw_ids.reshape(-1) if raw_ids.ndim else raw_ids.reshape(1)
    if isinstance(raw_ids, str | bytes | int | float | np.generic) or raw_ids is None:
        return _object_array([raw_ids])
    if isinstance(raw_ids, Iterable):
        return _object_array(list(raw_ids))
    return _object_array([raw_ids])


def _split_query(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ints int64, strs object, int mask, str mask) of a query array; other values match
    nothing (bools, None, NaN, non-integral floats, other objects)."""
    n = arr.shape[0]
    ints = np.zeros(n, dtype=np.int64)
    strs = np.empty(n, dtype=object)
    ok_i = np.zeros(n, dtype=bool)
    ok_s = np.zeros(n, dtype=bool)
    kind = arr.dtype.kind
    if kind in "iu":
        if kind == "u":
            ok_i = arr <= np.iinfo(np.int64).max
            ints[ok_i] = arr[ok_i].astype(np.int64)
        else:
            ints, ok_i = arr.astype(np.int64), np.ones(n, dtype=bool)
    elif kind == "f":
        with np.errstate(invalid="ignore"):
            ok_i = np.isfinite(arr) & (np.floor(arr) == arr) & (np.abs(arr) < _INT64_MAX)
        ints[ok_i] = arr[ok_i].astype(np.int64)
    elif kind in "US":
        strs[:] = arr.astype(str).tolist()
        ok_s[:] = True
    elif kind == "O":
        values = arr.tolist()
        types = set(map(type, values))
        if types == {str}:
            return ints, arr, ok_i, np.ones(n, dtype=bool)
        if types == {int} and all(-(2**63) <= x < 2**63 for x in values):
            return np.asarray(values, dtype=np.int64), strs, np.ones(n, dtype=bool), ok_s
        for k, x in enumerate(values):
            if isinstance(x, bool):
                continue
            if isinstance(x, str):
                strs[k], ok_s[k] = x, True
            elif isinstance(x, int):
                if -(2**63) <= x < 2**63:
                    ints[k], ok_i[k] = x, True
            elif isinstance(x, float) and x.is_integer() and abs(x) < _INT64_MAX:
                ints[k], ok_i[k] = int(x), True
    return ints, strs, ok_i, ok_s


def _parse_decimal(strs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (int64 values, mask of the strings that are an int's canonical decimal)."""
    s = pl.Series(strs.tolist(), dtype=pl.String)
    parsed = s.str.to_integer(strict=False)
    canonical = (parsed.cast(pl.String) == s).fill_null(False)
    return parsed.fill_null(0).to_numpy().astype(np.int64), canonical.to_numpy().astype(bool)
