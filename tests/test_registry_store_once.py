"""The registry stores each model once and registers a run's own model; clear registry errors;
a fresh SQLite store shared by two processes; quiet CLI output; the UI hint."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recsys_ebm.batch import model_version
from recsys_ebm.cli import main
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.registry import register_model, resolve_model_uri, resolve_version
from recsys_ebm.tracking import ui_hint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    log = planted_communities(n_users=80, n_items=40, n_interactions=1_500, seed=3)
    root = tmp_path_factory.mktemp("store-once")
    log.drop("community").write_parquet(root / "log.parquet")
    prepare_dataset(root / "log.parquet", seed=0).save(root / "data")
    return root / "data"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite store whose experiment keeps its artifacts under ``tmp_path/artifacts``."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    return uri


def _train_ease(data: Path, out: Path, uri: str, l2: float, *extra: str) -> str:
    argv = ["train", "--data", str(data), "--model", "ease", "--out", str(out), "--overwrite"]
    argv += ["--set", "l2_grid=[]", "--set", f"l2={l2}", "--tracking-uri", uri]
    assert main([*argv, "--experiment", "e", *extra]) == 0
    if "--no-mlflow" in extra:
        return ""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("e")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[
        0
    ].info.run_id


def _weights(root: Path) -> list[Path]:
    return sorted(root.rglob("weights.safetensors"))


def test_register_run_of_a_retrained_dir_is_refused_and_weights_are_stored_once(
    data, store, tmp_path
):
    """Issue "register --run bundles the directory as it is now" and "the EASE matrix is stored
    three times": a run registers its own model, from one logged copy."""
    model = tmp_path / "ease"
    first = _train_ease(data, model, store, 10.0)
    # the train run records the directory's hash and keeps no copy of the weights
    client = MlflowClient(store, registry_uri=store)
    assert client.get_run(first).data.tags["model_version"] == model_version(model)
    assert _weights(tmp_path / "art") == []
    second = _train_ease(data, model, store, 500.0)  # retrained into the same directory
    kw = dict(tracking_uri=store, experiment="e")
    with pytest.raises(ValueError, match=f"run_id: run {first} trained .* now holds") as err:
        register_model("ease", run_id=first, **kw)
    assert f"trained by run {second}: register that one" in str(err.value)
    assert client.search_registered_models() == []

    by_dir = register_model("ease", model_dir=model, **kw)
    again = register_model("ease", run_id=second, **kw)
    other = register_model("ease-copy", run_id=second, **kw)
    assert by_dir.run_id == again.run_id == other.run_id == second
    assert (by_dir.version, again.version, other.version) == ("1", "2", "1")
    # all three versions point at the run's one logged model: one copy of the weights
    assert by_dir.model_uri == again.model_uri == other.model_uri
    (weights,) = _weights(tmp_path / "art")
    assert weights.read_bytes() == (model / "weights.safetensors").read_bytes()
    mv = client.get_model_version("ease", "2")
    assert mv.run_id == second and mv.source == by_dir.model_uri
    # the version serves the retrained model, not the first one
    got, label = resolve_model_uri("models:/ease/2", store, tmp_path / "dl")
    assert model_version(got) == model_version(model) and label == "ease/v2"

    # a registered run keeps serving its own model after its directory is retrained
    _train_ease(data, model, store, 50.0)
    third = register_model("ease", run_id=second, **kw)
    assert third.model_uri == by_dir.model_uri and len(_weights(tmp_path / "art")) == 1


def test_register_model_dir_changed_without_mlflow_is_refused(data, store, tmp_path):
    model = tmp_path / "ease"
    run = _train_ease(data, model, store, 10.0)
    _train_ease(data, model, store, 300.0, "--no-mlflow")
    with pytest.raises(ValueError, match="model_dir: .* which none of its 1 train run") as err:
        register_model("ease", model_dir=model, tracking_uri=store, experiment="e")
    assert run in str(err.value) and "no_mlflow=True" in str(err.value)


