"""Readers on small fixture files of every format (MovieLens 100K itself is never committed)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys_ebm.data.readers import (
    ColumnMap,
    DataError,
    detect_format,
    read_interactions,
    read_item_metadata,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def ml100k(tmp_path):
    d = tmp_path / "ml-100k"
    write(d / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n")
    flags = "|".join(["0"] * 19)
    action = "|".join(["0", "1"] + ["0"] * 17)
    write(
        d / "u.item",
        f"242|Kolya (1996)|24-Jan-1997||http://x|{flags}\n"
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{action}\n",
    )
    return d


def test_ml100k(ml100k):
    df, fmt = read_interactions(ml100k)
    assert fmt == "ml-100k"
    assert df.columns == ["user_id", "item_id", "rating", "timestamp", "_line"]
    assert df["user_id"].dtype == pl.Int64 and df["user_id"].to_list() == [196, 186, 22]
    assert df["rating"].to_list() == [3.0, 3.0, 1.0]
    assert df["timestamp"][0] == 881250949
    meta = read_item_metadata(ml100k / "u.data", fmt)
    assert meta["title"].to_list() == ["Kolya (1996)", "L.A. Confidential (1997)"]
    assert meta["genres"].to_list() == [[], ["Action"]]


def test_ml1m(tmp_path):
    f = write(tmp_path / "ml-1m" / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(tmp_path / "ml-1m" / "users.dat", "1::F::1::10::48067\n")
    write(
        tmp_path / "ml-1m" / "movies.dat",
        "1193::One Flew (1975)::Drama\n661::James (1996)::Animation|Children's\n",
    )
    df, fmt = read_interactions(f)
    assert fmt == "ml-1m"
    assert df["item_id"].to_list() == [1193, 661] and df["rating"].to_list() == [5.0, 3.0]
    meta = read_item_metadata(f, fmt)
    assert meta.filter(pl.col("item_id") == "661")["genres"].to_list() == [
        ["Animation", "Children's"]
    ]


def test_movietweetings_keeps_zero_padded_ids(tmp_path):
    d = tmp_path / "mt"
    write(d / "ratings.dat", "1::0114508::8::1381006850\n2::0499549::9::1376753198\n")
    write(d / "users.dat", "1::139564917\n2::522540374\n")
    write(d / "movies.dat", "0114508::Species (1995)::Action|Horror|Sci-Fi\n")
    df, fmt = read_interactions(d)
    assert fmt == "movietweetings"
    assert df["item_id"].dtype == pl.String
    assert df["item_id"].to_list() == ["0114508", "0499549"]
    assert df["user_id"].dtype == pl.Int64
    meta = read_item_metadata(d, fmt)
    assert meta["item_id"].to_list() == ["0114508"]


def test_bundled_movietweetings_ids_are_strings():
    root = Path(__file__).resolve().parents[1] / "data" / "movietweetings-100k"
    df, fmt = read_interactions(root)
    assert fmt == "movietweetings" and df.height == 100_000
    assert df["item_id"].dtype == pl.String and df["item_id"].str.len_chars().min() == 7


def test_ml_latest(tmp_path):
    d = tmp_path / "mls"
    write(
        d / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n",
    )
    write(
        d / "movies.csv",
        'movieId,title,genres\n31,"Dangerous Minds (1995)",Drama\n'
        '1029,"Dumbo, the (1941)",(no genres listed)\n',
    )
    df, fmt = read_interactions(d / "ratings.csv")
    assert fmt == "ml-latest"
    assert df["rating"].to_list() == [2.5, 3.0]
    assert df["_line"].to_list() == [2, 3]
    meta = read_item_metadata(d / "ratings.csv", fmt)
    assert meta["title"].to_list()[1] == "Dumbo, the (1941)"
    assert meta["genres"].to_list()[1] == []


def test_generic_csv_with_mapping_and_iso_dates(tmp_path):
    f = write(
        tmp_path / "log.csv",
        "uid,sku,stars,when\nu1,A-1,4,2024-01-02\nu2,B-2,5,2024-01-03T10:00:00\n",
    )
    df, fmt = read_interactions(f, "csv", ColumnMap("uid", "sku", "stars", "when"))
    assert fmt == "csv"
    assert df["user_id"].to_list() == ["u1", "u2"] and df["item_id"].dtype == pl.String
    assert df["timestamp"][0] == 1704153600


def test_tsv_and_parquet(tmp_path):
    f = write(tmp_path / "log.tsv", "user_id\titem_id\n7\t8\n7\t9\n")
    df, fmt = read_interactions(f)
    assert fmt == "tsv" and df["rating"].null_count() == 2 and df["item_id"].to_list() == [8, 9]
    p = tmp_path / "log.parquet"
    pl.DataFrame({"user": [1, 2], "item": ["x", "y"], "rating": [1.0, 2.0]}).write_parquet(p)
    df, fmt = read_interactions(p, columns=ColumnMap("user", "item", "rating", None))
    assert fmt == "parquet" and df["item_id"].to_list() == ["x", "y"]
    assert df["timestamp"].null_count() == 2


def test_adjacency(tmp_path):
    f = write(tmp_path / "train.txt", "0 10 11 12\n1 11\n2 \n3 12 13\n")
    assert detect_format(f)[0] == "adjacency"
    df, fmt = read_interactions(f)
    assert fmt == "adjacency"
    assert list(zip(df["user_id"], df["item_id"], strict=True)) == [
        (0, 10),
        (0, 11),
        (0, 12),
        (1, 11),
        (3, 12),
        (3, 13),
    ]
    assert df["_line"].to_list() == [1, 1, 1, 2, 4, 4]


# ----------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_interactions(tmp_path / "nope.csv")


def test_unknown_format(tmp_path):
    f = write(tmp_path / "weird.bin", "hello world\n")
    with pytest.raises(DataError, match="cannot detect the format of .*weird.bin"):
        read_interactions(f)
    with pytest.raises(DataError, match="fmt: expected one of"):
        read_interactions(f, "excel")


def test_missing_column_is_named(tmp_path):
    f = write(tmp_path / "log.csv", "user,item\n1,2\n")
    with pytest.raises(
        DataError, match=r"column 'user_id' .*`user_col`.* columns are \['user', 'item'\]"
    ):
        read_interactions(f)


def test_non_numeric_rating_names_line(tmp_path):
    f = write(
        tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4.0,100\n1,3,five,101\n"
    )
    with pytest.raises(
        DataError, match=r"ratings.csv, line 3, column 'rating': expected a number, got 'five'"
    ):
        read_interactions(f)


def test_non_numeric_timestamp_names_line(tmp_path):
    f = write(tmp_path / "u.data", "1\t2\t3\t100\n1\t3\t4\tyesterday\n")
    with pytest.raises(DataError, match=r"line 2, column 'timestamp'"):
        read_interactions(f)


def test_empty_input(tmp_path):
    f = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match="empty input"):
        read_interactions(f)


def test_malformed_double_colon_line(tmp_path):
    f = write(tmp_path / "ratings.dat", "1::2::3::4\n1::2::3\n")
    with pytest.raises(DataError, match="line 2"):
        read_interactions(f)
