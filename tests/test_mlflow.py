"""Every train / recommend run is an MLflow run, against a SQLite file and a real server."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from recsys_ebm.cli import main
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.tracking import git_commit, mlflow_run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    log = planted_communities(n_users=200, n_items=80, n_interactions=5_000, seed=1)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    out = tmp_path_factory.mktemp("ds") / "data"
    prepare_dataset(p, seed=0).save(out)
    return out


def _runs(uri: str, experiment: str) -> list:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_train_run_logs_config_dataset_version_curves_and_model(
    data_dir, tracking_uri, experiment, tmp_path
):
    from recsys_ebm import __version__
    from recsys_ebm.batch import model_version
    from recsys_ebm.data.dataset import Dataset

    out = tmp_path / "ease"
    argv = ["train", "--data", str(data_dir), "--model", "ease", "--out", str(out)]
    argv += ["--set", "l2_grid=[10.0, 50.0, 200.0]", "--experiment", experiment]
    assert main([*argv, "--tracking-uri", tracking_uri]) == 0
    (run,) = [r for r in _runs(tracking_uri, experiment) if r.data.tags.get("stage") == "train"]
    ds = Dataset.load(data_dir)
    p = run.data.params
    assert p["model"] == "ease" and p["l2_grid"] == "[10.0, 50.0, 200.0]" and "device" in p
    assert p["dataset.fingerprint"] == ds.fingerprint == run.data.tags["dataset.fingerprint"]
    assert run.data.tags["recsys_ebm.version"] == __version__
    assert run.data.tags["recsys_ebm.git_commit"] == git_commit() != ""
    client = MlflowClient(tracking_uri)
    curve = client.get_metric_history(run.info.run_id, "valid_ndcg_at_10")
    assert [m.step for m in sorted(curve, key=lambda m: m.step)] == [0, 1, 2]
    assert run.data.metrics["fit_seconds"] > 0
    # the run records the model directory and its hash; the weights are logged once, by register
    assert run.data.tags["model_dir"] == str(out.resolve())
    assert run.data.tags["model_version"] == model_version(out)
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "model.json" in arts and "model" not in arts
    manifest = client.download_artifacts(run.info.run_id, "dataset/manifest.json", str(tmp_path))
    assert json.loads(Path(manifest).read_text())["fingerprint"] == ds.fingerprint


def test_recommend_runs_nest_under_a_pipeline_parent(data_dir, tracking_uri, experiment, tmp_path):
    model = tmp_path / "pop"
    base = ["--tracking-uri", tracking_uri, "--experiment", experiment]
    with mlflow_run("pipeline-test", tracking_uri=tracking_uri, experiment=experiment) as parent:
        argv = ["train", "--data", str(data_dir), "--model", "popularity", "--out", str(model)]
        assert main([*argv, *base]) == 0
        out = tmp_path / "recs.parquet"
        argv = ["recommend", "--model", str(model), "--data", str(data_dir), "--out", str(out)]
        assert main([*argv, "--n", "5", *base]) == 0
    runs = {r.info.run_name: r for r in _runs(tracking_uri, experiment)}
    assert set(runs) == {"pipeline-test", "train-popularity", "recommend"}
    for name in ("train-popularity", "recommend"):
        assert runs[name].data.tags["mlflow.parentRunId"] == parent.info.run_id
    rec = runs["recommend"]
    assert rec.data.metrics["users"] == 200 and rec.data.metrics["rows"] == 1000
    assert rec.data.params["n"] == "5" and rec.data.params["model_version"].startswith("pop")
    assert "dataset.fingerprint" in rec.data.params
