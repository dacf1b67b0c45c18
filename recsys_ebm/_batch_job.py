"""Plumbing of a batch job (:mod:`recsys_ebm.batch`): the output lock, the job manifest, stale
temporary files, fingerprints and progress lines.

* **Lock**: one job per output. ``OUT.lock`` beside the output is held with an exclusive
  ``fcntl.flock`` for the whole job; a second job on the same ``out`` fails at once with
  :class:`OutputBusyError`. The lock is re-entrant within a process (the CLI takes it before
  loading the model, :func:`~recsys_ebm.batch.run_batch` takes it again).
* **Manifest**: ``OUT.parts/job.json`` records what the job computes (fingerprints of the model,
  the dataset, the selected users, the history file and the options) and, per finished chunk,
  its user and row counts. It is rewritten atomically (every few seconds while chunks are scored,
  and when the loop ends or fails); a resumed job keeps only chunks it records, with their rows.
* **Merge**: every chunk must be present with its recorded row count, the users must add up to
  the job's, and the merged file must hold the recorded rows, else :class:`BatchIntegrityError`
  and no output.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_ebm.io import LockHeld, acquire_lock, atomic_file

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "BatchIntegrityError",
    "OutputBusyError",
    "Progress",
    "check_output_path",
    "chunk_path",
    "job_changes",
    "merge_chunks",
    "model_fingerprint",
    "open_parts",
    "output_lock",
    "read_manifest",
    "remove_stale_temporaries",
    "write_manifest",
]

#: the job manifest's name inside ``OUT.parts/``, and its format version
MANIFEST = "job.json"
MANIFEST_FORMAT = 1


class OutputBusyError(ValueError):
    """Another job holds the lock of this output (``out``)."""


class BatchIntegrityError(RuntimeError):
    """The finished chunks do not add up to the job (a chunk missing or altered): no output."""


# ---------------------------------------------------------------------------------- output lock
#: lock path -> [fd, depth] of the locks this process holds (re-entrant per process)
_HELD: dict[str, list[int]] = {}


def check_output_path(out: Path) -> None:
    """Raise ValueError naming ``out`` unless ``out`` can be created as a file."""
    if out.is_dir():
        raise ValueError(f"out: {out} is a directory; expected the path of a Parquet file to write")
    p = out.absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise ValueError(f"out: {p} is not a directory, so {out} cannot be created there")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"out: cannot write in {p} (permission denied)")


def _lock_file(out: Path) -> Path:
    return out.absolute().with_name(out.name + ".lock")


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``out`` (``OUT.lock``) for the block.

    Raises:
        OutputBusyError: another process holds it (raised at once, no waiting).
        ValueError: ``out`` is a directory, or its directory cannot be created or written.
    """
    check_output_path(out)
    path = _lock_file(out)
    key = str(path)
    if key in _HELD:  # this process holds it already
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(path, out)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        # unlinked while still held: a process that opened the old file re-checks the inode
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _acquire(path: Path, out: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"out: cannot create the directory of {out}: {exc}") from exc
    try:
        return acquire_lock(path)
    except LockHeld as exc:
        by = f", held by process {exc.holder}" if exc.holder else ""
        raise OutputBusyError(
            f"out: another job holds {out} (lock {path}{by}); wait for it to "
            "finish, or choose another `out`"
        ) from None
    except OSError as exc:
        raise ValueError(f"out: cannot create files beside {out} ({exc.strerror}: {path})") from exc


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove ``.OUT.tmp-*`` left beside ``out`` by a killed job (call with the lock held)."""
    gone = []
    for name in glob.glob(glob.escape(str(out.absolute().with_name(f".{out.name}.tmp-"))) + "*"):
        p = Path(name)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p)
    return gone


# ---------------------------------------------------------------------------------- manifest
def write_manifest(parts: Path, manifest: dict[str, Any]) -> None:
    with atomic_file(parts / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def read_manifest(parts: Path) -> dict[str, Any] | None:
    """The manifest in ``parts``, or None when there is none or it cannot be read."""
    try:
        data = json.loads((parts / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_WHAT = {
    "model": "the model",
    "dataset": "the `dataset`",
    "users": "the selected users (`users`/`shard`/`history_file`)",
    "history": "the `history_file` content",
}


def job_changes(prev: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """What differs between a recorded job and this one, in words (empty: the same job)."""
    out = []
    for key, what in _WHAT.items():
        if prev.get(key) != job.get(key):
            out.append(f"{what} changed ({prev.get(key)} -> {job.get(key)})")
    old, new = prev.get("options") or {}, job.get("options") or {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"option {key} changed ({old.get(key)!r} -> {new.get(key)!r})")
    return out


def chunk_path(parts: Path, k: int) -> Path:
    return parts / f"chunk-{k:06d}.parquet"


def open_parts(parts: Path, job: dict[str, Any], resume: bool, n_chunks: int) -> dict[str, Any]:
    """The job manifest: a resumed job's (finished chunks kept) or a fresh one (parts emptied)."""
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "job": job,
        "n_chunks": n_chunks,
        "chunks": {},
    }
    if parts.exists() and not parts.is_dir():
        parts.unlink()  # not ours to keep: only this job (we hold the lock) writes there
    prev = read_manifest(parts) if resume and parts.is_dir() else None
    if prev is not None:  # no readable manifest: nothing there can be trusted, start afresh
        if prev.get("format") != MANIFEST_FORMAT or not isinstance(prev.get("job"), dict):
            raise ValueError(
                f"resume: {parts / MANIFEST} was written by another version of recsys-ebm; "
                "rerun without resume=True to start afresh"
            )
        changes = job_changes(prev["job"], job)
        if changes:
            raise ValueError(
                f"resume: {parts} holds chunks of another job: {'; '.join(changes)}. Rerun "
                "the same command to resume it, or without resume=True to start afresh (its "
                "chunks are then discarded)"
            )
        manifest["chunks"] = _valid_chunks(parts, prev.get("chunks") or {}, n_chunks)
        keep = {chunk_path(parts, int(k)).name for k in manifest["chunks"]} | {MANIFEST}
        for f in parts.iterdir():  # unrecorded chunks and temporaries of the killed job
            if f.name not in keep:
                shutil.rmtree(f) if f.is_dir() else f.unlink()
        write_manifest(parts, manifest)
        return manifest
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_manifest(parts, manifest)
    return manifest


