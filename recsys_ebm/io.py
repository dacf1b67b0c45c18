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
    "LockHeld",
    "acquire_lock",
    "atomic_dir",
    "atomic_file",
    "checkpoint_fingerprint",
    "clean_stale_temporaries",
    "load_checkpoint",
    "resume_checkpoint",
    "save_checkpoint",
    "sha256_file",
    "update_hash",
    "write_parquet",
]

#: file name of a training checkpoint inside a model's ``checkpoint_dir``
CHECKPOINT = "checkpoint.pt"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    """``.NAME.tmp-PID-``: a temporary sibling of ``path`` that names its writer's process."""
    return f".{path.name}.tmp-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove temporary siblings of ``path`` left by a killed writer (its process is gone).

    Temporaries of a live process (another job writing the same output) are left alone.
    Returns what was removed.
    """
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for marker in (".tmp-", ".old-"):
        for p in path.parent.glob(f".{path.name}{marker}*"):
            pid = p.name[len(path.name) + 1 + len(marker) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _apply_umask(path: Path, *, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the output the mode the umask asks for."""
    base = 0o777 if directory else 0o666
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    The finished directory gets the mode the umask asks for (not mkdtemp's 0700). Temporaries
    left beside ``path`` by a killed writer are removed first.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked before any work).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"output directory exists: {path} (pass overwrite=True to replace it)"
        )
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"output directory {path} is an existing file; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    try:
        yield tmp
        _apply_umask(tmp, directory=True)
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
    """Yield a temporary file path in the same directory; renamed onto ``path`` on success.

    The file gets the mode the umask asks for (not mkstemp's 0600). Temporaries left beside
    ``path`` by a killed writer are removed first.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"output file exists: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"output file {path} is an existing directory; name a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            _apply_umask(tmp, directory=False)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is its process id as it wrote it ("" unknown)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked" + (f" by process {holder}" if holder else ""))
        self.path, self.holder = path, holder


def acquire_lock(path: str | Path) -> int:
    """Take the exclusive ``flock`` of ``path`` (created if absent) without waiting; returns the
    open descriptor (closing it releases the lock) after writing this process's id into it.

    Safe against a holder that unlinks the file as it releases it: the lock is retried until the
    locked descriptor is the file at ``path`` (same inode).

    Raises:
        LockHeld: another process holds it (with the pid it wrote, when readable).
        OSError: the lock file cannot be created.
    """
    import fcntl

    path = Path(path)
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockHeld(path, holder if holder.isdigit() else "") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the holder released and removed it meanwhile: take the new one
    raise LockHeld(path, "")


#: bytes read at a time when hashing a file
HASH_BLOCK = 1 << 20


def update_hash(h: Any, path: str | Path) -> Any:
    """Feed ``path``'s content into the hashlib object ``h`` in :data:`HASH_BLOCK`-byte blocks
    (never the whole file in memory); returns ``h``."""
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h


def sha256_file(path: str | Path) -> str:
    """The sha256 (hex) of a file's content, streamed."""
    import hashlib

    return update_hash(hashlib.sha256(), path).hexdigest()


def write_parquet(frame: Any, path: str | Path) -> None:
    """Write a polars DataFrame to Parquet through pyarrow, so that a full or read-only disk is
    an ``OSError`` naming ``path`` (polars wraps it in a ComputeError)."""
    import pyarrow.parquet as pq

    try:
        pq.write_table(frame.to_arrow(), str(path))
    except OSError as exc:
        raise OSError(
            exc.errno, os.strerror(exc.errno) if exc.errno else str(exc), str(path)
        ) from exc


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
    """The checkpoint in ``directory`` (CPU tensors, ``weights_only=True``), or None.

    Raises:
        ModelFileError: (a ValueError) the file is truncated or corrupt, or unsafe: it pickles
            objects other than tensors and plain values, which are never loaded. The message
            names the file and says to remove it (training then starts afresh).
    """
    import pickle

    import torch

    from recsys_ebm.diagnostics import ModelFileError

    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"checkpoint_dir: {path} is corrupt, truncated or unsafe (only tensors and plain "
            f"values are loaded; {first}); remove it to train from scratch, or point "
            "checkpoint_dir elsewhere"
        ) from exc
    if not isinstance(st, dict):
        raise ModelFileError(
            f"checkpoint_dir: {path} holds a {type(st).__name__}, not a training checkpoint; "
            "remove it to train from scratch"
        )
    return st


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
