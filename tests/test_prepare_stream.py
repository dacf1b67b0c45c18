"""``prepare`` on a directory or glob of partitions (polars' streaming engine): the dataset
directory equals the in-memory path's on the concatenated log, and bad partition sets are
refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys_ebm.data._stream import is_partitioned
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.jobs.prepare import PrepareJob, prepare


def _log() -> pl.DataFrame:
    """A log with exact duplicates, re-rated pairs and same-time re-ratings across partitions."""
    df = planted_communities(n_users=200, n_items=90, n_interactions=6_000, seed=3)
    df = df.drop("community")
    # exact duplicates, and the same (user, item, time) with another rating later in the log:
    # the later line is the pair's latest rating (a tie-break by line across partitions)
    head = df.head(300)
    rerated = head.with_columns((pl.col("rating") % 5 + 1).alias("rating"))
    return pl.concat([df, head, rerated])


def _write_parts(df: pl.DataFrame, folder: Path, n: int, suffix: str) -> Path:
    folder.mkdir(parents=True)
    bounds = np.linspace(0, df.height, n + 1).astype(int)
    for k in range(n):
        part = df.slice(bounds[k], bounds[k + 1] - bounds[k])
        f = folder / f"part-{k:03d}{suffix}"
        part.write_parquet(f) if suffix == ".parquet" else part.write_csv(f)
    (folder / "_SUCCESS").write_text("")  # Spark's marker is skipped
    return folder


def _dataset_contents(path: Path) -> dict[str, object]:
    """Everything a dataset directory holds, but the manifest's where/when/which-version."""
    out: dict[str, object] = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.suffix == ".parquet":
            out[rel] = pl.read_parquet(f)
        elif f.suffix == ".npz":
            m = sp.load_npz(f).tocsr()
            out[rel] = (m.shape, m.indptr.tolist(), m.indices.tolist(), m.data.tolist())
        elif f.name == "manifest.json":
            m = json.loads(f.read_text())
            for key in ("source", "created", "package_version"):
                m.pop(key)
            out[rel] = m
    return out


def _assert_same(a: Path, b: Path) -> None:
    ca, cb = _dataset_contents(a), _dataset_contents(b)
    assert ca.keys() == cb.keys()
    for key, va in ca.items():
        if isinstance(va, pl.DataFrame):
            assert va.equals(cb[key]), key
            assert va.schema == cb[key].schema, key
        else:
            assert va == cb[key], key


@pytest.mark.parametrize(
    "options",
    [
        {"split": "random", "min_rating": 3.0, "min_user_interactions": 3},
        {"split": "temporal", "min_item_interactions": 5},
        {"split": "leave-last-k", "leave_k": 2},
        {"split": "users"},
    ],
    ids=lambda o: o["split"],
)
def test_partitioned_parquet_equals_in_memory(tmp_path, options):
    df = _log()
    single = tmp_path / "log.parquet"
    df.write_parquet(single)
    parts = _write_parts(df, tmp_path / "parts", 3, ".parquet")
    assert is_partitioned(parts) and not is_partitioned(single)
    a = prepare_dataset(single, seed=5, **options)
    b = prepare_dataset(parts, seed=5, **options)
    assert b.manifest["counts"] == a.manifest["counts"]
    assert a.manifest["counts"]["duplicate_events_dropped"] == df.height - df.unique().height
    assert b.manifest["source"]["format"] == "parquet"
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    _assert_same(tmp_path / "a", tmp_path / "b")
    if "min_rating" in options:
        return
    # a pair re-rated at the same time keeps the later line's rating (the last partition's)
    once = df.group_by("user_id", "item_id").agg(pl.col("timestamp").n_unique().alias("k"))
    rerated = df.slice(df.height - 300, 300).join(
        once.filter(pl.col("k") == 1), on=["user_id", "item_id"]
    )
    kept = pl.concat([b.interactions[s] for s in b.splits])
    kept = kept.join(b.users, left_on="user_idx", right_on="index")
    kept = kept.join(b.items, left_on="item_idx", right_on="index")
    got = rerated.join(kept, on=["user_id", "item_id"], suffix="_kept")
    assert got.height > 50 and (got["rating"] == got["rating_kept"]).all()


def test_csv_glob_with_string_ids_equals_in_memory(tmp_path):
    df = _log().with_columns(
        pl.format("u{}", pl.col("user_id")).alias("user_id"),  # string ids stay strings
        pl.col("item_id").cast(pl.String).str.zfill(1).alias("item_id"),  # canonical -> Int64
    )
    single = tmp_path / "log.csv"
    df.write_csv(single)
    _write_parts(df, tmp_path / "parts", 2, ".csv")
    glob = str(tmp_path / "parts" / "part-*.csv")
    a = prepare_dataset(single, format="csv", seed=1)
    b = prepare_dataset(glob, format="csv", seed=1)
    assert b.users["user_id"].dtype == pl.String and b.items["item_id"].dtype == pl.Int64
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    _assert_same(tmp_path / "a", tmp_path / "b")


def _bad_sets(tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (input, expected message fragment)."""
    df = _log().head(200)
    (tmp / "empty").mkdir()
    mixed = _write_parts(df, tmp / "mixed", 2, ".parquet")
    df.write_csv(mixed / "extra.csv")
    schemas = _write_parts(df, tmp / "schemas", 2, ".parquet")
    df.rename({"rating": "stars"}).write_parquet(schemas / "part-009.parquet")
    types = _write_parts(df, tmp / "types", 2, ".parquet")
    df.with_columns(pl.col("user_id").cast(pl.String)).write_parquet(types / "part-009.parquet")
    bad = _write_parts(df, tmp / "bad", 2, ".parquet")
    df.with_columns(pl.lit(float("inf")).alias("rating")).write_parquet(bad / "part-009.parquet")
    zero = _write_parts(df, tmp / "zero", 2, ".csv")
    (zero / "part-009.csv").write_bytes(b"")
    return {
        "empty directory": (str(tmp / "empty"), "input: directory"),
        "glob matching nothing": (str(tmp / "nothing" / "*.parquet"), "matches no file"),
        "mixed formats": (str(mixed), "mix formats"),
        "different columns": (str(schemas), "different schemas"),
        "different types": (str(types), "different schemas"),
        "bad rating in one part": (str(bad), "part-009.parquet, row 1, column 'rating'"),
        "empty part": (str(zero), "part-009.csv is an empty file"),
    }


def test_bad_partition_sets_are_refused_and_nothing_is_written(tmp_path):
    cases = _bad_sets(tmp_path)
    for name, (source, expected) in cases.items():
        out = tmp_path / "out"
        with pytest.raises(ValueError, match="input") as err:
            prepare(PrepareJob(input=source, out=str(out), quiet=True))
        assert expected in str(err.value), (name, str(err.value))
        assert not out.exists(), name
    with pytest.raises(ValueError, match="format: .*auto, csv, tsv or parquet"):
        prepare_dataset(tmp_path / "bad", format="ml-1m")
