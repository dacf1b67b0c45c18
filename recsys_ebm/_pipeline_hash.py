"""Stage digests for :mod:`recsys_ebm.pipeline`: what decides that a stage is unchanged.

A stage's digest (16 hex digits of a sha256) covers

* the package version and its **code** (:func:`code_fingerprint`: every Python source of the
  installed package), the stage kind and its resolved options (the tracking options left out:
  where a stage logs is compared apart, in its stamp). The code counts because a stage's
  options name only what the pipeline file sets: a model default or a metric changed in the
  package, under the same version (a checkout, an editable install), changes what the stage
  would produce, and a rerun must not keep the old output as "unchanged";
* the **content** of every file the stage reads from outside the run directory (the raw input
  of ``prepare``, a train stage's ``config`` file, a model directory given by path): the sha256
  of each file, read in 1 MiB blocks; a directory counts as every file under it, by sorted
  relative path and content. Touching a file (a new mtime, the same bytes) does not rerun a
  stage; new bytes do, whatever the file's size and mtime say;
* the digests of its upstream stages: what it reads inside the run directory is their output,
  so it is covered by their digests.

Re-reading a big raw input on every run would cost as long as reading it for real, so file
hashes are cached in ``RUN_DIR/.stages/input-hashes.json``, keyed on the file's path and its
(size, mtime, ctime, inode, device). A cached hash is used only while all five are unchanged;
any change means a re-read. The ctime is there because ``os.utime`` can set a file's mtime back
after its bytes changed, but nothing a user runs can set its ctime back. A file changed less than
:data:`RACY_NS` before it was hashed is not cached (its timestamps may not yet tell a later write
of the same size apart: the clock that stamps files is coarse). The cache is only an
accelerator: a missing, truncated or garbage cache file means "hash everything again".
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recsys_ebm.io import HASH_BLOCK, sha256_file

__all__ = [
    "BLOCK",
    "CACHE_NAME",
    "RACY_NS",
    "HashCache",
    "code_fingerprint",
    "input_state",
    "stage_digest",
]

BLOCK = HASH_BLOCK  # bytes read at a time when hashing a file (recsys_ebm.io)
#: the cache of input-file hashes, in ``RUN_DIR/.stages/`` beside the stage stamps
CACHE_NAME = "input-hashes.json"
#: files changed this recently (ns) before hashing are hashed again next time, not cached
RACY_NS = 2_000_000_000
_CACHE_VERSION = 1


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class HashCache:
    """Content hashes of input files, reused while a file's stat is unchanged.

    Loaded from (and saved to) ``path``; :meth:`save` writes it atomically, and only when a
    hash was added or an entry went stale.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return
        if isinstance(data, dict) and data.get("version") == _CACHE_VERSION:
            files = data.get("files")
            if isinstance(files, dict):
                self.entries = {
                    k: v
                    for k, v in files.items()
                    if isinstance(v, list) and len(v) == 6 and isinstance(v[5], str)
                }

    def file_sha256(self, path: Path) -> str:
        """``path``'s content hash: the cached one while its stat is unchanged, else read."""
        key = str(path.absolute())
        st = path.stat()
        entry = self.entries.get(key)
        if entry is not None and entry[:5] == _key(st):
            return entry[5]
        started = time.time_ns()
        digest = sha256_file(path)
        after = path.stat()
        changed_since = max(after.st_mtime_ns, after.st_ctime_ns)
        if _key(after) == _key(st) and changed_since < started - RACY_NS:
            self.entries[key] = [*_key(st), digest]
            self.dirty = True
        elif self.entries.pop(key, None) is not None:
            self.dirty = True
        return digest

    def save(self) -> None:
        """Write the cache (if anything changed), dropping entries whose file changed or went.

        Called with the run directory's lock held; a failure to write is not an error (the
        cache only saves time).
        """
        if not self.dirty:
            return
        from recsys_ebm.io import atomic_file

        kept = {}
        for key, entry in self.entries.items():
            try:
                if _key(os.stat(key)) == entry[:5]:
                    kept[key] = entry
            except OSError:
                continue
        try:
            with atomic_file(self.path) as tmp:
                tmp.write_text(json.dumps({"version": _CACHE_VERSION, "files": kept}))
        except OSError:
            return
        self.dirty = False


def _content(path: Path, cache: HashCache) -> list[Any]:
    """``[path, kind, sha256]`` for a file or a directory (every file under it, by sorted
    relative path and content); ``[path, "missing", None]`` when there is nothing to read."""
    if path.is_file():
        return [str(path), "file", cache.file_sha256(path)]
    if path.is_dir():
        h = hashlib.sha256()
        files = sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*") if f.is_file())
        for rel, f in files:
            h.update(json.dumps([rel, cache.file_sha256(f)]).encode() + b"\n")
        return [str(path), "dir", h.hexdigest()]
    return [str(path), "missing", None]


def input_state(paths: Iterable[Path], base: Path, cache: HashCache) -> list[Any]:
    """The content of the files a stage reads from outside the run directory ``base``, so
    edited inputs invalidate the stage (inputs inside it are upstream stages' outputs)."""
    state = []
    for p in paths:
        if p.resolve().is_relative_to(base.resolve()):
            continue  # produced by this pipeline: covered by the upstream stage's digest
        state.append(_content(p, cache))
    return state


@functools.lru_cache(maxsize=4)
def code_fingerprint(root: Path | None = None) -> str:
    """sha256 over the Python sources under ``root`` (default: this package), by sorted
    relative path and content; read once per process (about 200 small files)."""
    root = Path(__file__).resolve().parent if root is None else Path(root)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def stage_digest(
    kind: str, options: dict[str, Any], inputs: list[Any], upstream: Iterable[str]
) -> str:
    """16 hex digits over the package version and code, the stage's kind, options and input
    content, and its upstream stages' digests (in order)."""
    from recsys_ebm import __version__

    state = [__version__, code_fingerprint(), kind, options, inputs]
    h = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
    for digest in upstream:
        h.update(digest.encode())
    return h.hexdigest()[:16]
