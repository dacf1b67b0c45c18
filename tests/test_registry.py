"""register / promote-if-better / models:/NAME@champion, against SQLite and a real server."""

from __future__ import annotations

import mlflow
import polars as pl
import pytest
from mlflow import MlflowClient

from recsys_ebm.cli import main
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.registry import register_model


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """Two datasets with different fingerprints (different split seeds)."""
    log = planted_communities(n_users=200, n_items=80, n_interactions=5_000, seed=2)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    root = tmp_path_factory.mktemp("ds")
    for seed in (0, 1):
        prepare_dataset(p, seed=seed).save(root / f"data{seed}")
    return root / "data0", root / "data1"


def _train(data, model, out, uri, exp, *sets):
    argv = ["train", "--data", str(data), "--model", model, "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main([*argv, "--tracking-uri", uri, "--experiment", exp]) == 0


def test_register_promotes_only_when_better_on_same_dataset(
    data_dirs, tracking_uri, experiment, tmp_path
):
    data, other = data_dirs
    pop, ease = tmp_path / "pop", tmp_path / "ease"
    _train(data, "popularity", pop, tracking_uri, experiment)
    _train(data, "ease", ease, tracking_uri, experiment, "l2=20.0", "l2_grid=[]")
    argv = ["evaluate", "--data", str(data), "--model", str(pop), "--model", str(ease)]
    argv += ["--k", "10", "--bootstrap", "10", "--report", str(tmp_path / "report")]
    assert main([*argv, "--tracking-uri", tracking_uri, "--experiment", experiment]) == 0

    kw = dict(tracking_uri=tracking_uri, experiment=experiment, promote_if_better="ndcg@10")
    name = f"recs-{experiment}"
    first = register_model(name, model_dir=pop, **kw)
    assert first.promoted and first.version == "1" and "no champion yet" in first.reason
    assert first.metric is not None
    better = register_model(name, model_dir=ease, **kw)
    assert better.promoted and better.metric > first.metric, better.reason
    worse = register_model(name, run_id=first.run_id, **kw)
    assert not worse.promoted and "does not beat" in worse.reason
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    champ = client.get_model_version_by_alias(name, "champion")
    assert str(champ.version) == better.version == "2"
    assert champ.tags["metric_source"].startswith("evaluate run")
    # same metric on another dataset fingerprint: not comparable, champion kept
    ease2 = tmp_path / "ease2"
    _train(other, "ease", ease2, tracking_uri, experiment, "l2=5.0", "l2_grid=[]")
    run2 = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="tags.stage = 'train' and tags.model = 'ease'",
        output_format="list",
    )[0]
    client.log_metric(run2.info.run_id, "ndcg_at_10", 0.99)  # the run's own metric (source 2)
    elsewhere = register_model(name, run_id=run2.info.run_id, **kw)
    assert not elsewhere.promoted and "not comparable" in elsewhere.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"

    # the batch job serves the champion straight from the registry
    out = tmp_path / "recs.parquet"
    argv = ["recommend", "--model", f"models:/{name}@champion", "--data", str(data)]
    argv += ["--n", "3", "--out", str(out), "--tracking-uri", tracking_uri]
    assert main([*argv, "--experiment", experiment]) == 0
    df = pl.read_parquet(out)
    assert (df["model_version"] == f"{name}/v2").all() and df.height == 3 * 200


def test_register_errors_are_named(data_dirs, tracking_uri, experiment, tmp_path, capsys):
    data, _ = data_dirs
    pop = tmp_path / "pop"
    _train(data, "popularity", pop, tracking_uri, experiment)
    base = ["--tracking-uri", tracking_uri, "--experiment", experiment]
    rc = main(
        ["register", "--model-dir", str(pop), "--name", "x", "--promote-if-better", "mrr", *base]
    )
    assert rc == 2 and "--promote-if-better: run" in capsys.readouterr().err
    rc = main(["register", "--model-dir", str(tmp_path / "nope"), "--name", "x", *base])
    assert rc == 2 and "no train run" in capsys.readouterr().err
    rc = main(["register", "--model-dir", str(pop), "--name", "plain", *base])
    assert rc == 0 and "champion alias untouched" in capsys.readouterr().out
