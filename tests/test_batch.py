"""Batch job: matches single-user calls, shards add up, resume leaves no duplicates or gaps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from recsys_ebm.batch import parse_shard, run_batch
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.models.ease import EASE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    log = planted_communities(n_users=300, n_items=120, n_interactions=10_000, seed=3)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    ds = prepare_dataset(p, seed=0)
    root = tmp_path_factory.mktemp("batch")
    ds.save(root / "data")
    model = EASE(l2=20.0, l2_grid=(), device="cpu").fit(ds.train)
    model.item_ids = ds.item_ids
    model.save(root / "model")
    return ds, model, root


def test_batch_matches_single_user_calls(setup, tmp_path):
    ds, model, _ = setup
    res = run_batch(model, ds, tmp_path / "recs.parquet", n=5, chunk_size=64, version="v1")
    df = pl.read_parquet(tmp_path / "recs.parquet")
    assert res.n_rows == df.height == 5 * ds.n_users
    assert df.columns == ["user_id", "rank", "item_id", "energy", "model_version", "fallback"]
    assert not df["fallback"].any()  # every dataset user has a history
    assert (df["model_version"] == "v1").all()
    hist = ds.history("test")
    for u in (0, 17, 250):
        items, en = model.recommend(hist[u], n=5, users=np.array([u]))
        got = df.filter(pl.col("user_id") == ds.user_ids[u]).sort("rank")
        assert got["rank"].to_list() == [1, 2, 3, 4, 5]
        assert got["item_id"].to_list() == list(ds.item_ids[items[0]])
        np.testing.assert_allclose(got["energy"].to_numpy(), en[0], rtol=1e-6)
        assert not set(got["item_id"].to_list()) & set(ds.item_ids[hist[u].indices])
    pq_meta = __import__("pyarrow.parquet", fromlist=["x"]).ParquetFile(tmp_path / "recs.parquet")
    assert pq_meta.num_row_groups == -(-ds.n_users // 64)  # one row group per chunk


def test_shards_together_equal_unsharded(setup, tmp_path):
    ds, model, _ = setup
    run_batch(model, ds, tmp_path / "all.parquet", n=3, chunk_size=50)
    parts = [
        run_batch(model, ds, tmp_path / f"s{i}.parquet", n=3, shard=(i, 3), chunk_size=50)
        for i in range(3)
    ]
    full = pl.read_parquet(tmp_path / "all.parquet").sort(["user_id", "rank"])
    merged = pl.concat([pl.read_parquet(p.out) for p in parts]).sort(["user_id", "rank"])
    assert merged.equals(full)
    users = [set(pl.read_parquet(p.out)["user_id"]) for p in parts]
    assert not (users[0] & users[1]) and not (users[1] & users[2])


class Crash(RuntimeError):
    pass


class CrashAfter:
    """A model that dies after a number of chunks: a simulated kill of the job."""

    def __init__(self, model, chunks: int):
        self.model, self.left = model, chunks

    def __getattr__(self, name):  # everything but recommend is the wrapped model's
        return getattr(self.model, name)

    def recommend(self, *args, **kwargs):
        if self.left == 0:
            raise Crash("killed")
        self.left -= 1
        return self.model.recommend(*args, **kwargs)


def test_resume_after_kill_has_no_duplicates_or_gaps(setup, tmp_path):
    ds, model, _ = setup
    out = tmp_path / "recs.parquet"
    with pytest.raises(Crash):
        run_batch(CrashAfter(model, 2), ds, out, n=4, chunk_size=40)
    assert not out.exists(), "no partial output file"
    assert len(list((tmp_path / "recs.parquet.parts").glob("chunk-*.parquet"))) == 2
    res = run_batch(model, ds, out, n=4, chunk_size=40, resume=True)
    assert res.chunks_skipped == 2 and res.chunks_done == -(-ds.n_users // 40) - 2
    got = pl.read_parquet(out)
    ref = run_batch(model, ds, tmp_path / "ref.parquet", n=4, chunk_size=40)
    assert got.sort(["user_id", "rank"]).equals(pl.read_parquet(ref.out).sort(["user_id", "rank"]))
    assert got.select("user_id", "rank").is_duplicated().sum() == 0
    assert not (tmp_path / "recs.parquet.parts").exists()


def test_parse_shard_errors():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError, match="shard: expected"):
            parse_shard(bad)


def test_cli_recommend_with_new_user_history(setup, tmp_path):
    ds, _, root = setup
    hist = tmp_path / "hist.csv"
    a, b = ds.item_ids[0], ds.item_ids[1]
    hist.write_text(f"user_id,item_id\nnewbie,{a}\nnewbie,{b}\nnewbie,no-such-item\n")
    users = tmp_path / "users.csv"
    users.write_text(f"user_id\n{ds.user_ids[0]}\nghost\n")
    out = tmp_path / "recs.parquet"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys_ebm",
            "recommend",
            "--model",
            str(root / "model"),
            "--data",
            str(root / "data"),
            "--users",
            str(users),
            "--history",
            str(hist),
            "--n",
            "3",
            "--out",
            str(out),
            "--no-mlflow",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "1 requested user ids are not in the dataset" in r.stdout
    df = pl.read_parquet(out)
    assert set(df["user_id"]) == {str(ds.user_ids[0]), "newbie"}
    newbie = df.filter(pl.col("user_id") == "newbie")
    assert newbie.height == 3 and not {str(a), str(b)} & set(newbie["item_id"].cast(pl.String))
    assert not df["fallback"].any()


def test_users_without_history_get_the_rankers_flagged_popularity_fallback(setup, tmp_path):
    from recsys_ebm.ranking import Ranker

    ds, model, _ = setup
    ranker = Ranker.from_fitted([model], ds.train, device="cpu")
    ranker.item_ids, ranker.user_ids = ds.item_ids, ds.user_ids
    users = tmp_path / "users.csv"
    users.write_text(f"user_id\n{ds.user_ids[0]}\nghost\nghost\n")
    res = run_batch(ranker, ds, tmp_path / "r.parquet", users=str(users), n=5, progress=False)
    assert res.unknown_users == 0 and res.n_users == 2
    df = pl.read_parquet(tmp_path / "r.parquet")
    ghost = df.filter(pl.col("user_id") == "ghost").sort("rank")
    assert ghost.height == 5 and ghost["fallback"].all()
    assert not df.filter(pl.col("user_id") != "ghost")["fallback"].any()
    # the fallback is popularity over the history the ranker holds (here: train)
    counts = np.asarray(ds.train.getnnz(axis=0))
    got = counts[ds.item_index(ghost["item_id"].to_list())]
    assert list(got) == sorted(counts, reverse=True)[:5]
    # a model without a fallback leaves such users out and counts them
    res = run_batch(model, ds, tmp_path / "m.parquet", users=str(users), n=5, progress=False)
    assert res.unknown_users == 1 and res.n_users == 1