def test_unknown_models_aliases_and_versions_are_named(data, store, tmp_path):
    model = tmp_path / "ease"
    run = _train_ease(data, model, store, 10.0)
    register_model("recs", run_id=run, tracking_uri=store, experiment="e")
    client = MlflowClient(store, registry_uri=store)
    client.set_registered_model_alias("recs", "staging", "1")
    with pytest.raises(ValueError, match="no registered model 'no-such-model'.*models: recs"):
        resolve_model_uri("models:/no-such-model@champion", store, tmp_path / "dl")
    with pytest.raises(ValueError, match=r"no alias 'champion'; its aliases: @staging \(version 1"):
        resolve_model_uri("models:/recs@champion", store, tmp_path / "dl")
    with pytest.raises(ValueError, match="has no version 9; its versions: 1"):
        resolve_version("models:/recs/9", store)
    with pytest.raises(ValueError, match="VERSION a number"):
        resolve_version("models:/recs/latest", store)
    assert resolve_version("models:/recs@staging", store) == ("recs", "1")
    with pytest.raises(ValueError, match="run_id: no run 'deadbeef'"):
        register_model("recs", run_id="deadbeef", tracking_uri=store)


_CHILD = """
import sys, time
from pathlib import Path
import mlflow
from recsys_ebm.tracking import mlflow_run
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()
while not go.exists():
    time.sleep(0.01)
with mlflow_run("child", tracking_uri=sys.argv[1], experiment="shared") as run:
    mlflow.log_param("who", sys.argv[3])
print(run.info.run_id)
"""


def test_two_processes_create_one_fresh_sqlite_store_at_once(tmp_path):
    """Issue "a fresh mlflow.db used by two processes at once kills one of them" (3 of 3)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_LOGGING_LEVEL", "RECSYS_EBM_VERBOSE"):
        env.pop(var, None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, uri, str(go), str(tmp_path / f"ready{k}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert time.monotonic() < deadline, "children did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()  # both start creating the store now
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "INFO mlflow" not in err, err
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("shared").experiment_id]
    )
    assert sorted(r.info.run_id for r in runs) == sorted(o.strip() for o, _ in outs)


def test_a_locked_store_says_to_use_a_tracking_server(tmp_path):
    import sqlite3

    from recsys_ebm import tracking

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    def create(con: sqlite3.Connection) -> None:
        con.execute("CREATE TABLE t (x)")

    holder = sqlite3.connect(db, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the retries
    try:
        with pytest.raises(tracking.TrackingStoreError, match="should be a\\s+tracking server"):
            tracking._retry_locked(uri, lambda: create(sqlite3.connect(db, timeout=0.05)), 2)
    finally:
        holder.rollback()
        holder.close()
    with pytest.raises(tracking.TrackingStoreError, match="directory of the SQLite store"):
        tracking.prepare_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}")


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RECSYS_EBM_VERBOSE", None)
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_register_output_has_no_mlflow_info_lines_unless_verbose(data, store, tmp_path):
    model = tmp_path / "ease"
    _train_ease(data, model, store, 10.0)
    base = ["register", "--model-dir", str(model), "--tracking-uri", store, "--experiment", "e"]
    quiet = _cli([*base, "--name", "quiet"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO mlflow" not in quiet.stderr and "Downloading artifacts" not in quiet.stderr
    assert "registered quiet version 1" in quiet.stdout
    # a second model directory, so that the pyfunc is logged (and validated) again
    model2 = tmp_path / "ease2"
    _train_ease(data, model2, store, 20.0)
    base[2] = str(model2)
    loud = _cli([*base, "--name", "loud", "--verbose"], tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "INFO mlflow" in loud.stderr


def test_ui_hint_links_the_experiments_runs_page(store, tmp_path):
    exp_id = MlflowClient(store, registry_uri=store).get_experiment_by_name("e").experiment_id
    hint = ui_hint(store, "e")
    assert f"mlflow ui --backend-store-uri {store}" in hint
    assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs" in hint
    assert ui_hint("http://127.0.0.1:1/", "e").startswith("MLflow UI: http://127.0.0.1:1/#/")


def test_a_run_of_an_older_version_registers_its_logged_model_directory(data, store, tmp_path):
    """Train runs of earlier versions logged the model directory (``model/``) and no hash: they
    register that artifact, their own model, whatever the directory holds now."""
    import shutil

    import mlflow

    model = tmp_path / "ease"
    _train_ease(data, model, store, 10.0, "--no-mlflow")
    old = tmp_path / "old-copy"
    shutil.copytree(model, old)
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("e")
    with mlflow.start_run(tags={"stage": "train", "model_dir": str(model.resolve())}) as run:
        mlflow.log_artifacts(str(model), artifact_path="model")
    _train_ease(data, model, store, 500.0, "--no-mlflow")  # the directory moves on
    res = register_model("legacy", run_id=run.info.run_id, tracking_uri=store, experiment="e")
    got, _ = resolve_model_uri(f"models:/legacy/{res.version}", store, tmp_path / "dl")
    assert model_version(got) == model_version(old) != model_version(model)