def _valid_chunks(parts: Path, chunks: dict[str, Any], n_chunks: int) -> dict[str, Any]:
    """The recorded chunks whose file is present with the recorded row count."""
    ok = {}
    for key, rec in chunks.items():
        try:
            k, n_rows = int(key), int(rec["rows"])
            on_disk = pq.ParquetFile(chunk_path(parts, k)).metadata.num_rows
            if 0 <= k < n_chunks and on_disk == n_rows:
                ok[str(k)] = rec
        except (OSError, ValueError, TypeError, KeyError, pa.ArrowException):
            continue  # missing or unreadable: scored again
    return ok


_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("energy", pa.float32()),
        ("model_version", pa.string()),
        ("fallback", pa.bool_()),
    ]
)


def merge_chunks(parts: Path, manifest: dict[str, Any], out: Path, n_users: int, n: int) -> int:
    """Merge the chunks (one row group each) into ``out`` after checking they add up."""
    n_chunks, chunks = manifest["n_chunks"], manifest["chunks"]
    missing = [k for k in range(n_chunks) if str(k) not in chunks]
    users = sum(int(chunks[str(k)]["users"]) for k in range(n_chunks) if str(k) in chunks)
    expected = sum(int(chunks[str(k)]["rows"]) for k in range(n_chunks) if str(k) in chunks)
    if missing or users != n_users or expected > n_users * n:
        raise BatchIntegrityError(
            f"out: the job's chunks do not add up (chunks missing: {missing[:10]}; users "
            f"{users} of {n_users}; rows {expected}, at most {n_users * n}); nothing written"
        )
    with atomic_file(out) as tmp:
        writer = None
        for k in range(n_chunks):
            f = chunk_path(parts, k)
            if not f.is_file():
                raise BatchIntegrityError(
                    f"out: chunk {k} of {n_chunks} ({f}) disappeared before the merge (was "
                    "the job's directory modified by another process?); nothing written. "
                    "Rerun with resume=True to score the missing chunks"
                )
            table = pq.read_table(f)
            if table.num_rows != int(chunks[str(k)]["rows"]):
                raise BatchIntegrityError(
                    f"out: chunk {k} ({f}) holds {table.num_rows} rows, the job recorded "
                    f"{chunks[str(k)]['rows']}; nothing written. Rerun with resume=True to score "
                    "it again"
                )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)  # one row group per chunk
        if writer is None:
            writer = pq.ParquetWriter(tmp, _SCHEMA)
        writer.close()
        written = pq.ParquetFile(tmp).metadata.num_rows
        if written != expected:
            raise BatchIntegrityError(
                f"out: merged {written} rows, the job's manifest records {expected}; "
                "nothing written"
            )
    return written


# ---------------------------------------------------------------------------------- fingerprints
def model_fingerprint(model: Any) -> str:
    """sha256 (16 hex) over a fitted model's name, config, item count and state tensors, and its
    components' (a ranker's), for library callers that have no model directory to hash."""
    h = hashlib.sha256()
    _hash_model(h, model)
    return f"{model.name}-{h.hexdigest()[:16]}"


def _hash_model(h: Any, model: Any) -> None:
    import torch

    from recsys_ebm.models.capabilities import Composite

    h.update(str(model.name).encode() + b"\0")
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode() + b"\0")
    h.update(str(model.n_items).encode() + b"\0")
    states = model.state_tensors()
    for key in sorted(states):
        t = states[key]
        h.update(key.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for comp in model.components if isinstance(model, Composite) else []:
        _hash_model(h, comp)


# ---------------------------------------------------------------------------------- progress
class Progress:
    """Chunk progress through :func:`recsys_ebm.progress.progress`: tqdm on a terminal; in a log
    a timestamped line at most every ``interval`` seconds (default: ``$RECSYS_EBM_PROGRESS_
    INTERVAL`` or 30 s), plus a first and a final line: chunks done/total, users done/total,
    users/s (scored, not resumed) and the ETA."""

    def __init__(self, *, enabled: bool = True, interval: float | None = None) -> None:
        self.enabled, self.interval = enabled, interval
        self.total_users = self.users = self.scored_users = 0
        self.t0 = time.monotonic()
        self.bar: Any = None

    def start(self, total_chunks: int, total_users: int) -> None:
        from recsys_ebm.progress import progress

        self.total_users, self.t0 = total_users, time.monotonic()
        self.bar = progress(
            total_chunks,
            desc="recommend",
            unit="chunk",
            enabled=self.enabled,
            interval=self.interval,
        )

    def update(self, users: int, *, scored: bool) -> None:
        """One chunk of ``users`` finished (``scored`` False: kept from a resumed job)."""
        self.users += users
        self.scored_users += users if scored else 0
        rate = self.scored_users / max(time.monotonic() - self.t0, 1e-9)
        self.bar.update(1, users=f"{self.users}/{self.total_users}", **{"users/s": int(rate)})

    def close(self) -> None:
        self.bar.close()
