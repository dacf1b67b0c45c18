"""Input checks shared by every recommender (:mod:`recsys_ebm.models.base` re-exports them).

History matrices are users x items CSR (implicit's ``user_items``); errors name the argument,
the expected form and what was received (house style, "fail loudly, in one style").
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.diagnostics import DataWarning

__all__ = ["as_user_items", "check_exclude", "check_fit_inputs", "csr_to_torch"]


def as_user_items(user_items: Any, n_items: int, name: str = "user_items") -> sp.csr_matrix:
    """Validate a user-by-item history matrix and return it as float32 CSR.

    Non-CSR sparse input is converted with a :class:`DataWarning` (as implicit does).

    Raises:
        TypeError: not a scipy sparse matrix / numpy array.
        ValueError: wrong number of columns.
    """
    if isinstance(user_items, np.ndarray):
        if user_items.ndim == 1:
            user_items = user_items[None, :]
        user_items = sp.csr_matrix(user_items)
    elif sp.issparse(user_items):
        if not isinstance(user_items, sp.csr_matrix | sp.csr_array):
            warnings.warn(
                f"{name}: converting {type(user_items).__name__} to CSR; pass a csr_matrix",
                DataWarning,
                stacklevel=3,
            )
        user_items = sp.csr_matrix(user_items)
    else:
        raise TypeError(
            f"{name}: expected a scipy.sparse CSR matrix (users x items), "
            f"got {type(user_items).__name__}"
        )
    if user_items.ndim != 2 or user_items.shape[1] != n_items:
        raise ValueError(
            f"{name}: expected {n_items} columns (one per item of the catalogue), "
            f"got shape {user_items.shape}"
        )
    if user_items.dtype != np.float32:
        user_items = user_items.astype(np.float32)
    return user_items


def check_exclude(exclude: Any, n_items: int) -> np.ndarray:
    """``exclude`` as a flat int64 array of item indices in [0, n_items).

    Raises:
        ValueError: an index lies outside the catalogue.
    """
    excl = np.asarray(exclude, dtype=np.int64).ravel()
    if excl.size and (excl.min() < 0 or excl.max() >= n_items):
        raise ValueError(f"exclude: item indices must lie in [0, {n_items}), got {excl}")
    return excl


def check_items_at(items: Any, n_rows: int, n_items: int) -> np.ndarray:
    """``items`` as (n_rows, C) int item indices in [0, n_items) (``energies_at``'s argument).

    Raises:
        ValueError: another shape, a non-integer dtype or an index outside the catalogue.
    """
    idx = np.asarray(items)
    if (
        idx.ndim != 2
        or idx.shape[0] != n_rows
        or not np.issubdtype(idx.dtype, np.integer)
        or (idx.size and (idx.min() < 0 or idx.max() >= n_items))
    ):
        raise ValueError(
            f"items: expected ({n_rows}, C) int item indices in [0, {n_items}),"
            f" got {idx.dtype} array of shape {idx.shape}"
        )
    return idx


def check_fit_inputs(train: Any, valid: Any = None) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """Validate ``fit``'s arguments: ``train`` a users x items sparse matrix (any width), ``valid``
    None or the same width. Both come back as float32 CSR.

    Raises:
        TypeError: ``train`` is not a scipy sparse matrix.
        ValueError: ``valid`` has another number of columns.
    """
    if not sp.issparse(train):
        raise TypeError(
            f"train: expected a scipy.sparse CSR matrix (users x items), got {type(train).__name__}"
        )
    train = as_user_items(train, train.shape[1], "train")
    if valid is not None:
        valid = as_user_items(valid, train.shape[1], "valid")
    return train, valid


def csr_to_torch(m: sp.csr_matrix, device: torch.device, *, binary: bool = True) -> torch.Tensor:
    """(B, I) scipy CSR -> torch sparse CSR tensor on ``device`` (float32; ones if ``binary``)."""
    data = np.ones(m.nnz, np.float32) if binary else m.data.astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(data),
            size=m.shape,
            check_invariants=False,  # scipy CSR is already valid
        ).to(device)
