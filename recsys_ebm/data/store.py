"""Writing a :class:`~recsys_ebm.data.dataset.Dataset` directory, and its content fingerprint."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_ebm.data.dataset import Dataset
from recsys_ebm.io import atomic_dir

__all__ = ["fingerprint", "save_dataset"]


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


def save_dataset(ds: Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the dataset directory (layout in :mod:`recsys_ebm.data.dataset`) atomically."""
    from recsys_ebm import __version__

    path = Path(path)
    manifest = dict(ds.manifest)
    manifest.setdefault("format_version", 1)
    manifest.setdefault("fingerprint", fingerprint(ds))
    manifest["package_version"] = __version__
    manifest["created"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with atomic_dir(path, overwrite=overwrite) as tmp:
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
    ds.manifest = manifest
    ds.path = path
    return path
