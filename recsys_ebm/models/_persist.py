"""Model-directory persistence helpers (:mod:`recsys_ebm.models.base` re-exports them).

A saved model directory holds ``model.json`` (format version, package version, model name,
config, extras), ``weights.safetensors`` and optional ``items.json`` / ``users.json``. The
readers here turn corrupt bytes into a :class:`~recsys_ebm.diagnostics.ModelFileError` that
names the file and says how to recover.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from recsys_ebm.diagnostics import ModelFileError

__all__ = ["FORMAT_VERSION", "copy_model_dir", "read_model_json"]

FORMAT_VERSION = 1

_RETRAIN_HINT = (
    "retrain the model (recsys-ebm train ... --overwrite) or restore the directory from a copy"
)
_RETRAIN = "{what}; " + _RETRAIN_HINT


def _read_json(path: Path) -> Any:
    """A JSON file of a model directory; corrupt bytes raise ModelFileError naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: {_RETRAIN.format(what='corrupt JSON')} ({exc})") from exc


def read_model_json(path: str | Path) -> dict[str, Any]:
    """A model directory's ``model.json``, checked for the keys every loader reads.

    Raises:
        ModelFileError: not JSON, not an object, or a required key is missing.
    """
    path = Path(path)
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise ModelFileError(
            f"{path}: {_RETRAIN.format(what='corrupt model metadata')}: expected a JSON object, "
            f"got {type(meta).__name__}"
        )
    missing = [k for k in ("format_version", "model", "config", "n_items") if k not in meta]
    if missing and "format_version" in meta and meta["format_version"] == FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: missing key(s) {missing}; {_RETRAIN.format(what='corrupt model metadata')}"
        )
    if "model" not in meta:
        raise ModelFileError(
            f"{path}: missing key 'model'; {_RETRAIN.format(what='corrupt model metadata')}"
        )
    if not isinstance(meta.get("config", {}), dict):
        raise ModelFileError(
            f"{path}: 'config' is not an object; {_RETRAIN.format(what='corrupt model metadata')}"
        )
    return meta


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def copy_model_dir(src: str | Path, dst: str | Path) -> None:
    """Copy a saved model directory (used when logging artifacts)."""
    shutil.copytree(src, dst)
