"""MLflow tracking: every train / evaluate / recommend run is an MLflow run.

The default store is a SQLite file, ``mlflow.db`` in the working directory; pass any tracking URI
(``http://127.0.0.1:5000`` for a real server, ``sqlite:///path.db``) to use another. Runs log the
full config as params, the dataset fingerprint and manifest, the package version and git commit.

A fresh SQLite store is created under a file lock (``<db>.lock``), so processes that start on the
same new ``mlflow.db`` at once all succeed (MLflow's own table creation is not safe against a
concurrent creator); a store still reported busy after a few retries raises
:class:`TrackingStoreError`, which says that a store shared by many processes should be a tracking
server. MLflow's INFO log lines are silenced unless ``verbose`` (the CLI's ``--verbose``, or
``RECSYS_EBM_VERBOSE=1``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_EXPERIMENT",
    "TrackingStoreError",
    "default_tracking_uri",
    "git_commit",
    "log_dataset",
    "log_params_flat",
    "metric_key",
    "mlflow_run",
    "prepare_store",
    "set_mlflow_verbosity",
    "ui_hint",
]

DEFAULT_EXPERIMENT = "recsys-ebm"
#: environment variable that keeps MLflow's INFO log lines (set by the CLI's ``--verbose``)
VERBOSE_ENV = "RECSYS_EBM_VERBOSE"
#: tries of a SQLite store that reports "database is locked" before giving up
_STORE_TRIES = 6
_PREPARED: set[str] = set()
#: MLFLOW_LOGGING_LEVEL as the user set it, before this module changed it
_USER_LOG_LEVEL = os.environ.get("MLFLOW_LOGGING_LEVEL")
_QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class TrackingStoreError(ValueError):
    """The tracking store could not be opened or written (e.g. a SQLite file kept locked)."""


def set_mlflow_verbosity(verbose: bool | None = None) -> None:
    """MLflow's loggers at INFO when ``verbose`` (default: ``$RECSYS_EBM_VERBOSE``), else WARNING.

    Silences lines such as "Validating input example against model signature", "Successfully
    registered model" and "Created version '1'" in command output.
    """
    if verbose is None:
        if _USER_LOG_LEVEL:
            return  # the user chose MLflow's level (MLFLOW_LOGGING_LEVEL): keep it
        verbose = os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    # read by mlflow when it is first imported; the loggers below cover an imported mlflow
    os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"
    logging.getLogger("mlflow").setLevel(logging.INFO if verbose else logging.WARNING)


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for other stores, or in-memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def _shared_store_hint(uri: str) -> str:
    return (
        f"the SQLite tracking store {uri} is busy (database is locked): SQLite serves one writer "
        "at a time, so a store that several processes or machines use at once should be a "
        f"tracking server: `mlflow server --backend-store-uri {uri} --host 127.0.0.1 --port "
        "5000`, then pass http://127.0.0.1:5000 as `tracking_uri` (or set MLFLOW_TRACKING_URI)"
    )


def prepare_store(uri: str | None = None) -> str:
    """Open the tracking store (creating a SQLite one safely); returns the resolved URI.

    For a ``sqlite:///`` store, the first open in this process holds an exclusive lock on
    ``<db>.lock`` while MLflow creates or migrates the tables, and retries while SQLite reports
    "database is locked". Other stores are returned unchanged (their server does this).

    Raises:
        TrackingStoreError: the SQLite store stayed locked through every retry, or its
            directory does not exist.
    """
    uri = default_tracking_uri(uri)
    db = _sqlite_path(uri)
    if db is None or uri in _PREPARED:
        return uri
    if not db.parent.is_dir():
        raise TrackingStoreError(
            f"tracking_uri: the directory of the SQLite store {uri} does not exist "
            f"({db.parent}); create it or pass another `tracking_uri`"
        )
    import fcntl

    from mlflow import MlflowClient

    with open(f"{db}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            _retry_locked(uri, lambda: _open_store(MlflowClient(uri, registry_uri=uri)))
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    _PREPARED.add(uri)
    return uri


def _open_store(client: Any) -> None:
    # both calls create (or migrate) the tables of their store on a fresh database
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)


def _retry_locked(uri: str, fn: Any, tries: int = _STORE_TRIES) -> Any:
    """``fn()``, retried with backoff while SQLite reports "database is locked"."""
    delay = 0.25
    for attempt in range(tries):
        try:
            return fn()
        except Exception as exc:
            if not _is_locked(exc):
                raise
            if attempt == tries - 1:
                raise TrackingStoreError(_shared_store_hint(uri)) from exc
            time.sleep(delay)
            delay *= 2
    return None  # pragma: no cover


def _set_experiment(name: str) -> None:
    """``mlflow.set_experiment``, tolerating another process creating it at the same moment."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.set_experiment(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(
            exc
        ):
            raise
        mlflow.set_experiment(name)


def ui_hint(tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """How to open the experiment's runs in the MLflow UI: the command and the page's URL.

    The UI opens on an empty "Traces" page by default; the training runs are on the
    experiment's runs page, ``#/experiments/<ID>/runs``, which this line links to. For a
    tracking server the UI is the server itself; for a SQLite store it is ``mlflow ui``.
    """
    uri = default_tracking_uri(tracking_uri)
    exp_id = None
    saved = {k: os.environ.get(k) for k in _QUICK_HTTP}
    os.environ.update(_QUICK_HTTP)  # an unreachable server: no minutes of retries for a hint
    try:
        from mlflow import MlflowClient

        exp = MlflowClient(uri).get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else None
    except Exception:  # a hint must not fail the command that prints it
        exp_id = None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if uri.startswith(("http://", "https://")):
        base, cmd = uri.rstrip("/"), None
    else:
        base, cmd = "http://127.0.0.1:5000", f"mlflow ui --backend-store-uri {uri}"
    page = f"{base}/#/experiments/{exp_id}/runs" if exp_id is not None else f"{base}/#/experiments"
    if cmd is None:
        return f"MLflow UI: {page} (experiment {experiment!r} runs)"
    return f"MLflow UI: {cmd}  then open {page} (experiment {experiment!r} runs)"


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

    set_mlflow_verbosity()
    uri = prepare_store(tracking_uri)
    if mlflow.active_run() is None or not nested:
        mlflow.set_tracking_uri(uri)
        _retry_locked(uri, lambda: _set_experiment(experiment))
    all_tags = {
        "recsys_ebm.version": __version__,
        "recsys_ebm.git_commit": git_commit(),
        **(tags or {}),
    }
    try:
        with mlflow.start_run(run_name=run_name, nested=nested, tags=all_tags) as run:
            yield run
    except Exception as exc:
        if _sqlite_path(uri) is not None and _is_locked(exc):
            raise TrackingStoreError(_shared_store_hint(uri)) from exc
        raise


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
