"""One Vocabulary for ids: the int/str rule, the unknown-id policy, persistence, and the same
answer for the same id (int or decimal string) from every path that takes raw ids: Dataset,
ranker.history_of, retriever.histories_from_ids, serving and the batch job's --users file."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow.exceptions import MlflowException

from recsys_ebm.batch import run_batch
from recsys_ebm.compat import check_model_matches_dataset
from recsys_ebm.data.dataset import Dataset
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.models.ease import EASE
from recsys_ebm.models.retriever import Retriever
from recsys_ebm.ranking import Ranker
from recsys_ebm.serving import RecommenderModel, build_bundle

FAST = {"ease": {"l2": 10.0, "l2_grid": [], "device": "cpu"}}


# ---------------------------------------------------------------------- the rule
def test_int_ids_are_found_by_int_or_decimal_string_only():
    v = Vocabulary([10, 42, 7], name="item")
    assert v.kind == "int"
    assert v.index([42, "42", 42.0, np.int32(42), np.uint8(42)]).tolist() == [1] * 5
    assert v.index(np.array(["7", "10"])).tolist() == [2, 0]  # a typed string array
    assert v.index(pl.Series(["42", "7"])).tolist() == [1, 2]
    not_42 = ["042", " 42", "+42", "42.0", 42.5, True, None, float("nan"), b"42"]
    assert v.index(not_42, unknown="missing").tolist() == [-1] * len(not_42)
    assert "42" in v and 42 in v and "042" not in v
    assert v.get(7) == 2 and v.get("x", default=-5) == -5


def test_string_ids_stay_strings_and_zero_padding_is_kept():
    v = Vocabulary(["0000008", "42", "abc"], name="user")  # MovieTweetings-style padded ids
    assert v.kind == "str" and v.ids.tolist() == ["0000008", "42", "abc"]
    assert v.index([42, "42", 42.0]).tolist() == [1, 1, 1]  # 42 is written "42"
    assert v.index([8, "8", "0000008"], unknown="missing").tolist() == [-1, -1, 0]


def test_unknown_ids_raise_naming_the_argument_or_map_to_minus_one():
    v = Vocabulary(range(100), name="item")
    with pytest.raises(ValueError) as err:
        v.index([5, "005", 1000, -3, 200, 300, 400, 500], argument="history")
    msg = str(err.value)
    assert msg.startswith("history: 7 of 8 id(s) not in the item vocabulary (100 int ids)")
    assert "'005', 1000, -3, 200, 300" in msg and "(and 2 more)" in msg and "400" not in msg
    assert v.index([5, "005"], unknown="missing").tolist() == [5, -1]
    with pytest.raises(ValueError, match="unknown: expected one of"):
        v.index([5], unknown="drop")
    assert v.index(7).tolist() == [7]  # one id: a length-1 array
    with pytest.raises(ValueError, match="indices: expected indices of the item vocabulary"):
        v.lookup([3, -1])
    assert v.lookup([3, 99]).tolist() == [3, 99]


@pytest.mark.parametrize(
    ("ids", "error", "needle"),
    [
        ([1, "a"], TypeError, "all ints or all strings, got a mix"),
        ([1.5, 2.0], TypeError, "got float 1.5"),
        ([True, False], TypeError, "got bool True"),
        ([3, 1, 3], ValueError, r"unique ids; got 1 duplicate\(s\), e.g. \[3\]"),
        (["a", "a"], ValueError, "duplicate"),
        ("abc", TypeError, "expected a sequence"),
        (pl.Series([1.0, 2.0]), TypeError, "Float64 Series"),
    ],
)
def test_bad_vocabularies_are_refused_naming_ids(ids, error, needle):
    with pytest.raises(error, match=needle) as err:
        Vocabulary(ids, name="item")
    assert str(err.value).startswith("ids: ")


def test_ids_equality_and_first_difference():
    a = Vocabulary([1, 2, 3])
    assert a == Vocabulary(["1", "2", "3"])  # the same ids under the rule
    assert a != Vocabulary(["1", "02", "3"]) and a.first_difference(Vocabulary([1, 5, 3])) == 1
    assert a.first_difference(Vocabulary([1, 2])) == 2 and a != Vocabulary([1, 2])
    assert a != [1, 2, 3]  # only vocabularies compare equal
    ids = a.ids
    assert ids.dtype == object and type(ids[0]) is int and not ids.flags.writeable
    assert len(a) == 3 and list(a) == [1, 2, 3]
    assert a.to_series().dtype == pl.Int64 and Vocabulary(["x"]).to_series().dtype == pl.String
    assert pickle.loads(pickle.dumps(a)) == a
    assert len(Vocabulary([])) == 0 and Vocabulary([]).index([1], unknown="missing").tolist() == [
        -1
    ]


def test_save_load_round_trip_keeps_types(tmp_path):
    for ids in ([3, 1, 2], ["007", "x", "42"]):
        v = Vocabulary(ids, name="item")
        path = v.save(tmp_path / "v" / "items.json")
        assert json.loads(path.read_text()) == ids  # a plain JSON list (a model's items.json)
        back = Vocabulary.load(path, name="item")
        assert back == v and back.kind == v.kind and back.ids.tolist() == ids
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["items.json"]  # no temporaries
    (tmp_path / "bad.json").write_text('{"ids": [1]}')
    with pytest.raises(ValueError, match=r"bad\.json: expected a JSON list of ids, got dict"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text("[1, 1]")
    with pytest.raises(ValueError, match=r"dup\.json: ids: .*duplicate"):
        Vocabulary.load(tmp_path / "dup.json")
    (tmp_path / "cut.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"cut\.json is not valid JSON"):
        Vocabulary.load(tmp_path / "cut.json")


def test_vectorised_lookups_agree_on_many_ids():
    rng = np.random.default_rng(0)
    raw = rng.permutation(10**7)[:150_000]
    v = Vocabulary(pl.Series(raw), name="user")
    query = np.concatenate([raw[::-1], [10**7 + 1]])  # every id, reversed, plus one unknown
    want = np.concatenate([np.arange(raw.size)[::-1], [-1]])
    for q in (
        query,
        query.astype(str),
        pl.Series(query),
        query.tolist(),
        query.astype(str).tolist(),
    ):
        np.testing.assert_array_equal(v.index(q, unknown="missing"), want)
    s = Vocabulary([f"u{x:08d}" for x in raw[:50_000]])
    qs = np.array([f"u{x:08d}" for x in raw[:50_000][::-1]])
    np.testing.assert_array_equal(s.index(qs), np.arange(50_000)[::-1])


# ---------------------------------------------------------------------- every path
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    log = planted_communities(n_users=80, n_items=30, n_interactions=1_500, seed=2)
    log.drop("community").write_parquet(root / "log.parquet")
    ds = prepare_dataset(root / "log.parquet", seed=0)
    assert ds.user_vocab.kind == "int" and ds.item_vocab.kind == "int"
    ease = EASE(l2=20.0, l2_grid=(), device="cpu").fit_dataset(ds)
    ease.save(root / "ease")
    return root, ds, ease


def test_dataset_lookups_follow_the_rule(world):
    _, ds, _ = world
    u, i = ds.user_ids[5], ds.item_ids[3]
    assert ds.user_index([u, str(u), float(u)]).tolist() == [5, 5, 5]
    assert ds.item_index([i, str(i)]).tolist() == [3, 3]
    assert ds.item_index([f"0{i}"]).tolist() == [-1]  # the documented default: -1
    with pytest.raises(
        ValueError, match=rf"items: 1 of 2 id\(s\) not in the item vocabulary.*'0{i}'"
    ):
        ds.item_index([i, f"0{i}"], unknown="raise", argument="items")
    padded = Dataset(
        users=pl.DataFrame({"index": [0, 1], "user_id": ["0000008", "42"]}),
        items=pl.DataFrame({"index": [0], "item_id": [1]}),
        interactions={},
    )
    assert padded.user_index(["0000008", 8, 42, "42"]).tolist() == [0, -1, 1, 1]


def test_compat_compares_item_vocabularies_under_the_rule(world):
    _, ds, ease = world
    model = EASE(l2=20.0, l2_grid=(), device="cpu").fit(ds.train)
    model.item_ids = [str(x) for x in ds.item_ids]  # the same ids, written as strings
    check_model_matches_dataset(model, ds)
    model.item_ids = [f"0{x}" if k == 4 else str(x) for k, x in enumerate(ds.item_ids)]
    with pytest.raises(ValueError, match=r"first difference at item index 4: model has '0"):
        check_model_matches_dataset(model, ds, argument="model")


def test_ranker_history_of_answers_int_and_str_alike(world):
    _, ds, _ = world
    ranker = Ranker(components=("popularity", "ease"), component_config=FAST, device="cpu")
    ranker.fit_dataset(ds)
    u = ds.user_ids[7]
    rows_i, idx_i = ranker.history_of([u])
    rows_s, idx_s = ranker.history_of([str(u)])
    assert idx_i.tolist() == idx_s.tolist() == [7]
    assert (rows_i != rows_s).nnz == 0 and rows_i.nnz > 0
    assert ranker.history_of([f"0{u}"])[1].tolist() == [-1]
    with pytest.raises(ValueError, match=r"user_ids: 1 of 2 id\(s\) not in the user vocabulary"):
        ranker.history_of([u, "ghost"], unknown="raise")
    excluded = Ranker(
        components=("popularity",), exclude_items=[str(ds.item_ids[0])], device="cpu"
    ).fit_dataset(ds)
    items, _ = excluded.recommend(ds.history("test"), n=ds.n_items)
    assert 0 not in items  # a config item id given as a string excludes the int id


def test_retriever_histories_from_ids_answer_int_and_str_alike(world):
    _, ds, _ = world
    model = Retriever(embedding_size=8, n_hidden=16, epochs=1, device="cpu", progress=False)
    model.fit_dataset(ds)
    ids = ds.item_ids[[2, 5, 9]]
    as_int = model.histories_from_ids([list(ids), []])
    as_str = model.histories_from_ids([[str(x) for x in ids], []])
    as_np = model.histories_from_ids([np.asarray(ids, dtype=np.int64), []])
    for m in (as_str, as_np):
        assert (m != as_int).nnz == 0
    assert sorted(as_int[0].indices) == [2, 5, 9]
    np.testing.assert_allclose(model.energies(as_int), model.energies(as_str))
    with pytest.raises(ValueError, match=rf"histories: 1 item id\(s\) unknown.*'0{ids[0]}'"):
        model.histories_from_ids([[ids[1], f"0{ids[0]}"]], on_unknown="raise")


def test_serving_answers_int_and_str_alike(world, tmp_path):
    root, ds, _ = world
    bundle = build_bundle(root / "ease", tmp_path / "bundle", dataset=ds)
    served = RecommenderModel()
    served.load_bundle(bundle)
    u, items = int(ds.user_ids[4]), [int(x) for x in ds.item_ids[[1, 6]]]
    frame = pd.DataFrame(
        {
            "user_id": [u, str(u), 99_999, "99999"],
            "history": [[], [], items, [str(x) for x in items]],
            "n": [5, 5, 5, 5],
        }
    )
    out = served.predict(None, frame).to_dict("records")
    assert out[0] == out[1] and out[0]["user_id"] == u  # the vocabulary's id answers
    assert out[2]["item_ids"] == out[3]["item_ids"] and out[2]["fallback"] is False
    bad = pd.DataFrame({"user_id": [u], "history": [[f"0{items[0]}"]]})
    with pytest.raises(MlflowException, match=rf"unknown item ids \['0{items[0]}'\]"):
        served.predict(None, bad, params={"unknown_items": "error"})
    assert served.predict(None, bad).loc[0, "ignored_items"] == [f"0{items[0]}"]


def test_batch_users_file_matches_int_and_str_alike(world, tmp_path):
    _, ds, ease = world
    wanted = [int(ds.user_ids[k]) for k in (3, 11)]
    (tmp_path / "users.csv").write_text("user_id\n" + "\n".join(map(str, wanted)) + "\n")
    pl.DataFrame({"user_id": wanted}).write_parquet(tmp_path / "users.parquet")
    outs = []
    for name in ("users.csv", "users.parquet"):
        res = run_batch(
            ease,
            ds,
            tmp_path / f"{name}.recs.parquet",
            users=str(tmp_path / name),
            n=4,
            progress=False,
        )
        assert res.n_users == 2 and res.unknown_users == 0
        outs.append(pl.read_parquet(res.out).sort(["user_id", "rank"]))
    assert outs[0].equals(outs[1]) and sorted(set(outs[0]["user_id"])) == sorted(wanted)
    (tmp_path / "padded.csv").write_text(f"user_id\n0{wanted[0]}\n{wanted[1]}\n")
    res = run_batch(
        ease,
        ds,
        tmp_path / "padded.recs.parquet",
        users=str(tmp_path / "padded.csv"),
        n=4,
        progress=False,
    )
    assert res.n_users == 1 and res.unknown_users == 1  # "0<id>" is not the int id
