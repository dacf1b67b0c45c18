"""Rating values <-> level codes for the softmax RBMs (:mod:`recsys_ebm.models.softmax_rbm`).

Every history a softmax RBM reads carries **rating values** in its CSR data. Inside, a rating is
its level code: the index of the level in the model's ascending ``rating_levels``, plus 1 (so a
code is never a stored zero). A block of codes becomes three aligned (nnz,) int64 tensors
(row, item, level index 0..K-1), the sparse form of :mod:`recsys_ebm.models._softmax_rbm_math`,
and is saved with the weights as three int64 tensors (indptr, indices, codes).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.diagnostics import DataWarning

__all__ = [
    "check_pair_indices",
    "codes_from_tensors",
    "codes_to_tensors",
    "level_tensors",
    "rating_codes",
    "training_levels",
]


def rating_codes(levels: np.ndarray, m: sp.csr_matrix, name: str) -> sp.csr_matrix:
    """Same pattern as ``m`` with data = level index + 1 (1..K), as int64 CSR.

    ``levels`` is the model's (K,) ascending float64 rating levels; ``name`` is the argument the
    errors name. A ``user_items`` of 20+ entries that are all 1.0 (on a scale with more than two
    levels starting at 1) raises a :class:`DataWarning`: it is probably a binary interaction
    matrix.

    Raises:
        ValueError: a stored value is not one of the rating levels.
    """
    data = m.data.astype(np.float64)
    pos = np.clip(np.searchsorted(levels, data), 0, len(levels) - 1)
    near = np.where(
        (pos > 0) & (np.abs(levels[pos - 1] - data) < np.abs(levels[pos] - data)), pos - 1, pos
    )
    bad = ~np.isclose(levels[near], data, rtol=0, atol=1e-4)
    if bad.any():
        raise ValueError(
            f"{name}: expected rating values in {levels.tolist()} (the CSR data are read as "
            f"ratings), got {sorted(set(data[bad].tolist()))[:10]}"
        )
    if (
        name == "user_items"
        and data.size >= 20
        and len(levels) > 2
        and levels[0] == 1.0
        and bool(np.all(data == 1.0))
    ):
        warnings.warn(
            f"{name}: every value is 1.0, read as the lowest rating; pass rating values "
            "(Dataset.history(split, values='rating')), not a binary interaction matrix",
            DataWarning,
            # past this function and SoftmaxRBM._codes to the code that called recommend /
            # energies (stacklevel 4 from _codes before it delegated here)
            stacklevel=5,
        )
    return sp.csr_matrix((near + 1, m.indices, m.indptr), shape=m.shape, dtype=np.int64)


def level_tensors(
    codes: sp.csr_matrix, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, items, levels) (nnz,) int64 tensors of a level-code CSR block, on ``device``."""
    rows = np.repeat(np.arange(codes.shape[0]), np.diff(codes.indptr))
    return (
        torch.as_tensor(rows, device=device),
        torch.as_tensor(codes.indices.astype(np.int64), device=device),
        torch.as_tensor(codes.data.astype(np.int64) - 1, device=device),
    )


def training_levels(train: sp.csr_matrix, configured: tuple[float, ...]) -> np.ndarray:
    """(K,) float64 rating levels: the configured ones, else the distinct training values.

    Raises:
        ValueError: no configured levels and fewer than two distinct values (binary data).
    """
    if configured:
        return np.asarray(configured, dtype=np.float64)
    values = np.unique(train.data.astype(np.float64))
    if values.size < 2:
        raise ValueError(
            f"train: expected rating values with at least 2 distinct levels, got "
            f"{values.tolist()}; pass ratings (Dataset.ratings('train')), not binary "
            "interactions"
        )
    return values


def check_pair_indices(rows: Any, cols: Any, n_rows: int, n_items: int) -> list[np.ndarray]:
    """``[rows, cols]`` as int64 (P,) arrays of history rows and item indices.

    Raises:
        ValueError: not 1-D integer arrays, an index out of range, or different lengths.
    """
    out = []
    for name, arr, hi in (("rows", rows, n_rows), ("cols", cols, n_items)):
        arr = np.asarray(arr)
        if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name}: expected a 1-D integer array, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= hi):
            raise ValueError(f"{name}: expected indices in [0, {hi}), got {arr.min()}..")
        out.append(arr.astype(np.int64))
    if out[0].shape != out[1].shape:
        raise ValueError(
            f"cols: expected as many entries as rows ({out[0].size}), got {out[1].size}"
        )
    return out


def codes_to_tensors(codes: sp.csr_matrix, prefix: str) -> dict[str, torch.Tensor]:
    """A level-code CSR as int64 tensors ``{prefix}_indptr`` / ``_indices`` / ``_levels``
    (to save with the weights)."""
    return {
        f"{prefix}_indptr": torch.as_tensor(codes.indptr.astype(np.int64)),
        f"{prefix}_indices": torch.as_tensor(codes.indices.astype(np.int64)),
        f"{prefix}_levels": torch.as_tensor(codes.data.astype(np.int64)),
    }


def codes_from_tensors(tensors: dict[str, torch.Tensor], prefix: str, n_cols: int) -> sp.csr_matrix:
    """The level-code CSR (rows x ``n_cols``) saved by :func:`codes_to_tensors`.

    Raises:
        KeyError: a tensor is missing.
    """
    return sp.csr_matrix(
        (
            tensors[f"{prefix}_levels"].numpy(),
            tensors[f"{prefix}_indices"].numpy(),
            tensors[f"{prefix}_indptr"].numpy(),
        ),
        shape=(len(tensors[f"{prefix}_indptr"]) - 1, n_cols),
    )
