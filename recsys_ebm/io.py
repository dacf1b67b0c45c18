"""Atomic writes: every output goes to a temporary sibling first, then is renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT",
    "atomic_dir",
    "atomic_file",
    "checkpoint_fingerprint",
    "load_checkpoint",
    "resume_checkpoint",
    "save_checkpoint",
]

#: file name of a training checkpoint inside a model's ``checkpoint_dir``
CHECKPOINT = "checkpoint.pt"


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked before any work).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"output directory exists: {path} (pass overwrite / --overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file path in the same directory; renamed onto ``path`` on success."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"output file exists: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint (a dict of tensors and plain values) atomically.

    A kill mid-write leaves the previous checkpoint in place. Returns the checkpoint's path.
    """
    import torch

    path = Path(directory) / CHECKPOINT
    with atomic_file(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` (CPU tensors, ``weights_only=True``), or None."""
    import torch

    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


#: config fields that may change between an interrupted run and its resumption
_FREE_FIELDS = ("device", "checkpoint_dir", "progress", "epochs", "patience")


def checkpoint_fingerprint(config: Any, matrix: Any, **extra: Any) -> str:
    """What a checkpoint must match to be resumed: the config (less device, checkpoint_dir,
    progress, epochs and patience), the training matrix's shape and nnz, and ``extra``."""
    cfg = {k: v for k, v in config.to_dict().items() if k not in _FREE_FIELDS}
    data = {"config": cfg, "shape": list(matrix.shape), "nnz": int(matrix.nnz), **extra}
    return json.dumps(data, sort_keys=True, default=str)


def resume_checkpoint(directory: str | Path | None, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` when there is one, checked against ``fingerprint``.

    Raises:
        ValueError: the checkpoint belongs to another config or training matrix.
    """
    st = None if directory is None else load_checkpoint(directory)
    if st is not None and st.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint_dir: {directory} holds a checkpoint of another config or training "
            "matrix; remove it or choose another checkpoint_dir"
        )
    return st
