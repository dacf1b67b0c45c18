"""MLflow tracking: every train / evaluate / recommend run is an MLflow run.

The default store is a SQLite file, ``mlflow.db`` in the working directory; pass any tracking URI
(``http://127.0.0.1:5000`` for a real server, ``sqlite:///path.db``) to use another. Runs log the
full config as params, the dataset fingerprint and manifest, the package version and git commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_EXPERIMENT",
    "default_tracking_uri",
    "git_commit",
    "log_dataset",
    "log_params_flat",
    "metric_key",
    "mlflow_run",
]

DEFAULT_EXPERIMENT = "recsys-ebm"


def default_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def metric_key(name: str) -> str:
    """MLflow metric names cannot hold '@': ``ndcg@10`` -> ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def git_commit() -> str:
    """The commit of the source checkout the package runs from, or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@contextlib.contextmanager
def mlflow_run(
    run_name: str,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    nested: bool = False,
    tags: dict[str, str] | None = None,
    enabled: bool = True,
) -> Iterator[Any]:
    """Start an MLflow run (nested under the active one when ``nested``); yields the run or None.

    Tags every run with the package version and git commit.
    """
    if not enabled:
        yield None
        return
    import mlflow

    from recsys_ebm import __version__

    uri = default_tracking_uri(tracking_uri)
    if mlflow.active_run() is None or not nested:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
    all_tags = {
        "recsys_ebm.version": __version__,
        "recsys_ebm.git_commit": git_commit(),
        **(tags or {}),
    }
    with mlflow.start_run(run_name=run_name, nested=nested, tags=all_tags) as run:
        yield run


def log_params_flat(params: dict[str, Any], prefix: str = "") -> None:
    """Log a (nested) dict as MLflow params, keys joined with '.'; values stringified."""
    import mlflow

    flat: dict[str, str] = {}

    def walk(d: dict[str, Any], pre: str) -> None:
        for k, v in d.items():
            key = f"{pre}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                flat[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)

    walk(params, prefix)
    items = list(flat.items())
    for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        mlflow.log_params(dict(items[start : start + 100]))


def log_dataset(dataset: Any) -> None:
    """Log the dataset's fingerprint (param and tag) and its manifest (artifact)."""
    import mlflow

    mlflow.log_param("dataset.fingerprint", dataset.fingerprint)
    mlflow.set_tag("dataset.fingerprint", dataset.fingerprint)
    if dataset.path is not None:
        mlflow.log_param("dataset.path", str(dataset.path))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "manifest.json"
        p.write_text(json.dumps(dataset.manifest, indent=2))
        mlflow.log_artifact(str(p), artifact_path="dataset")
