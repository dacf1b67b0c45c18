"""Preparation: cleaning rules, k-core, vocabularies, every split's no-leak property, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_ebm.data.dataset import Dataset
from recsys_ebm.data.prepare import kcore_mask, prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.diagnostics import DataError

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    df = planted_communities(n_users=300, n_items=120, n_interactions=12_000, seed=1)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    df.drop("community").write_parquet(p)
    return p


def pairs(ds: Dataset, split: str) -> set[tuple[int, int]]:
    df = ds.interactions[split]
    return set(zip(df["user_idx"].to_list(), df["item_idx"].to_list(), strict=True))


def assert_no_leak(ds: Dataset) -> None:
    parts = {s: pairs(ds, s) for s in ds.splits}
    names = list(parts)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            common = parts[names[a]] & parts[names[b]]
            assert not common, f"{names[a]} and {names[b]} share {len(common)} pairs"
    # and the CSR matrices agree with the Parquet interactions
    for s in ds.splits:
        m = ds.matrix(s).tocoo()
        assert set(zip(m.row.tolist(), m.col.tolist(), strict=True)) == parts[s]


@pytest.mark.parametrize(
    "options",
    [
        {"split": "random", "test_fraction": 0.2, "valid_fraction": 0.1},
        {"split": "temporal", "test_fraction": 0.2, "valid_fraction": 0.1},
        {"split": "leave-last-k", "leave_k": 2, "valid_k": 1},
        {"split": "users", "test_fraction": 0.2, "valid_fraction": 0.1},
    ],
    ids=lambda o: o["split"],
)
def test_every_split_is_leak_free_and_seeded(log_path, options):
    ds = prepare_dataset(log_path, seed=7, **options)
    assert_no_leak(ds)
    assert ds.train.nnz > 0 and ds.test.nnz > 0
    again = prepare_dataset(log_path, seed=7, **options)
    assert again.fingerprint == ds.fingerprint
    if options["split"] in ("random", "users"):  # time-based splits depend on time only
        other = prepare_dataset(log_path, seed=8, **options)
        assert other.fingerprint != ds.fingerprint


def test_random_split_fractions_and_train_kept(log_path):
    ds = prepare_dataset(log_path, split="random", test_fraction=0.2, valid_fraction=0.1)
    total = sum(ds.interactions[s].height for s in ds.splits)
    assert abs(ds.test.nnz / total - 0.2) < 0.03
    assert abs(ds.valid.nnz / total - 0.1) < 0.03
    assert (ds.train.getnnz(axis=1) > 0).all(), "every user keeps a training item"


def test_temporal_split_respects_time(log_path):
    ds = prepare_dataset(log_path, split="temporal", test_fraction=0.2, valid_fraction=0.1)
    t = {s: ds.interactions[s]["timestamp"] for s in ds.splits}
    assert t["train"].max() < t["valid"].min() <= t["valid"].max() < t["test"].min()


def test_leave_last_k_takes_latest(log_path):
    ds = prepare_dataset(log_path, split="leave-last-k", leave_k=1, valid_k=1)
    tr = ds.interactions["train"].group_by("user_idx").agg(pl.col("timestamp").max().alias("tr"))
    te = ds.interactions["test"].group_by("user_idx").agg(pl.col("timestamp").min().alias("te"))
    both = tr.join(te, on="user_idx")
    assert both.height > 0 and (both["tr"] <= both["te"]).all()
    assert ds.interactions["test"].group_by("user_idx").len()["len"].max() == 1


def test_heldout_users_have_no_training_rows(log_path):
    ds = prepare_dataset(log_path, split="users", test_fraction=0.2, valid_fraction=0.1)
    test_users = set(ds.interactions["test"]["user_idx"].to_list())
    train_users = set(ds.interactions["train"]["user_idx"].to_list())
    fold_users = set(ds.interactions["fold_in"]["user_idx"].to_list())
    assert test_users and not test_users & train_users
    assert test_users <= fold_users
    # the evaluation history of held-out users is their fold-in part (~80 %)
    hist = ds.history("test")
    u = sorted(test_users)[0]
    n_f, n_t = hist[u].nnz, ds.test[u].nnz
    assert hist[u].nnz == ds.matrix("fold_in")[u].nnz
    assert 0.6 < n_f / (n_f + n_t) < 0.95


def test_predefined_split_reports_and_drops_unknown(tmp_path):
    train = tmp_path / "train.txt"
    test = tmp_path / "test.txt"
    train.write_text("0 1 2 3\n1 2 3\n2 1 4\n")
    test.write_text("0 4 9\n1 1 2\n7 1\n")  # item 9 and user 7 unknown; (1, 2) also in train
    ds = prepare_dataset(train, split="predefined", test_file=str(test))
    assert_no_leak(ds)
    dropped = ds.manifest["counts"]["dropped_unknown"]["test"]
    assert dropped == {"unknown_user_interactions": 1, "unknown_item_interactions": 1}
    assert ds.manifest["counts"]["overlap_with_train_dropped"] == 1
    raw = {(ds.user_ids[u], ds.item_ids[i]) for u, i in pairs(ds, "test")}
    assert raw == {(0, 4), (1, 1)}


def test_predefined_all_unknown_users(tmp_path):
    train = tmp_path / "train.txt"
    test = tmp_path / "test.txt"
    train.write_text("0 1 2\n")
    test.write_text("5 1\n6 2\n")
    with pytest.raises(DataError, match="test.txt: none of its 2 users appear"):
        prepare_dataset(train, split="predefined", test_file=str(test))


def test_duplicates_and_aggregation_rule(tmp_path):
    f = tmp_path / "u.data"
    # exact duplicate (line 2 = line 1); user 1 re-rates item 10 later: latest rating, first time
    f.write_text(
        "1\t10\t2\t100\n1\t10\t2\t100\n1\t10\t5\t300\n1\t11\t4\t200\n1\t12\t3\t180\n"
        + "".join(f"{u}\t{i}\t3\t{150 + i}\n" for u in (2, 3, 4) for i in (10, 11, 12))
    )
    ds = prepare_dataset(f, split="random", test_fraction=0.3, valid_fraction=0.0)
    c = ds.manifest["counts"]
    assert c["duplicate_events_dropped"] == 1 and c["repeated_events_aggregated"] == 1
    allp = pl.concat([ds.interactions[s] for s in ds.splits])
    u1 = int(ds.user_index([1])[0])
    i10 = int(ds.item_index([10])[0])
    row = allp.filter((pl.col("user_idx") == u1) & (pl.col("item_idx") == i10))
    assert row["rating"].to_list() == [5.0] and row["timestamp"].to_list() == [100]
    assert row["n_events"].to_list() == [2]  # the exact duplicate was dropped first


def test_min_rating_keeps_positives(tmp_path):
    f = tmp_path / "u.data"
    f.write_text("1\t10\t2\t1\n1\t11\t4\t2\n1\t12\t5\t3\n2\t10\t4\t4\n2\t11\t5\t5\n")
    ds = prepare_dataset(f, min_rating=4, test_fraction=0.4, valid_fraction=0.0)
    allp = pl.concat([ds.interactions[s] for s in ds.splits])
    assert ds.manifest["counts"]["below_min_rating_dropped"] == 1
    assert allp["rating"].min() >= 4
    assert ds.manifest["rating_values"] == [4.0, 5.0]  # values kept for the softmax RBM


def test_kcore_is_iterative_and_exact():
    # item 2 has 1 user; removing it leaves user 1 with 1 item, which then must go too
    users = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    items = np.array([0, 1, 3, 0, 2, 0, 1, 3])
    mask, iters = kcore_mask(users, items, 2, 2)
    kept = set(zip(users[mask].tolist(), items[mask].tolist(), strict=True))
    assert kept == {(0, 0), (0, 1), (0, 3), (2, 0), (2, 1), (2, 3)}
    assert iters >= 2
    uc = np.bincount(users[mask])
    ic = np.bincount(items[mask])
    assert (uc[uc > 0] >= 2).all() and (ic[ic > 0] >= 2).all()


def test_kcore_through_prepare(log_path):
    ds = prepare_dataset(log_path, min_user_interactions=10, min_item_interactions=20)
    allp = pl.concat([ds.interactions[s] for s in ds.splits])
    assert allp.group_by("user_idx").len()["len"].min() >= 10
    assert allp.group_by("item_idx").len()["len"].min() >= 20
    assert ds.manifest["counts"]["kcore_removed"] > 0


def test_empty_after_filtering(log_path):
    with pytest.raises(DataError, match="no interactions left after k-core"):
        prepare_dataset(log_path, min_user_interactions=10_000)
    with pytest.raises(DataError, match="no interactions left after `min_rating` 99"):
        prepare_dataset(log_path, min_rating=99)


def test_vocabulary_round_trip(tmp_path):
    ds = prepare_dataset(Path(__file__).resolve().parents[1] / "data" / "movietweetings-100k")
    ds.save(tmp_path / "mt")
    loaded = Dataset.load(tmp_path / "mt")
    assert loaded.items["item_id"].dtype == pl.String
    raw = loaded.item_ids[:5]
    assert (loaded.item_index(raw) == np.arange(5)).all()
    assert loaded.item_index(["no-such-item"])[0] == -1
    assert loaded.user_index([str(loaded.user_ids[3])])[0] == 3  # "42" finds 42
    assert loaded.fingerprint == ds.fingerprint
    assert (loaded.train != ds.train).nnz == 0 and loaded.train.dtype == np.float32
    assert loaded.item_metadata is not None and loaded.item_metadata.height > 0


def test_save_is_atomic_and_refuses_existing(tmp_path, log_path):
    ds = prepare_dataset(log_path)
    out = tmp_path / "ds"
    ds.save(out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(FileExistsError):
        ds.save(out)
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"], "no temporary leftovers"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_prepare_default_dataset(tmp_path):
    out = tmp_path / "data"
    r = run_cli("prepare", "--out", str(out), "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "users:   671" in r.stdout and "train" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["format"] == "ml-latest"
    assert manifest["options"]["seed"] == 3
    for f in (
        "users.parquet",
        "items.parquet",
        "item_metadata.parquet",
        "interactions/train.parquet",
        "matrices/test.npz",
    ):
        assert (out / f).is_file(), f
    assert "[prepare" in r.stderr  # progress on stderr


@pytest.mark.parametrize(
    "content, args, message",
    [
        (None, [], "file not found"),
        ("userId,movieId,rating,timestamp\n", [], "empty input"),
        ("a,b\n1,2\n", ["--format", "csv"], "column 'user_id'"),
        ("userId,movieId,rating,timestamp\n1,2,x,3\n", [], "line 2, column 'rating'"),
    ],
    ids=["missing", "empty", "misnamed-column", "bad-rating"],
)
def test_cli_bad_input_writes_nothing(tmp_path, content, args, message):
    src = tmp_path / "ratings.csv"
    if content is not None:
        src.write_text(content)
    out = tmp_path / "out"
    r = run_cli("prepare", "--input", str(src), "--out", str(out), *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["ratings.csv"] if content else [])


def test_cli_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("prepare", "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert list(out.iterdir()) == []


def test_cli_help_lists_every_subcommand():
    r = run_cli("--help")
    for sub in ("prepare", "train", "evaluate", "recommend", "run"):
        assert sub in r.stdout
    r = run_cli("prepare", "--help")
    for opt in ("--min-rating", "--split", "--test-fraction", "--min-user-interactions"):
        assert opt in r.stdout


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason="MovieLens 100K not present")
def test_movielens_100k_counts():
    ds = prepare_dataset(ML100K, split="random", test_fraction=0.2, valid_fraction=0.0)
    assert ds.manifest["counts"]["raw_events"] == 100_000
    assert ds.n_users == 943
    assert ds.item_metadata is not None and "Toy Story (1995)" in ds.item_metadata["title"]
    assert_no_leak(ds)
