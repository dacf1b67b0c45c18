"""The validation grid search (``train --search``, a pipeline stage's ``search`` table): it keeps
the point with the best validation NDCG@10, refuses bad grids before any fit, never reads test,
and logs one MLflow run per point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from recsys_ebm.data.dataset import Dataset
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs.train import TrainJob, train
from recsys_ebm.models.ease import EASEConfig
from recsys_ebm.models.rbm import RBM, RBMConfig
from recsys_ebm.models.search import grid_points, grid_search, parse_grid, parse_seeds
from recsys_ebm.models.validation import evaluate_ranking

BASE = RBMConfig(epochs=3, n_hidden=8, progress=False, seed=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    log = planted_communities(n_users=120, n_items=60, n_interactions=2_400, seed=3)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    out = tmp_path_factory.mktemp("ds") / "data"
    prepare_dataset(p, seed=0).save(out)
    return out


def test_parse_grid_reads_toml_arrays_and_points_vary_the_first_key_slowest():
    grid = parse_grid(["n_hidden=[8, 16]", "learning_rate = [0.01, 0.05, 0.1]"], RBMConfig)
    assert grid == {"n_hidden": [8, 16], "learning_rate": [0.01, 0.05, 0.1]}
    points = grid_points(grid)
    assert len(points) == 6
    assert points[0] == {"n_hidden": 8, "learning_rate": 0.01}
    assert points[3] == {"n_hidden": 16, "learning_rate": 0.01}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["n_hidden"], "expected KEY=\\[V1, V2, ...\\], got 'n_hidden'"),
        (["n_hidden=8"], "expected n_hidden=\\[V1, V2, ...\\] \\(a non-empty TOML array\\)"),
        (["n_hidden=[]"], "a non-empty TOML array"),
        (["n_hidden=[8, 16"], "a non-empty TOML array"),
        (["hidden=[8, 16]"], "expected a field of RBMConfig .*got 'hidden'"),
        (["n_hidden=[8]", "n_hidden=[16]"], "each key once, got 'n_hidden' twice"),
    ],
)
def test_parse_grid_refuses_bad_grids_naming_search(pairs, message):
    with pytest.raises(ConfigError, match="^search: .*" + message):
        parse_grid(pairs, RBMConfig)


def test_search_keeps_the_best_point_and_it_is_the_model_fitted_at_that_point(data_dir):
    torch.set_num_threads(1)
    ds = Dataset.load(data_dir)
    grid = {"learning_rate": [0.005, 0.05], "n_hidden": [4, 16]}
    seen = []
    result = grid_search(RBM, BASE, grid, ds, on_point=lambda i, row, m: seen.append(i))
    assert seen == [0, 1, 2, 3]
    scores = [row["valid_ndcg@10"] for row in result.table]
    assert [{k: r[k] for k in grid} for r in result.table] == grid_points(grid)
    best = int(np.argmax(scores))
    assert result.best == grid_points(grid)[best]
    assert result.config == BASE.replace(**result.best)
    assert result.score == max(scores)
    # the same point fitted on its own: the same model, and the score the table holds
    alone = RBM(result.config).fit_dataset(ds)
    assert torch.equal(alone.W, result.model.W)
    again = evaluate_ranking(alone, ds.train, ds.valid, ks=(10,))["ndcg@10"]
    assert again == pytest.approx(scores[best], abs=1e-12)
    # the grid is not flat here, so the choice is a real one
    assert max(scores) > min(scores)


def test_ties_go_to_the_earlier_point(data_dir):
    ds = Dataset.load(data_dir)
    # progress changes nothing the model computes: every point scores the same
    result = grid_search(RBM, BASE, {"progress": [False, True]}, ds)
    assert result.table[0]["valid_ndcg@10"] == result.table[1]["valid_ndcg@10"]
    assert result.best == {"progress": False}


def test_seeds_score_each_point_by_the_mean_over_seeds_and_keep_the_first_seeds_fit(data_dir):
    torch.set_num_threads(1)
    ds = Dataset.load(data_dir)
    grid = {"n_hidden": [4, 16]}
    fits = []
    result = grid_search(
        RBM, BASE, grid, ds, seeds=[3, 5], on_fit=lambda i, s, m, v: fits.append((i, s, m, v))
    )
    assert [(i, s) for i, s, _, _ in fits] == [(0, 3), (0, 5), (1, 3), (1, 5)]
    assert [v for *_, v in fits[2:]] == result.table[1]["valid_ndcg@10_per_seed"]
    assert fits[0][2].config.seed == 3 and fits[1][2].config.seed == 5
    # each seed's figures are the single-seed searches' at that seed
    alone = {s: grid_search(RBM, BASE.replace(seed=s), grid, ds).table for s in (3, 5)}
    for i, row in enumerate(result.table):
        per = [alone[3][i]["valid_ndcg@10"], alone[5][i]["valid_ndcg@10"]]
        assert row["valid_ndcg@10_per_seed"] == per
        assert row["valid_ndcg@10"] == pytest.approx(np.mean(per), abs=1e-12)
    means = [row["valid_ndcg@10"] for row in result.table]
    assert result.best == grid_points(grid)[int(np.argmax(means))]
    assert result.config.seed == 3
    refit = RBM(result.config).fit_dataset(ds)
    assert torch.equal(refit.W, result.model.W)


@pytest.mark.parametrize(
    ("text", "base", "grid", "message"),
    [
        ("0,x", BASE, {}, "search_seeds: expected distinct integers >= 0 .*got '0,x'"),
        ("1,1", BASE, {}, "search_seeds: expected distinct integers"),
        ("-1", BASE, {}, "search_seeds: expected distinct integers"),
        ("", BASE, {}, "search_seeds: expected distinct integers"),
        ("0,1", EASEConfig(), {}, "search_seeds: expected a model with a seed \\(EASEConfig"),
        ("0,1", BASE, {"seed": [0, 1]}, "search_seeds: expected no 'seed' key"),
    ],
)
def test_bad_search_seeds_are_refused(text, base, grid, message):
    with pytest.raises(ConfigError, match=message):
        parse_seeds(text, base, grid)


def test_search_seeds_without_a_grid_is_refused():
    with pytest.raises(ConfigError, match="search_seeds: expected a --search grid to go with it"):
        TrainJob(data="d", model="rbm", out="o", search_seeds="0,1")


def test_a_bad_point_fails_before_any_fit(data_dir):
    ds = Dataset.load(data_dir)
    fitted = []
    with pytest.raises(ConfigError, match=r"search: the point \{'n_hidden': 0\}: .*n_hidden"):
        grid_search(RBM, BASE, {"n_hidden": [8, 0]}, ds, on_point=lambda *a: fitted.append(a))
    assert fitted == []


def test_search_needs_a_validation_split(tmp_path):
    log = planted_communities(n_users=60, n_items=30, n_interactions=900, seed=1)
    p = tmp_path / "log.parquet"
    log.drop("community").write_parquet(p)
    ds = prepare_dataset(p, seed=0, valid_fraction=0.0)
    with pytest.raises(ValueError, match="search: expected a dataset with a validation split"):
        grid_search(RBM, BASE, {"n_hidden": [4, 8]}, ds)


def test_search_with_distributed_is_refused():
    with pytest.raises(ConfigError, match="search: expected no grid with distributed"):
        TrainJob(data="d", model="rbm", out="o", search=("n_hidden=[4, 8]",), distributed=True)


def _rbm_search_job(data_dir, tmp_path, experiment: str, epochs: int, **search) -> TrainJob:
    """A train job of the RBM with ``search`` (its ``search`` / ``search_seeds`` fields) into
    ``tmp_path / "rbm"``, logged to a SQLite store in ``tmp_path``."""
    return TrainJob(
        data=str(data_dir),
        model="rbm",
        out=str(tmp_path / "rbm"),
        overrides=(f"epochs={epochs}", "progress=false"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment=experiment,
        **search,
    )


def test_train_job_search_saves_the_best_and_logs_a_run_per_point(data_dir, tmp_path):
    job = _rbm_search_job(
        data_dir, tmp_path, "search", 3, search=("n_hidden=[4, 16]",), search_seeds="0,1"
    )
    uri, out = job.tracking_uri, Path(job.out)
    result = train(job)
    meta = json.loads((out / "model.json").read_text())
    search = meta["fit_info"]["search"]
    assert search["grid"] == {"n_hidden": [4, 16]}
    scores = [r["valid_ndcg@10"] for r in search["table"]]
    assert meta["config"]["n_hidden"] == [4, 16][int(np.argmax(scores))]
    assert search["best"] == {"n_hidden": meta["config"]["n_hidden"]}
    mlflow.set_tracking_uri(uri)
    runs = {
        r.info.run_name: r
        for r in mlflow.search_runs(experiment_names=["search"], output_format="list")
    }
    assert set(runs) == {"train-rbm", "search-rbm-0", "search-rbm-1"}
    client = mlflow.MlflowClient(uri)
    parent = runs["train-rbm"]
    assert parent.info.run_id == result.run_id
    assert parent.data.params["n_hidden"] == str(meta["config"]["n_hidden"])
    assert parent.data.params["search.best.n_hidden"] == str(meta["config"]["n_hidden"])
    assert parent.data.metrics["search_best_valid_ndcg_at_10"] == pytest.approx(max(scores))
    for i, n in enumerate([4, 16]):
        child = runs[f"search-rbm-{i}"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["n_hidden"] == str(n)
        assert child.data.metrics["search_valid_ndcg_at_10"] == pytest.approx(scores[i])
        assert child.data.params["search.seeds"] == "[0, 1]"
        # each seed's epoch curve in the point's run
        for seed in (0, 1):
            curve = client.get_metric_history(child.info.run_id, f"seed{seed}.valid_ndcg_at_10")
            assert len(curve) >= 1
    assert meta["config"]["seed"] == 0
    assert all(len(r["valid_ndcg@10_per_seed"]) == 2 for r in search["table"])


def test_cli_search_runs_end_to_end_and_bad_grids_exit_2(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "recsys_ebm", "train", "--data", str(data_dir)]
    base += ["--model", "retriever", "--no-mlflow", "--set", "epochs=2", "--set", "progress=false"]
    out = tmp_path / "ret"
    argv = [*base, "--out", str(out), "--search", "temperature=[0.1, 0.3]"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "search retriever 2/2: temperature=0.3" in done.stdout
    meta = json.loads((out / "model.json").read_text())
    assert meta["config"]["temperature"] == meta["fit_info"]["search"]["best"]["temperature"]
    bad = tmp_path / "bad"
    argv = [*base, "--out", str(bad), "--search", "temperature=0.1"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert "search: expected temperature=[V1, V2, ...]" in done.stderr
    assert not bad.exists()


def test_pipeline_stage_search_table_is_wired_and_checked(tmp_path):
    from recsys_ebm.pipeline import load_pipeline

    text = """
