"""Shared fixtures: a real ``mlflow server`` on 127.0.0.1 (started once per session) and the two
tracking back-ends the MLflow tests run against (a SQLite file, that server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the process log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    pytest.fail(f"server did not answer {url} within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started by a fixture (its own process group only)."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """URI of a real ``mlflow server`` (SQLite backend, proxied artifacts in a temp dir)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 120, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory):
    """One SQLite tracking file per session (creating its tables costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite') / 'mlflow.db'}"


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request, monkeypatch):
    """Each MLflow test runs against a SQLite store and against the real server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_store")
    return request.getfixturevalue("mlflow_server")


@pytest.fixture
def experiment(tracking_uri, tmp_path):
    """A fresh experiment per test (stores are shared across the session); SQLite artifacts
    go under ``tmp_path``."""
    from mlflow import MlflowClient

    name = f"test-{uuid.uuid4().hex[:12]}"
    loc = (tmp_path / "artifacts").as_uri() if tracking_uri.startswith("sqlite") else None
    MlflowClient(tracking_uri).create_experiment(name, artifact_location=loc)
    return name
