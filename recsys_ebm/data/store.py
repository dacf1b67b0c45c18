"""Writing a :class:`~recsys_ebm.data.dataset.Dataset` directory, and its content fingerprint."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_ebm.data.dataset import Dataset
from recsys_ebm.io import atomic_dir

__all__ = ["OutputError", "check_output_dir", "fingerprint", "save_dataset"]


def fingerprint(ds: Dataset) -> str:
    """sha256 over the vocabularies and every split's (user_idx, item_idx, rating) content."""
    h = hashlib.sha256()
    for frame in (ds.users, ds.items):
        h.update("\x1f".join(map(str, frame[frame.columns[1]].to_list())).encode())
    for name in sorted(ds.interactions):
        df = ds.interactions[name]
        h.update(name.encode())
        for col in ("user_idx", "item_idx"):
            h.update(np.ascontiguousarray(df[col].to_numpy(), dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(df["rating"].fill_null(np.nan).to_numpy(), np.float64))
    return h.hexdigest()[:16]


class OutputError(ValueError):
    """An output path cannot be used or written (it would replace an input or the working
    directory, it is a file, its parent is a file, the disk is full...); names the option."""


def _forms(path: Path) -> set[Path]:
    """The absolute path as written and with symlinks resolved (either may be what is removed)."""
    return {Path(os.path.abspath(path)), path.resolve()}


def _within(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies under it (any spelling of either)."""
    return any(o == i or o in i.parents for i in _forms(inner) for o in _forms(outer))


def check_output_dir(
    out: str | Path,
    inputs: Mapping[str, str | Path | None] = {},  # noqa: B006 - read only
    *,
    overwrite: bool = False,
    option: str = "out",
) -> Path:
    """Refuse an output directory that cannot be written safely, before any work is done.

    ``inputs`` maps an argument name (``input``, ``test_file``, ``valid_file``) to the path it
    names; ``option`` is the caller's argument that names ``out`` (for messages).

    Raises:
        OutputError: ``out`` is the current directory or one of its ancestors; ``out`` is an
            input or contains one (``overwrite`` would delete it); ``out`` is an existing file
            or symlink to one; a parent of ``out`` is a file; ``overwrite`` would replace a
            non-empty directory that is not a prepared dataset (no ``manifest.json``).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    out = Path(out)
    if _within(Path.cwd(), out):
        raise OutputError(
            f"{option}: {out} is the current directory or one of its parents; a dataset written "
            "there would replace it: name a new subdirectory (e.g. data)"
        )
    for name, p in inputs.items():
        if p is not None and _within(Path(p), out):
            raise OutputError(
                f"{option}: {out} contains the `{name}` path {p}; writing the dataset there "
                f"would delete its own input: choose an `{option}` outside it"
            )
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputError(
                f"{option}: {out} is an existing file, not a dataset directory; choose another path"
            )
        if not overwrite:
            raise FileExistsError(f"{option}: {out} exists (pass overwrite=True to replace it)")
        if not (out / "manifest.json").is_file() and any(out.iterdir()):
            raise OutputError(
                f"{option}: {out} is a non-empty directory that is not a prepared dataset (no "
                "manifest.json); overwrite=True only replaces a dataset: choose another path"
            )
    else:
        parent = Path(os.path.abspath(out)).parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise OutputError(f"{option}: cannot create {out}: {parent} is a file, not a directory")
    return out


def save_dataset(ds: Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the dataset directory (layout in :mod:`recsys_ebm.data.dataset`) atomically.

    The directory is built under a temporary name beside ``path`` and renamed into place, so a
    failure (full disk, ...) leaves neither a partial dataset nor a temporary directory.

    Raises:
        OutputError: see :func:`check_output_dir` (the dataset's own source, test and valid
            files count as inputs); or the write failed (the message names the path and cause).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from recsys_ebm import __version__

    path = Path(path)
    opts = ds.manifest.get("options", {})
    inputs = {
        "input": ds.manifest.get("source", {}).get("path"),
        "test_file": opts.get("test_file"),
        "valid_file": opts.get("valid_file"),
    }
    check_output_dir(path, inputs, overwrite=overwrite, option="path")
    manifest = dict(ds.manifest)
    manifest.setdefault("format_version", 1)
    manifest.setdefault("fingerprint", fingerprint(ds))
    manifest["package_version"] = __version__
    manifest["created"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        with atomic_dir(path, overwrite=overwrite) as tmp:
            _write(ds, manifest, tmp)
    except FileExistsError:
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise OutputError(
            f"path: could not write the dataset to {path}: {_reason(exc, 'path')}; nothing was "
            "written"
        ) from exc
    ds.manifest = manifest
    ds.path = path
    return path


_HINTS = {  # {option}: the argument that names the output
    errno.ENOSPC: "free some space or choose another `{option}`",
    errno.EDQUOT: "free some space or choose another `{option}`",
    errno.EFBIG: "the file size limit (ulimit -f) is too low for the dataset",
    errno.EROFS: "choose another `{option}`",
    errno.EACCES: "choose a writable `{option}`",
    errno.EPERM: "choose a writable `{option}`",
}


def _reason(exc: BaseException, option: str = "out") -> str:
    """The OS cause of a failed write, also when polars wraps it ("... (os error 28)")."""
    if isinstance(exc, OSError) and exc.errno is not None:
        code = exc.errno
    else:
        m = re.search(r"os error (\d+)", str(exc))
        if m is None:
            return str(exc)
        code = int(m.group(1))
    hint = _HINTS.get(code, "").format(option=option)
    text = os.strerror(code)
    return f"{text} ({hint})" if hint else text


def _write(ds: Dataset, manifest: dict, tmp: Path) -> None:
    (tmp / "interactions").mkdir()
    (tmp / "matrices").mkdir()
    ds.users.write_parquet(tmp / "users.parquet")
    ds.items.write_parquet(tmp / "items.parquet")
    if ds.item_metadata is not None:
        ds.item_metadata.write_parquet(tmp / "item_metadata.parquet")
    for name, df in ds.interactions.items():
        df.write_parquet(tmp / "interactions" / f"{name}.parquet")
        sp.save_npz(tmp / "matrices" / f"{name}.npz", ds.matrix(name), compressed=False)
        if manifest.get("has_ratings"):
            sp.save_npz(
                tmp / "matrices" / f"{name}_ratings.npz",
                ds.matrix(name, values="rating"),
                compressed=False,
            )
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
