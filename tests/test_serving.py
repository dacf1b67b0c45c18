"""`mlflow models serve -m models:/NAME@champion` serves the ranker; answers match the batch job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_ebm.cli import main
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.models import load_model
from tests.conftest import free_port, stop, wait_http

NAME = "ranker-serving-test"


@pytest.fixture(scope="module")
def served(tmp_path_factory, sqlite_store):
    """Train a ranker (MLflow run), register it as champion, batch-score users, serve it."""
    root = tmp_path_factory.mktemp("serving")
    log = planted_communities(n_users=250, n_items=90, n_interactions=7_000, seed=5)
    log.drop("community").write_parquet(root / "log.parquet")
    prepare_dataset(root / "log.parquet", seed=0).save(root / "data")
    exp = ["--tracking-uri", sqlite_store, "--experiment", "serving"]
    argv = ["train", "--data", str(root / "data"), "--model", "ranker", "--out", str(root / "m")]
    argv += ["--set", 'components=["popularity","ease"]', "--set", "device=cpu"]
    assert main([*argv, "--set", "component_config={ease={l2_grid=[5.0,50.0]}}", *exp]) == 0
    argv = ["register", "--model-dir", str(root / "m"), "--name", NAME]
    assert main([*argv, "--promote-if-better", "ranker.valid_ndcg@10", *exp]) == 0
    (root / "users.csv").write_text("user_id\n0\n17\n123\n")
    (root / "hist.csv").write_text("user_id,item_id\n100000,3\n100000,7\n100000,999999\n")
    argv = ["recommend", "--model", f"models:/{NAME}@champion", "--data", str(root / "data")]
    argv += ["--users", str(root / "users.csv"), "--history", str(root / "hist.csv")]
    assert main([*argv, "--n", "10", "--out", str(root / "recs.parquet"), *exp]) == 0
    port = free_port()
    # `mlflow models serve --env-manager local` execs `uvicorn` from PATH: put this interpreter's
    # scripts first, so a venv used without activating it serves with its own packages
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": sqlite_store, "PATH": path}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(root / "serve.log", "w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, 180, root / "serve.log")
        yield f"http://127.0.0.1:{port}/invocations", root
    finally:
        stop(proc)


def post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_answers_match_the_batch_job(served):
    url, root = served
    recs = pl.read_parquet(root / "recs.parquet")
    records = [
        {"user_id": 0, "n": 10},
        {"user_id": 17, "n": 10},
        {"user_id": 100000, "history": [3, 7, 999999], "n": 10},
        {"user_id": 424242},
    ]
    status, body = post(url, {"dataframe_records": records})
    assert status == 200, body
    out = {p["user_id"]: p for p in body["predictions"]}
    for uid in (0, 17, 100000):
        want = recs.filter(pl.col("user_id").cast(pl.String) == str(uid)).sort("rank")
        assert out[uid]["item_ids"] == want["item_id"].to_list()
        np.testing.assert_allclose(out[uid]["energies"], want["energy"].to_numpy(), rtol=1e-4)
        assert out[uid]["fallback"] is False
    assert out[100000]["ignored_items"] == [999999]
    # an unknown user without history: popularity fallback, flagged, default n
    ghost = out[424242]
    assert ghost["fallback"] is True and len(ghost["item_ids"]) == 10
    ranker = load_model(root / "m")
    pop_order = np.argsort(ranker.pop_energy.numpy(), kind="stable")[:10]
    np.testing.assert_allclose(ghost["energies"], ranker.pop_energy.numpy()[pop_order], rtol=1e-6)


def test_n_above_the_catalogue_is_capped(served):
    url, root = served
    status, body = post(url, {"dataframe_records": [{"user_id": 424242, "n": 5000}]})
    assert status == 200, body
    (answer,) = body["predictions"]
    n_items = load_model(root / "m").n_items  # a new user without history: the whole catalogue
    assert len(answer["item_ids"]) == len(set(answer["item_ids"])) == n_items < 5000


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"dataframe_records": [{"n": 3}]}, "user_id"),
        ({"dataframe_records": [{"user_id": 0, "history": 5}]}, "list"),
        ({"dataframe_records": [{"user_id": 0, "n": 0}]}, "n: request 0"),
        ({"dataframe_records": [{"user_id": 0, "n": -2}]}, "expected a positive int"),
        (
            {
                "dataframe_records": [{"user_id": 9, "history": [1, 99999]}],
                "params": {"unknown_items": "error"},
            },
            "unknown item ids [99999]",
        ),
        # never cast: 1.5 and true are not user 1
        ({"dataframe_records": [{"user_id": 1.5}]}, "expected an integer or string user id"),
        ({"dataframe_records": [{"user_id": True}]}, "got the boolean True"),
        ({"dataframe_records": [{"user_id": ""}]}, "got an empty string"),
        ({"dataframe_records": [{"user_id": 0, "n": 2.5}]}, "got 2.5"),
        ({"dataframe_records": [{"user_id": 0, "n": True}]}, "got True"),
        ({"dataframe_records": [{"user_id": 0, "n": "5"}]}, "got '5'"),
        # a 60-byte request once made the worker allocate 2 GB
        ({"dataframe_records": [{"user_id": 0, "n": 100_000_000}]}, "expected at most"),
    ],
)
def test_malformed_requests_get_400_with_a_clear_message(served, payload, needle):
    status, body = post(served[0], payload)
    assert status == 400, body
    assert needle in body.get("message", ""), body
