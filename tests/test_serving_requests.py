"""Request checks of the pyfunc model through MLflow's own scoring handler (in process): the same
parsing, schema enforcement and error mapping as ``mlflow models serve``, without the server."""

from __future__ import annotations

import json

import mlflow
import polars as pl
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from recsys_ebm.data.dataset import Dataset
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.serving import MAX_N, build_bundle, log_pyfunc_model

N_ITEMS = 30


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-requests")
    log = planted_communities(n_users=50, n_items=N_ITEMS, n_interactions=700, seed=4)
    log = log.drop("community")
    log.write_parquet(root / "log.parquet")
    prepare_dataset(root / "log.parquet", seed=0).save(root / "data")
    # the same interactions over other item ids: same item count, another vocabulary
    other = log.with_columns((pl.col("item_id") + 1000).alias("item_id"))
    other.write_parquet(root / "other.parquet")
    prepare_dataset(root / "other.parquet", seed=0).save(root / "other")
    ds = Dataset.load(root / "data")
    model = Popularity().fit(ds.train)
    model.item_ids = ds.item_ids
    model.fit_info["dataset_fingerprint"] = ds.fingerprint
    model.save(root / "pop")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("serving-requests")
    with mlflow.start_run():
        info = log_pyfunc_model(root / "pop", dataset=ds)
    served = mlflow.pyfunc.load_model(info.model_uri)
    return root, served, ds


def invoke(served, payload: dict) -> tuple[int, dict]:
    """One POST /invocations through MLflow's scoring handler: (status, JSON body)."""
    schema = served.metadata.get_input_schema()
    try:
        res = scoring_server.invocations(json.dumps(payload), "application/json", served, schema)
    except MlflowException as exc:  # what the server's wrapper turns into the HTTP status
        return exc.get_http_status_code(), {"message": exc.message}
    return res.status, json.loads(res.response)


def records(*rows: dict) -> dict:
    return {"dataframe_records": list(rows)}


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        # issue: "serving takes user_id: 1.5 as user 1"
        (records({"user_id": 1.5}), "user_id: request 0: expected an integer or string user id"),
        (records({"user_id": 1}, {"user_id": 2.5}), "request 1: expected an integer or string"),
        (records({"user_id": True}), "got the boolean True"),
        (records({"user_id": ""}), "got an empty string"),
        (records({"user_id": None}), "user_id: request 0 has no user_id"),
        (records({"user_id": [1, 2]}), "user_id: request 0: expected a user id"),
        ({"dataframe_split": {"columns": ["user_id"], "data": [[1.5]]}}, "got 1.5"),
        # issue: "a 60-byte request with n = 100,000,000 raised the worker to 2 GB"
        (records({"user_id": 1, "n": 100_000_000}), f"expected at most {MAX_N}"),
        (records({"user_id": 1, "n": 2.5}), "n: request 0 (user 1): expected a positive int"),
        (records({"user_id": 1, "n": True}), "got True"),
        (records({"user_id": 1, "n": "5"}), "got '5'"),
        (records({"user_id": 1, "n": 0}), "got 0"),
        (records({"user_id": 1, "n": -3}), "got -3"),
        (records({"user_id": 1, "history": 5}), "history: request 0: expected a list"),
        (records({"user_id": 1, "exclude": "7"}), "exclude: request 0: expected a list"),
        (records({"n": 3}), "user_id"),
        ({"dataframe_records": [{"user_id": 1}], "params": {"unknown_items": "x"}}, "params"),
    ],
)
def test_malformed_requests_are_400_with_the_field_named(world, payload, needle):
    status, body = invoke(world[1], payload)
    assert status == 400, body
    assert needle in body["message"], body


def test_n_is_capped_at_the_catalogue_and_ids_are_not_cast(world):
    _, served, ds = world
    user = int(ds.user_ids[0])
    seen = int(ds.history("test")[0].nnz)
    status, body = invoke(served, records({"user_id": user, "n": 5000}, {"user_id": 99_999}))
    assert status == 200, body
    known, new = body["predictions"]
    assert len(known["item_ids"]) == ds.n_items - seen  # the whole catalogue but the seen items
    assert len(new["item_ids"]) == 10 and new["fallback"] is True
    # answering another user leaves the model as it was (popularity once masked seen items in
    # its own energy vector: every answer changed the next ones)
    assert invoke(served, records({"user_id": int(ds.user_ids[1]), "n": 5}))[0] == 200
    assert invoke(served, records({"user_id": user, "n": 5000}))[1]["predictions"][0] == known
    # 3, 3.0 and "3" name the same user; the answer carries the vocabulary's id
    same = [records({"user_id": v, "n": 4}) for v in (int(user), float(user), str(user))]
    answers = [invoke(served, p)[1]["predictions"][0] for p in same]
    assert all(a == answers[0] for a in answers) and answers[0]["user_id"] == user


def test_a_bundle_refuses_a_dataset_with_another_item_vocabulary(world, tmp_path):
    root, _, ds = world
    other = Dataset.load(root / "other")
    assert other.n_items == ds.n_items  # same count: only the ids differ
    with pytest.raises(ValueError, match="item vocabulary differs"):
        build_bundle(root / "pop", tmp_path / "bundle", dataset=other)
    assert not (tmp_path / "bundle").exists()
