"""Malformed logs are refused with file, line and column; outputs never replace an input or the
working directory; a failed write (file-size limit, full disk) leaves nothing; modes follow the
umask. (The CLI side of each bad input is a case in ``tests/cli_cases/data.py``.)"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys_ebm.cli.prepare import format_summary
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.readers import MAX_ABS_RATING, ColumnMap, read_interactions
from recsys_ebm.data.store import OutputError
from recsys_ebm.diagnostics import DataError, DataWarning

ROOT = Path(__file__).resolve().parents[1]
HEADER = "userId,movieId,rating,timestamp\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def small_log(tmp_path: Path) -> Path:
    pairs = [(u, i) for u in range(6) for i in range(6)]
    rows = "".join(f"{u},{i},{1 + (u + i) % 5},{100 + u * 10 + i}\n" for u, i in pairs)
    return write(tmp_path / "logs" / "ratings.csv", HEADER + rows)


# ------------------------------------------------------------------------- ratings
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308", "1e309", "-2e6", "1000000.5"])
def test_non_finite_or_absurd_ratings_are_refused(tmp_path, value):
    f = write(tmp_path / "ratings.csv", HEADER + "1,2,4,100\n" + f"1,3,{value},101\n")
    with pytest.raises(DataError, match=r"ratings.csv, line 3, column 'rating': expected a finite"):
        read_interactions(f)


def test_rating_bound_is_inclusive_and_signed_ratings_pass(tmp_path):
    f = write(tmp_path / "ratings.csv", HEADER + f"1,2,{MAX_ABS_RATING},100\n1,3,-1,101\n")
    df, _ = read_interactions(f)
    assert df["rating"].to_list() == [MAX_ABS_RATING, -1.0]


def test_parquet_inf_rating_names_the_row_and_source_column(tmp_path):
    p = tmp_path / "log.parquet"
    pl.DataFrame({"u": [1, 2], "i": [1, 2], "stars": [1.0, float("inf")]}).write_parquet(p)
    with pytest.raises(DataError, match=r"log.parquet, row 2, column 'stars': expected a finite"):
        read_interactions(p, columns=ColumnMap("u", "i", "stars", None))


def test_movielens_line_without_rating_is_refused(tmp_path):
    f = write(tmp_path / "ratings.csv", HEADER + "1,2,4,100\n1,3,,101\n")
    with pytest.raises(DataError, match=r"line 3, column 'rating': expected a rating"):
        read_interactions(f)


# ------------------------------------------------------------------------- adjacency
@pytest.mark.parametrize(
    "line, token",
    [("1 abc 3", "abc"), ("1 1.5", "1.5"), ("1\t3 4", "1\\t3"), ("-1 3", "-1"), ("x", "x")],
    ids=["word", "float", "tab", "negative", "bad-user-alone"],
)
def test_adjacency_refuses_bad_tokens_with_line(tmp_path, line, token):
    f = write(tmp_path / "train.txt", f"0 1 2\n\n{line}\n")
    with pytest.raises(DataError, match=r"train.txt, line 3: expected non-negative integer") as e:
        read_interactions(f, "adjacency")
    assert repr(token.replace("\\t", "\t")) in str(e.value)


def test_adjacency_blank_lines_and_spaces_keep_line_numbers(tmp_path):
    f = write(tmp_path / "train.txt", "0 10  11 \n\n   \n1 12\r\n2\n")
    df, _ = read_interactions(f, "adjacency")
    assert list(zip(df["user_id"], df["item_id"], df["_line"], strict=True)) == [
        (0, 10, 1),
        (0, 11, 1),
        (1, 12, 4),
    ]


# ------------------------------------------------------------------------- files that crashed
@pytest.mark.parametrize(
    "name, fmt",
    [
        ("u.data", "auto"),
        ("ratings.dat", "ml-1m"),
        ("ratings.csv", "auto"),
        ("log.csv", "csv"),
        ("log.tsv", "auto"),
        ("train.txt", "adjacency"),
    ],
)
def test_zero_byte_files_are_refused(tmp_path, name, fmt):
    f = write(tmp_path / name, "")
    with pytest.raises(DataError, match=rf"path: .*{name} is an empty file \(0 bytes\)"):
        read_interactions(f, fmt)


@pytest.mark.parametrize("missing", ["rating", "timestamp", "userId"])
def test_ml_latest_missing_column(tmp_path, missing):
    cols = [c for c in ("userId", "movieId", "rating", "timestamp") if c != missing]
    f = write(tmp_path / "ratings.csv", ",".join(cols) + "\n" + ",".join("1" * len(cols)) + "\n")
    with pytest.raises(DataError, match=rf"ratings.csv: column '{missing}' not found"):
        read_interactions(f, "ml-latest")


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("u.data", "1,2,3,4\n", r"u.data, line 1: .* a tab .* got 1 field\(s\) in '1,2,3,4'"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n", r"u.data, line 2: .* got 5 field"),
        ("ratings.dat", "1::2::3::4\n1::2::3\n", r"ratings.dat, line 2: .*'::' .* got 3 field"),
    ],
    ids=["commas", "extra-field", "ml1m-short"],
)
def test_delimited_formats_name_line_and_delimiter(tmp_path, name, text, message):
    f = write(tmp_path / name, text)
    with pytest.raises(DataError, match=message):
        read_interactions(f, "ml-100k" if name == "u.data" else "ml-1m")


def test_byte_order_mark_does_not_hide_the_ml_latest_header(tmp_path):
    f = tmp_path / "ratings.csv"
    f.write_bytes(b"\xef\xbb\xbf" + (HEADER + "1,2,4,100\n").encode())
    df, fmt = read_interactions(f)
    assert fmt == "ml-latest" and df["rating"].to_list() == [4.0]


def test_separator_must_be_one_byte():
    with pytest.raises(DataError, match=r"separator: expected one single-byte character"):
        ColumnMap(separator="::")


def test_broken_movies_csv_is_a_warning_not_a_failure(tmp_path):
    log = small_log(tmp_path)
    write(log.parent / "movies.csv", "id,name\n1,x\n")
    with pytest.warns(DataWarning, match=r"movies.csv: item metadata skipped"):
        ds = prepare_dataset(log)
    assert ds.item_metadata is None


# ------------------------------------------------------------------------- predefined files
def test_predefined_unparseable_id_is_refused_with_line(tmp_path):
    train = write(tmp_path / "train.csv", "user_id,item_id\n1,10\n1,11\n2,10\n")
    test = write(tmp_path / "test.csv", "user_id,item_id\n1,12\n2,1.5\n")
    with pytest.raises(DataError, match=r"test.csv, line 3, column 'item_id'.* got '1.5'"):
        prepare_dataset(train, split="predefined", test_file=str(test))


def test_predefined_missing_file_names_its_option(tmp_path):
    train = write(tmp_path / "train.txt", "0 1 2\n")
    with pytest.raises(FileNotFoundError, match=r"valid_file: file not found: .*nope.txt"):
        prepare_dataset(
            train, split="predefined", test_file=str(train), valid_file=str(tmp_path / "nope.txt")
        )


def test_summary_reports_pairs_already_in_training(tmp_path):
    train = write(tmp_path / "train.txt", "0 1 2 3\n1 2 3\n")
    test = write(tmp_path / "test.txt", "0 4\n1 2 1\n")
    ds = prepare_dataset(train, split="predefined", test_file=str(test))
    assert ds.manifest["counts"]["overlap_with_train_dropped"] == 1
    assert "dropped 1 held-out pairs already in training" in format_summary(ds)


def test_options_reject_negative_seed_and_nan_min_rating(tmp_path):
    log = small_log(tmp_path)
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\), got -1"):
        prepare_dataset(log, seed=-1)
    with pytest.raises(ValueError, match=r"min_rating: expected a finite number, got nan"):
        prepare_dataset(log, min_rating=float("nan"))


# ------------------------------------------------------------------------- where --out may be
@pytest.fixture
def small_ds(tmp_path):
    return prepare_dataset(small_log(tmp_path), test_fraction=0.3, valid_fraction=0.0)


def test_save_refuses_to_replace_its_input(tmp_path, small_ds):
    log = tmp_path / "logs" / "ratings.csv"
    before = log.read_text()
    for out in (log.parent, tmp_path):
        with pytest.raises(OutputError, match=r"path: .* contains the `input` path"):
            small_ds.save(out, overwrite=True)
    assert log.read_text() == before


def test_save_refuses_the_working_directory_and_its_parents(tmp_path, small_ds, monkeypatch):
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for out in (".", "..", str(work)):
        with pytest.raises(OutputError, match=r"is the current directory or one of its parents"):
            small_ds.save(out, overwrite=True)
    assert list(work.iterdir()) == []
    small_ds.save("data")  # a new subdirectory is fine
    assert (work / "data" / "manifest.json").is_file()


def test_save_refuses_files_and_foreign_directories(tmp_path, small_ds):
    plain = write(tmp_path / "plain.txt", "x")
    with pytest.raises(OutputError, match=r"plain.txt is an existing file"):
        small_ds.save(plain, overwrite=True)
    with pytest.raises(OutputError, match=r"cannot create .*: .*plain.txt is a file"):
        small_ds.save(plain / "sub" / "ds")
    mine = write(tmp_path / "mine" / "notes.txt", "keep").parent
    with pytest.raises(OutputError, match=r"not a prepared dataset \(no manifest.json\)"):
        small_ds.save(mine, overwrite=True)
    assert plain.read_text() == "x" and (mine / "notes.txt").read_text() == "keep"
    # a dataset (or an empty directory) may be replaced
    (tmp_path / "empty").mkdir()
    small_ds.save(tmp_path / "empty", overwrite=True)
    small_ds.save(tmp_path / "empty", overwrite=True)


def test_dataset_directory_mode_follows_umask(tmp_path, small_ds):
    old = os.umask(0o027)
    try:
        small_ds.save(tmp_path / "ds")
    finally:
        os.umask(old)
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "ds" / "interactions").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "ds" / "manifest.json").stat().st_mode & 0o777 == 0o640


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_failed_write_names_out_and_leaves_nothing(tmp_path):
    """A write that fails half-way (here: the file-size limit, EFBIG, the same path as a full
    disk's ENOSPC; the real full disk is the ``disk-prepare-out-on-full-disk`` CLI case)."""
    rows = "".join(f"{u},{i},4,{u * 100 + i}\n" for u in range(60) for i in range(0, 60, 3))
    log = write(tmp_path / "in" / "ratings.csv", HEADER + rows)
    out = tmp_path / "outs" / "ds"
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_ebm", "prepare", "--input", str(log), "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"--out: could not write the dataset to {out}: File too large" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert list(out.parent.iterdir()) == []  # neither the dataset nor a temporary directory
