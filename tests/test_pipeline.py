"""Pipeline files: validation errors name file, stage and key; unchanged stages are skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.pipeline import load_pipeline, run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipe.toml"
    p.write_text(text)
    return p


BASE = """
[pipeline]
name = "t"

[prepare]
input = "{input}"
test_fraction = 0.2

[train.pop]
model = "popularity"
"""


@pytest.fixture
def small_log(tmp_path):
    p = tmp_path / "u.data"
    rows = [
        f"{u}\t{i}\t4\t{u * 100 + i}" for u in range(1, 30) for i in range(1, 25) if (u + i) % 3
    ]
    p.write_text("\n".join(rows) + "\n")
    return p


@pytest.mark.parametrize(
    "extra, message",
    [
        ("[prepare]\nbogus = 1\n", "[prepare]: unknown key 'bogus'"),
        ("[prepare]\ntest_fraction = 'lots'\n", "[prepare]: key 'test_fraction' expects float"),
        ("[prepare]\nsplit = 'sideways'\n", "[prepare]: key 'split' expects one of"),
        ("[train.x]\nmodel = 'nope'\n", "[train.x]: key 'model' expects one of"),
        ("[evaluat]\nk = '10'\n", "unknown stage(s) ['evaluat']"),
        ("[recommend]\nmodel = 'ghost'\n", "[recommend]: model 'ghost' is neither"),
        (
            "[register]\nmodel = 'ghost'\nname = 'x'\n",
            "[register]: model 'ghost' needs a [train.ghost]",
        ),
    ],
)
def test_config_errors_name_file_stage_and_key(tmp_path, small_log, extra, message):
    text = BASE.format(input=small_log)
    if extra.startswith("[prepare]"):
        text = text.replace("test_fraction = 0.2\n", extra.split("\n", 1)[1])
    else:
        text += "\n" + extra
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_stage_needing_missing_stage(tmp_path):
    path = write(tmp_path, "[train.pop]\nmodel = 'popularity'\n")
    with pytest.raises(
        ConfigError, match=r"\[train.pop\]: needs the output of a \[prepare\] stage"
    ):
        load_pipeline(path)


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_pipeline(tmp_path / "nope.toml")


def test_rerun_skips_unchanged_stages_and_set_invalidates(tmp_path, small_log):
    path = write(tmp_path, BASE.format(input=small_log))
    run_dir = tmp_path / "run"
    first = run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False)
    assert first == {"prepare": "ran", "train.pop": "ran"}
    assert (run_dir / "data" / "manifest.json").is_file()
    assert (run_dir / "models" / "pop" / "model.json").is_file()
    again = run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False)
    assert again == {"prepare": "skipped", "train.pop": "skipped"}
    # a changed option reruns that stage and everything downstream
    changed = run_pipeline(load_pipeline(path, ["prepare.seed=5"], run_dir=run_dir), mlflow=False)
    assert changed == {"prepare": "ran", "train.pop": "ran"}
    # an edited raw input invalidates prepare
    small_log.write_text(small_log.read_text() + "99\t1\t5\t1\n")
    edited = run_pipeline(load_pipeline(path, ["prepare.seed=5"], run_dir=run_dir), mlflow=False)
    assert edited["prepare"] == "ran"
    forced = run_pipeline(
        load_pipeline(path, ["prepare.seed=5"], run_dir=run_dir), force=True, mlflow=False
    )
    assert set(forced.values()) == {"ran"}


def test_cli_run_with_mlflow_parent_and_nested_runs(tmp_path, small_log):
    path = write(tmp_path, BASE.format(input=small_log))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys_ebm",
            "run",
            str(path),
            "--run-dir",
            str(tmp_path / "run"),
            "--tracking-uri",
            uri,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "MLflow UI:" in r.stdout and "2 stage(s) ran" in r.stdout
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["recsys-ebm"], output_format="list")
    parent = [x for x in runs if x.data.tags.get("stage") == "pipeline"]
    train = [x for x in runs if x.data.tags.get("stage") == "train"]
    assert len(parent) == 1 and len(train) == 1
    assert train[0].data.tags.get("mlflow.parentRunId") == parent[0].info.run_id
    assert train[0].data.params["dataset.fingerprint"]
    r2 = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys_ebm",
            "run",
            str(path),
            "--run-dir",
            str(tmp_path / "run"),
            "--tracking-uri",
            uri,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r2.returncode == 0 and "skipped (unchanged" in r2.stdout


def test_quickstart_pipeline_end_to_end_reduced(tmp_path):
    """The README's main job, through the CLI, on a reduced config: report, runs, recs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [
        "train.rbm.set.epochs=2",
        "train.rbm.set.n_hidden=32",
        "train.ease.set.l2_grid=[]",
        "evaluate.bootstrap=100",
    ]
    cmd = [
        sys.executable,
        "-m",
        "recsys_ebm",
        "run",
        str(ROOT / "pipelines" / "quickstart.toml"),
        "--run-dir",
        str(tmp_path / "run"),
        "--tracking-uri",
        uri,
    ]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    report = run / "report" / "report.html"
    assert report.is_file() and f"report:           {report}" in r.stdout
    assert "mlflow ui --backend-store-uri" in r.stdout
    import json

    import polars as pl

    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"popularity", "ease", "als", "rbm"}
    recs = pl.read_parquet(run / "recommendations.parquet")
    users = pl.read_parquet(run / "data" / "users.parquet")
    assert set(recs["user_id"]) == set(users["user_id"]), "recommendations for every user"
    assert recs.group_by("user_id").len()["len"].min() == 100
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["recsys-ebm"], output_format="list")
    stages = sorted(x.data.tags.get("stage") for x in runs)
    assert stages.count("train") == 4 and "evaluate" in stages and "recommend" in stages
    parent = next(x for x in runs if x.data.tags.get("stage") == "pipeline")
    nested = [x for x in runs if x.data.tags.get("stage") in ("train", "evaluate", "recommend")]
    assert all(x.data.tags.get("mlflow.parentRunId") == parent.info.run_id for x in nested)
    r2 = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r2.returncode == 0 and "0 stage(s) ran, 7 skipped" in r2.stdout


def test_shipped_pipelines_parse():
    for name in ("quickstart", "movielens-100k", "benchmark-adjacency"):
        pipe = load_pipeline(ROOT / "pipelines" / f"{name}.toml")
        assert pipe.stages[0].kind == "prepare"
