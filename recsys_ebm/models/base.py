"""The one contract every recommender implements (implicit's ``RecommenderBase``, in energies).

A model maps a user's history (one CSR row over the catalogue) to an **energy** per item:
lower = better, and p(item | user) is proportional to exp(-energy). Baselines whose natural output
is a score s report energy -s. Everything that ranks can therefore be mixed by the ranker.

Subclasses implement :meth:`fit`, :meth:`_energies_block` and the two persistence hooks
:meth:`_state_tensors` / :meth:`_load_state`; :meth:`recommend`, :meth:`energies`, input checks,
seen-item masking, chunking and saving are shared here. The input checks live in
:mod:`recsys_ebm.models._checks` and the model-file helpers in :mod:`recsys_ebm.models._persist`;
both are re-exported from this module.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from recsys_ebm.config import Config
from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.diagnostics import ModelFileError, NotFittedError
from recsys_ebm.io import atomic_dir
from recsys_ebm.models._checks import (
    as_user_items,
    check_exclude,
    check_fit_inputs,
    check_items_at,
    csr_to_torch,
)
from recsys_ebm.models._persist import (
    _RETRAIN,
    _RETRAIN_HINT,
    FORMAT_VERSION,
    _json_default,
    _read_json,
    copy_model_dir,
    read_model_json,
)

__all__ = [
    "FORMAT_VERSION",
    "EpochCallback",
    "Recommender",
    "as_user_items",
    "check_exclude",
    "check_fit_inputs",
    "check_items_at",
    "copy_model_dir",
    "csr_to_torch",
    "mask_block",
    "read_model_json",
]

#: ``callback(epoch, metrics)`` is called once per training epoch with that epoch's figures.
EpochCallback = Callable[[int, dict[str, float]], None]
# Upper bound on floats held per scoring block (users x items): 2**25 floats = 128 MiB.
_BLOCK_FLOATS = 2**25


class Recommender(abc.ABC):
    """Base class: ``fit`` / ``energies`` / ``recommend`` / ``save`` / ``load``.

    Attributes:
        config: the model's frozen config.
        n_items: catalogue size seen at fit time (columns of every history matrix).
        item_ids: optional raw item ids (index -> raw id), saved with the model.
        user_ids: optional raw user ids of the training rows, saved with the model.
        fit_info: per-epoch training curves and summary figures (logged to MLflow).
    """

    #: registry key used by the CLI (``--model NAME``)
    name: ClassVar[str] = ""
    config_class: ClassVar[type[Config]] = Config
    #: device the energies are computed on; models with torch parameters override.
    device: torch.device = torch.device("cpu")
    #: True when an empty history is served by a deliberate fallback (the ranker's popularity
    #: list): batch jobs then serve requested users who have no history at all.
    has_fallback: ClassVar[bool] = False
    #: True for the reference models (popularity, EASE, ALS, BPR): the evaluation report
    #: compares every other model with the best of them.
    is_baseline: ClassVar[bool] = False
    #: "binary": histories are 0/1 interaction rows; "rating": their values are ratings (the
    #: softmax RBM). Evaluation and batch jobs pass ``dataset.history(split, values=...)``.
    history_values: ClassVar[str] = "binary"

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.config_class.from_dict(overrides)
        elif overrides:
            config = config.replace(**overrides)
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"config: expected {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.n_items: int | None = None
        #: raw item ids <-> indices (saved as items.json); None when the model was fitted on a
        #: bare matrix. ``item_ids`` / ``user_ids`` are views of these vocabularies.
        self.item_vocab: Vocabulary | None = None
        #: raw user ids of the training rows (saved as users.json), or None
        self.user_vocab: Vocabulary | None = None
        self.fit_info: dict[str, Any] = {}

    @property
    def item_ids(self) -> np.ndarray | None:
        """(I,) raw item id of each index (read-only object array), or None; set it with any
        sequence of ids (or a Vocabulary) to replace :attr:`item_vocab`."""
        return None if self.item_vocab is None else self.item_vocab.ids

    @item_ids.setter
    def item_ids(self, ids: Any) -> None:
        self.item_vocab = None if ids is None else Vocabulary(ids, name="item")

    @property
    def user_ids(self) -> np.ndarray | None:
        """(U,) raw user id of each training row (read-only object array), or None."""
        return None if self.user_vocab is None else self.user_vocab.ids

    @user_ids.setter
    def user_ids(self, ids: Any) -> None:
        self.user_vocab = None if ids is None else Vocabulary(ids, name="user")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # ----------------------------------------------------------------------------- subclass API
    @abc.abstractmethod
    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        """Train on a users x items CSR matrix; ``valid`` (same shape) is for early stopping."""

    @abc.abstractmethod
    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor | np.ndarray:
        """Energies for a block of users: (B, I) or (B, len(items)) when ``items`` is given.

        ``users`` holds the training-row index of each history row, or -1 for a user not seen in
        training; models without per-user parameters ignore it. Return a fresh tensor (or a
        non-contiguous view, which is copied): :meth:`recommend` writes +inf into it in place.
        """

    def fit_dataset(self, dataset: Any, *, callback: EpochCallback | None = None) -> Self:
        """Train from a prepared :class:`~recsys_ebm.data.dataset.Dataset` (what the CLI calls).

        The default uses the binary train/valid matrices; models that need ratings or item
        metadata override this. The test split is never passed.
        """
        self.fit(dataset.train, dataset.valid, callback=callback)
        self.item_vocab, self.user_vocab = dataset.item_vocab, dataset.user_vocab
        return self

    def _top_block(
        self,
        user_items: sp.csr_matrix,
        users: np.ndarray | None,
        k: int,
        exclude_seen: bool,
        exclude: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional fast path of :meth:`recommend` over the whole catalogue: the block's exact
        ``(energies, items)`` top-``k`` (B, k), ascending, with the seen items (when
        ``exclude_seen``) and ``exclude`` never served (:func:`mask_block` writes the mask), or
        None to use :meth:`_energies_block` (the default)."""
        return None

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors to save (CPU, contiguous)."""
        return {}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore from :meth:`_state_tensors` output."""
        return None

    def _extra_meta(self) -> dict[str, Any]:
        """JSON-serialisable extras saved in ``model.json``."""
        return {}

    # ----------------------------------------------------------------------------- shared API
    def _check_fitted(self) -> int:
        if self.n_items is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() or load()")
        return self.n_items

    def _check_users(self, users: Any, n_rows: int) -> np.ndarray | None:
        if users is None:
            return None
        users = np.asarray(users)
        if users.ndim == 0:
            users = users[None]
        if users.shape != (n_rows,) or not np.issubdtype(users.dtype, np.integer):
            raise ValueError(
                f"users: expected {n_rows} integer training-row indices (one per row of "
                f"user_items, -1 for unknown users), got array of shape {users.shape} "
                f"dtype {users.dtype}"
            )
        return users.astype(np.int64)

    def _block_rows(self, n_cols: int, batch_size: int | None) -> int:
        if batch_size is not None:
            if batch_size <= 0:
                raise ValueError(f"batch_size: expected > 0, got {batch_size}")
            return batch_size
        return max(1, min(4096, _BLOCK_FLOATS // max(1, n_cols)))

    def _recommend_rows(self, n_cols: int, batch_size: int | None) -> int:
        """Users per block of :meth:`recommend` (default: :meth:`_block_rows`; a model whose
        serving path holds fewer (B, I) arrays than its scoring path overrides it)."""
        return self._block_rows(n_cols, batch_size)

    def energies(
        self,
        user_items: sp.csr_matrix,
        *,
        users: np.ndarray | None = None,
        items: np.ndarray | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Energy of every (history row, item): float32 array (U, I) or (U, len(items))."""
        n_items = self._check_fitted()
        user_items = as_user_items(user_items, n_items)
        users = self._check_users(users, user_items.shape[0])
        if items is not None:
            items = np.asarray(items, dtype=np.int64)
            if items.ndim != 1 or (items.size and (items.min() < 0 or items.max() >= n_items)):
                raise ValueError(f"items: expected 1-D item indices in [0, {n_items}), got {items}")
        n_cols = n_items if items is None else len(items)
        step = self._block_rows(n_cols, batch_size)
        out = np.empty((user_items.shape[0], n_cols), dtype=np.float32)
        for start in range(0, user_items.shape[0], step):
            stop = min(start + step, user_items.shape[0])
            block = self._energies_block(
                user_items[start:stop], None if users is None else users[start:stop], items
            )
            if isinstance(block, torch.Tensor):
                block = block.detach().float().cpu().numpy()
            out[start:stop] = block
        return out

    def recommend(
        self,
        user_items: sp.csr_matrix,
        n: int = 10,
        *,
        users: np.ndarray | None = None,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` lowest-energy items for each row of ``user_items``.

        Args:
            user_items: (U, I) CSR histories. With ``exclude_seen`` its non-zeros are masked:
                the mask always comes from this matrix, never from state captured at fit time.
            n: list length (> 0).
            users: optional training-row index per history row (-1 = unknown user).
            exclude_seen: drop items present in the history.
            candidates: restrict to these item indices, 1-D (shared) or 2-D (U, C) per user
                (-1 entries are padding).
            exclude: item indices never to recommend (1-D).
            batch_size: users per scoring block (default bounds a block to 128 MiB).

        Returns:
            ``(items, energies)``: int64 (U, n) and float32 (U, n), ascending energy. Rows with
            fewer than ``n`` eligible items are padded with item -1 and energy +inf.
        """
        n_items = self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        user_items = as_user_items(user_items, n_items)
        n_rows = user_items.shape[0]
        users = self._check_users(users, n_rows)
        cand = None if candidates is None else np.asarray(candidates, dtype=np.int64)
        if cand is not None:
            if cand.ndim not in (1, 2) or (cand.ndim == 2 and cand.shape[0] != n_rows):
                raise ValueError(
                    f"candidates: expected 1-D item indices or a ({n_rows}, C) array, "
                    f"got shape {cand.shape}"
                )
            if cand.size and (cand.max() >= n_items or cand.min() < -1):
                raise ValueError(f"candidates: item indices must lie in [0, {n_items})")
        excl = None if exclude is None else check_exclude(exclude, n_items)

        n_cols = n_items if cand is None or cand.ndim == 2 else len(cand)
        k = int(min(n, n_cols))
        step = self._recommend_rows(n_cols, batch_size)
        out_items = np.full((n_rows, n), -1, dtype=np.int64)
        out_en = np.full((n_rows, n), np.inf, dtype=np.float32)
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            block_ui = user_items[start:stop]
            block_users = None if users is None else users[start:stop]
            cols = cand if cand is not None and cand.ndim == 1 else None
            top = None
            if cand is None:  # a model's exact top-k without every energy (e.g. the RBM's)
                top = self._top_block(block_ui, block_users, k, exclude_seen, excl)
            if top is not None:
                top_en, top_items = top  # (B, k)
                top_items = top_items.masked_fill(torch.isinf(top_en) & (top_en > 0), -1)
                out_items[start:stop, :k] = top_items.cpu().numpy()
                out_en[start:stop, :k] = top_en.cpu().numpy()
                continue
            en = self._energies_block(block_ui, block_users, cols)
            # (B, n_cols) energies we may overwrite: models return fresh tensors; views (e.g.
            # popularity's expanded row) are copied first
            en = torch.as_tensor(en).float()
            if not en.is_contiguous():
                en = en.contiguous()
            dev = en.device
            inf = float("inf")
            # masked entries: the history's items (from the matrix passed now) and ``exclude``
            rows = cols_i = None
            if exclude_seen and block_ui.nnz:
                coo = block_ui.tocoo()
                rows = torch.as_tensor(coo.row, dtype=torch.long, device=dev)
                cols_i = torch.as_tensor(coo.col, dtype=torch.long, device=dev)
            excl_t = torch.as_tensor(excl, device=dev) if excl is not None and excl.size else None
            if cols is not None:  # shared 1-D candidates: map item index -> column position
                colt = torch.as_tensor(cols, device=dev)
                where = torch.full((n_items,), -1, dtype=torch.long, device=dev)
                where[colt] = torch.arange(len(cols), device=dev)
                if rows is not None:
                    pos = where[cols_i]
                    keep = pos >= 0
                    en[rows[keep], pos[keep]] = inf
                if excl_t is not None:
                    pos = where[excl_t]
                    en[:, pos[pos >= 0]] = inf
                index = colt.expand(stop - start, len(cols))
            else:  # (B, I): write +inf in place, no (B, I) mask
                if rows is not None:
                    en[rows, cols_i] = inf
                if excl_t is not None:
                    en[:, excl_t] = inf
                index = None
                if cand is not None and cand.ndim == 2:
                    # per-user candidates: gather their (already masked) energies
                    cb = torch.as_tensor(cand[start:stop], device=dev)  # (B, C)
                    pad = cb < 0
                    index = cb.clamp(min=0)
                    en = en.gather(1, index).masked_fill(pad, inf)
            kk = min(k, en.shape[1])
            top_en, top_pos = torch.topk(en, kk, dim=1, largest=False, sorted=True)
            top_items = top_pos if index is None else index.gather(1, top_pos)
            top_items = top_items.masked_fill(torch.isinf(top_en) & (top_en > 0), -1)
            out_items[start:stop, :kk] = top_items.cpu().numpy()
            out_en[start:stop, :kk] = top_en.cpu().numpy()
        return out_items, out_en

    # ----------------------------------------------------------------------------- persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model directory atomically (temporary directory, then rename).

        Layout: ``model.json`` (format version, package version, model name, config, extras),
        ``weights.safetensors``, and ``items.json`` / ``users.json`` raw-id vocabularies when set.
        """
        from recsys_ebm import __version__

        n_items = self._check_fitted()
        meta = {
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "model": self.name,
            "config": self.config.to_dict(),
            "n_items": n_items,
            "fit_info": self.fit_info,
            "extra": self._extra_meta(),
        }
        with atomic_dir(path, overwrite=overwrite) as tmp:
            (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=_json_default))
            save_file(self.state_tensors(), str(tmp / "weights.safetensors"))
            for key, vocab in (("items", self.item_vocab), ("users", self.user_vocab)):
                if vocab is not None:
                    vocab.save(tmp / f"{key}.json")
        return Path(path)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted state as saved: name -> CPU, contiguous tensor (``weights.safetensors``)."""
        self._check_fitted()
        return {k: v.detach().cpu().contiguous() for k, v in self._state_tensors().items()}

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> Self:
        """Load a directory written by :meth:`save` (tensors are mapped to ``device``).

        Raises:
            FileNotFoundError: no ``model.json`` or ``weights.safetensors`` in ``path``.
            ModelFileError: (a ValueError) a file is truncated, corrupt or lacks a tensor or
                key; the message names the file and says how to recover.
        """
        path = Path(path)
        meta_path = path / "model.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"path: no model.json in {path} (not a saved model directory)")
        meta = read_model_json(meta_path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"path: {path} has model format {meta.get('format_version')}, "
                f"this version reads {FORMAT_VERSION}"
            )
        if cls.name and meta["model"] != cls.name:
            raise ValueError(f"path: {path} holds a {meta['model']!r} model, not {cls.name!r}")
        try:
            config = cls.config_class.from_dict(meta["config"])
            if "device" in meta["config"]:
                config = config.replace(device=device)
            model = cls(config)
            model.n_items = int(meta["n_items"])
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f"{meta_path}: {_RETRAIN.format(what='invalid')}: {exc}") from exc
        model.fit_info = meta.get("fit_info", {})
        weights = path / "weights.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"path: no weights.safetensors in {path}; {_RETRAIN_HINT}")
        try:
            tensors = load_file(str(weights), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError on bad bytes
            raise ModelFileError(
                f"{weights}: {_RETRAIN.format(what='corrupt or truncated weights')} ({exc})"
            ) from exc
        for key in ("items", "users"):
            f = path / f"{key}.json"
            if f.is_file():
                ids = _read_json(f)
                if not isinstance(ids, list):
                    raise ModelFileError(
                        f"{f}: {_RETRAIN.format(what='corrupt id list')}: expected a JSON list, "
                        f"got {type(ids).__name__}"
                    )
                try:
                    vocab = Vocabulary(ids, name=key[:-1])
                except (TypeError, ValueError) as exc:
                    raise ModelFileError(
                        f"{f}: {_RETRAIN.format(what='corrupt id list')}: {exc}"
                    ) from exc
                setattr(model, f"{key[:-1]}_vocab", vocab)
        try:
            model._load_state(tensors, meta.get("extra", {}))
        except KeyError as exc:
            raise ModelFileError(
                f"{weights}: missing tensor or field {exc.args[0]!r} (the file holds "
                f"{sorted(tensors)}); {_RETRAIN.format(what='the model directory is corrupt')}"
            ) from exc
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ModelFileError(
                f"{weights}: {_RETRAIN.format(what='tensors do not fit the model')}: {exc}"
            ) from exc
        return model


def mask_block(
    en: torch.Tensor, user_items: sp.csr_matrix, exclude_seen: bool, exclude: np.ndarray | None
) -> torch.Tensor:
    """Write +inf in place into (B, I) ``en`` at the rows' seen items (when ``exclude_seen``;
    from the matrix passed now) and at the ``exclude`` columns; returns ``en``."""
    dev = en.device
    if exclude_seen and user_items.nnz:
        coo = user_items.tocoo()
        rows = torch.as_tensor(coo.row, dtype=torch.long, device=dev)
        en[rows, torch.as_tensor(coo.col, dtype=torch.long, device=dev)] = float("inf")
    if exclude is not None and exclude.size:
        en[:, torch.as_tensor(exclude, device=dev)] = float("inf")
    return en
