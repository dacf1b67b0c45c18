"""Pipeline files: validation errors name file, stage and key; unchanged stages are skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
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
        ("[register]\nmodel = 'pop'\n", "[register]: missing key 'name'"),
        (
            "[register]\nmodel = 'pop'\nname = 'x'\npromote_if_better = 'ndcg@10'\n",
            "[register]: key 'promote_if_better' compares the metric of an [evaluate] stage",
        ),
        ("[register]\nmodel = 'pop'\nname = 'x'\nmodel_dir = 'd'\n", "unknown key 'model_dir'"),
        # a ranker built from train stages of the same file: each must be there
        (
            "[train.ranker]\nmodel = 'ranker'\ncomponents = ['pop', 'ghost']\n",
            "[train.ranker]: key 'components': 'ghost' needs a [train.ghost] stage",
        ),
        (
            "[train.ranker]\nmodel = 'ranker'\ncomponents = 'pop'\n",
            "[train.ranker]: key 'components' expects a non-empty list",
        ),
        (
            "[train.x]\nmodel = 'ease'\ncomponents = ['pop']\n",
            "[train.x]: key 'components' is for model = 'ranker'",
        ),
        (
            "[train.ranker]\nmodel = 'ranker'\ncomponents = ['pop']\n"
            "set = { components = ['ease'] }\n",
            "[train.ranker]: give either key 'components'",
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


RANKER = """
[train.blend]                 # declared before the ease stage it blends: it runs after it anyway
model = "ranker"
components = ["pop", "ease"]
set = { device = "cpu" }

[train.ease]
model = "ease"
set = { l2 = 10.0, l2_grid = [] }

[evaluate]
k = "5"
bootstrap = 50

[register]
model = "blend"
name = "t-blend"

[recommend]
model = "blend"
n = 5
"""


def test_ranker_from_train_stages_depends_on_them(tmp_path, small_log):
    path = write(tmp_path, BASE.format(input=small_log) + RANKER)
    run_dir = tmp_path / "run"
    pipe = load_pipeline(path, run_dir=run_dir)
    names = [st.name for st in pipe.stages]
    assert names.index("train.blend") > max(names.index("train.pop"), names.index("train.ease"))
    blend = next(st for st in pipe.stages if st.name == "train.blend")
    assert set(blend.upstream) == {"prepare", "train.pop", "train.ease"}
    first = run_pipeline(pipe, mlflow=False)
    assert first["train.blend"] == "ran"
    assert first["register"] == "skipped", "no MLflow, no registry"
    from recsys_ebm import load_model

    ranker = load_model(run_dir / "models" / "blend")
    assert ranker.fit_info["components"] == ["popularity", "ease"]
    rows = ranker.history[:5]
    np.testing.assert_allclose(  # the trained ease directory, used as it is (not refitted)
        ranker.components[1].energies(rows),
        load_model(run_dir / "models" / "ease").energies(rows),
        rtol=1e-5,
    )
    # retraining a component reruns the ranker and what is served from it, nothing else
    pipe2 = load_pipeline(path, ["train.ease.set.l2=20.0"], run_dir=run_dir)
    again = run_pipeline(pipe2, mlflow=False)
    ran = {k for k, v in again.items() if v == "ran"}
    assert ran == {"train.ease", "train.blend", "evaluate", "recommend"}  # outputs replaced


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
    # another tracking store lacks the stage runs: the MLflow-logging stages rerun there
    other = f"sqlite:///{tmp_path / 'other.db'}"
    cmd = [sys.executable, "-m", "recsys_ebm", "run", str(path), "--run-dir", str(tmp_path / "run")]
    r3 = subprocess.run([*cmd, "--tracking-uri", other], capture_output=True, text=True)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert "prepare: skipped (unchanged" in r3.stdout and "1 stage(s) ran, 1 skipped" in r3.stdout


CHAMPION = """
[train.ease]
model = "ease"
set = { l2 = 10.0, l2_grid = [] }

[evaluate]
k = "5"
bootstrap = 50

[register]
model = "ease"
name = "t-model"
promote_if_better = "ndcg@5"