[pipeline]
name = "s"
run_dir = "{run}"

[prepare]
input = "log.parquet"

[train.rbm]
model = "rbm"
search = {{ n_hidden = [100, 400], learning_rate = [0.02, 0.05] }}
"""
    path = tmp_path / "p.toml"
    path.write_text(text.format(run=tmp_path / "run"))
    (stage,) = [s for s in load_pipeline(path).stages if s.kind == "train"]
    assert stage.config.search == ("n_hidden=[100, 400]", "learning_rate=[0.02, 0.05]")
    path.write_text(text.format(run=tmp_path / "run").replace("[100, 400]", "[100, 0]"))
    with pytest.raises(ConfigError, match=r"\[train.rbm\]: key 'search': search: the point"):
        load_pipeline(path)
    seeded = text.format(run=tmp_path / "run").replace(
        "search = {", 'search_seeds = "0,1"\nsearch = {'
    )
    path.write_text(seeded)
    (stage,) = [s for s in load_pipeline(path).stages if s.kind == "train"]
    assert stage.config.search_seeds == "0,1"
    path.write_text(seeded.replace('"0,1"', '"0,0"'))
    with pytest.raises(ConfigError, match=r"\[train.rbm\]: key 'search': search_seeds: expected"):
        load_pipeline(path)
    path.write_text(text.format(run=tmp_path / "run").replace("search = {", "search = 3 #"))
    with pytest.raises(ConfigError, match=r"\[train.rbm\]: key 'search' expects a table"):
        load_pipeline(path)


def test_a_point_that_fails_leaves_no_model_and_its_run_failed(data_dir, tmp_path):
    from recsys_ebm.diagnostics import ModelFitError

    # the second point's divergence guard trips at its first step
    job = _rbm_search_job(data_dir, tmp_path, "fail", 2, search=("max_abs_param=[10000.0, 1e-9]",))
    uri, out = job.tracking_uri, Path(job.out)
    with pytest.raises(ModelFitError):
        train(job)
    assert not out.exists()
    mlflow.set_tracking_uri(uri)
    runs = {
        r.info.run_name: r.info.status
        for r in mlflow.search_runs(experiment_names=["fail"], output_format="list")
    }
    assert runs == {"train-rbm": "FAILED", "search-rbm-0": "FINISHED", "search-rbm-1": "FAILED"}


def test_grid_search_checks_its_seeds_as_search_seeds_does(data_dir):
    ds = Dataset.load(data_dir)
    with pytest.raises(ConfigError, match=r"search_seeds: expected distinct .*got \[1, 1\]"):
        grid_search(RBM, BASE, {"n_hidden": [4]}, ds, seeds=[1, 1])
