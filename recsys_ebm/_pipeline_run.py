"""Run-directory bookkeeping for :mod:`recsys_ebm.pipeline`: the lock, stage stamps, cleanup.

One pipeline at a time per run directory: ``RUN_DIR/.lock`` is held (``flock``, exclusive,
non-blocking) for the whole run, so a second run fails at once instead of mixing its stages'
outputs with the first one's. The kernel drops the lock when its holder dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "RunDirLocked",
    "StageFailed",
    "clean_stale",
    "lock_run_dir",
    "read_stamp",
    "stamp_path",
    "write_stamp",
]

LOCK_NAME = ".lock"


class RunDirLocked(RuntimeError):
    """Another pipeline run holds the run directory's lock."""


class StageFailed(RuntimeError):
    """A stage exited non-zero; ``returncode`` is its exit status (2: bad input)."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` for the block (creating ``run_dir``); yields the lock's path.

    Raises:
        RunDirLocked: another process holds it; the message names the run directory and,
            when known, the holder's process id.
    """
    from recsys_ebm.io import LockHeld, acquire_lock

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    try:
        fd = acquire_lock(lock)  # writes our pid, for the message below
    except LockHeld as exc:
        by = f" (pid {exc.holder})" if exc.holder else ""
        raise RunDirLocked(
            f"run directory {run_dir} is in use: another `recsys-ebm run`{by} holds its "
            f"lock {lock}; wait for it to finish or choose another --run-dir"
        ) from None
    try:
        yield lock
    finally:
        os.close(fd)  # releases the flock


def clean_stale(paths: Iterable[Path]) -> list[Path]:
    """Remove temporaries (``.NAME.tmp-*``, ``.NAME.old-*``) left beside ``paths`` by a killed
    writer. Called with the run directory's lock held."""
    from recsys_ebm.io import clean_stale_temporaries

    removed: list[Path] = []
    for p in paths:
        removed += clean_stale_temporaries(p)
    return removed


def stamp_path(run_dir: Path, stage: str) -> Path:
    """Where stage ``stage``'s stamp lives: ``RUN_DIR/.stages/STAGE.json``."""
    return run_dir / ".stages" / f"{stage}.json"


def read_stamp(path: Path) -> dict[str, Any]:
    """A stage's stamp, or ``{}`` (stage not done) when it is missing, truncated or garbage."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_stamp(path: Path, data: dict[str, Any]) -> None:
    """Write a stage's stamp atomically: a kill leaves the old stamp or the new, never half."""
    from recsys_ebm.io import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data))