[recommend]
model = "models:/t-model@champion"
n = 5
"""


def test_recommend_stage_serves_the_champion_the_register_stage_left(tmp_path, small_log):
    """Run 1 registers EASE (champion v1). Run 2 registers popularity, which is worse, as v2:
    the champion stays v1, and the rerun recommend stage still serves v1's lists."""
    import polars as pl

    path = write(tmp_path, BASE.format(input=small_log) + CHAMPION)
    run_dir = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipe = load_pipeline(path, run_dir=run_dir)
    rec = next(st for st in pipe.stages if st.kind == "recommend")
    assert "register" in rec.upstream
    assert run_pipeline(pipe, tracking_uri=uri)["recommend"] == "ran"
    recs = run_dir / "recommendations.parquet"
    first = pl.read_parquet(recs)
    assert set(first["model_version"]) == {"t-model/v1"}
    worse = load_pipeline(path, ["register.model=pop"], run_dir=run_dir)
    status = run_pipeline(worse, tracking_uri=uri)
    assert status["register"] == "ran" and status["recommend"] == "ran"
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    versions = {str(v.version) for v in client.search_model_versions("name = 't-model'")}
    assert versions == {"1", "2"}
    assert str(client.get_model_version_by_alias("t-model", "champion").version) == "1"
    again = pl.read_parquet(recs)
    assert again.drop("model_version").equals(first.drop("model_version"))
    assert set(again["model_version"]) == {"t-model/v1"}
    # with MLflow off there is no registry: the stage says so instead of failing
    off = run_pipeline(load_pipeline(path, run_dir=tmp_path / "off"), mlflow=False)
    assert off["register"] == "skipped" and off["recommend"] == "skipped"


def test_quickstart_pipeline_end_to_end_reduced(tmp_path):
    """The README's main job, through the CLI, on a reduced config: every model (retriever and
    the ranker over the trained models included), report, MLflow runs, registry, recs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [
        # fewer items (films liked by >= 20 users) and tiny models: seconds, not minutes
        "prepare.min_rating=4.0",
        "prepare.min_item_interactions=20",
        "train.rbm.set.epochs=2",
        "train.rbm.set.n_hidden=32",
        "train.ease.set.l2_grid=[]",
        "train.retriever.set.epochs=1",
        "train.retriever.set.embedding_size=16",
        "train.retriever.set.n_hidden=32",
        "train.retriever.set.batch_size=2048",
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
    recs_file = run / "recommendations.parquet"
    # the final print says where everything is
    assert f"dataset:          {run / 'data'}" in r.stdout
    assert report.is_file() and f"report:           {report}" in r.stdout
    champion = "models:/quickstart-ranker@champion"
    assert f"recommendations:  {recs_file}  (model {champion})" in r.stdout
    assert "registered model: quickstart-ranker version 1; champion" in r.stdout
    assert f"mlflow ui --backend-store-uri {uri}" in r.stdout
    import json

    import polars as pl

    from recsys_ebm import load_model

    metrics = json.loads((run / "report" / "metrics.json").read_text())
    models = {"popularity", "ease", "als", "rbm", "retriever", "ranker"}
    assert set(metrics["models"]) == models
    # the ranker blends the pipeline's trained directories (not retrained)
    ranker = load_model(run / "models" / "ranker")
    assert ranker.fit_info["components"] == ["ease", "als", "rbm", "retriever"]
    assert ranker.fit_info["refit_on_train_valid"] == []
    recs = pl.read_parquet(recs_file)
    users = pl.read_parquet(run / "data" / "users.parquet")
    assert set(recs["user_id"]) == set(users["user_id"]), "recommendations for every user"
    assert recs.group_by("user_id").len()["len"].min() == 100
    assert set(recs["model_version"]) == {"quickstart-ranker/v1"}  # the champion's version
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["recsys-ebm"], output_format="list")
    stages = sorted(x.data.tags.get("stage") for x in runs)
    assert stages.count("train") == len(models) and stages.count("pipeline") == 1
    assert "evaluate" in stages and "recommend" in stages
    parent = next(x for x in runs if x.data.tags.get("stage") == "pipeline")
    nested = [x for x in runs if x.data.tags.get("stage") in ("train", "evaluate", "recommend")]
    assert all(x.data.tags.get("mlflow.parentRunId") == parent.info.run_id for x in nested)
    # registered from the ranker's train run, promoted on the evaluate stage's test NDCG@10
    client = MlflowClient(uri, registry_uri=uri)
    champ = client.get_model_version_by_alias("quickstart-ranker", "champion")
    assert str(champ.version) == "1"
    assert float(champ.tags["metric.ndcg_at_10"]) == pytest.approx(
        metrics["models"]["ranker"]["means"]["ndcg@10"]
    )
    r2 = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r2.returncode == 0 and "0 stage(s) ran, 10 skipped" in r2.stdout, r2.stderr[-3000:]


def test_shipped_pipelines_parse():
    for name in ("quickstart", "movielens-100k", "benchmark-adjacency"):
        pipe = load_pipeline(ROOT / "pipelines" / f"{name}.toml")
        assert pipe.stages[0].kind == "prepare"
