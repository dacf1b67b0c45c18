"""Readers: one per real log format, each a lazy polars scan normalised to one schema.

Every reader returns columns ``user_id``, ``item_id`` (raw ids as they are: Int64 where every id is
a plain canonical integer, else String - so MovieTweetings' zero-padded ids stay strings),
``rating`` (Float64, nullable), ``timestamp`` (Int64 seconds, nullable) and ``_line`` (1-based line
of the source file, for error messages). Files are scanned lazily and collected once.

Formats: ``ml-100k`` (u.data, tab), ``ml-1m`` (ratings.dat, ``::``; also ML-10M),
``ml-latest`` (ratings.csv with header), ``movietweetings`` (ratings.dat, ``::``), ``csv`` /
``tsv`` / ``parquet`` (generic, with column mapping) and ``adjacency`` (``user item item ...``
per line, as in the Gowalla / Yelp2018 / Amazon-Book benchmark splits). A directory or glob of
csv/tsv/parquet partitions is read by :mod:`recsys_ebm.data._stream` with the same rules.

What is refused (:class:`~recsys_ebm.diagnostics.DataError`, naming the file and, where there is
one, the line - the row for Parquet - and the column): an empty file (0 bytes) or one with no
data rows; a MovieLens line without exactly 4 fields on its delimiter (a wrong delimiter shows
the line), or without a rating or timestamp; an ml-latest header without
userId/movieId/rating/timestamp; an adjacency token that is not a non-negative integer (words,
decimals, tabs, signs); a missing or empty id; a rating that is not a finite number with
|rating| <= :data:`MAX_ABS_RATING`; a timestamp that is neither an integer unix time nor an ISO
date/time. Blank lines of the line-based formats are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys_ebm.data._metadata import read_item_metadata
from recsys_ebm.data.prepare_options import FORMATS
from recsys_ebm.diagnostics import DataError

__all__ = [
    "FORMATS",
    "MAX_ABS_RATING",
    "DATASET_FILES",
    "ColumnMap",
    "detect_format",
    "map_columns",
    "read_interactions",
    "read_item_metadata",
]

_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"
#: Largest accepted |rating|. Ratings are scores on a small scale (stars, 1-10, likes); a value
#: beyond this is a unit or parsing error, and the softmax RBM would make it a rating level.
MAX_ABS_RATING = 1e6
#: |timestamp| bound in seconds (anything larger does not fit Int64 nanoseconds-free arithmetic)
_MAX_ABS_TIMESTAMP = 9.2e18
#: formats whose every line carries user, item, rating and timestamp
_MOVIELENS = ("ml-100k", "ml-1m", "ml-latest", "movietweetings")
#: line-delimited formats: separator and how to name it in messages
_DELIMITED = {
    "ml-100k": ("\t", "a tab ('\\t')"),
    "ml-1m": ("::", "'::'"),
    "movietweetings": ("::", "'::'"),
}
_FIELDS = ("user_id", "item_id", "rating", "timestamp")
#: the file names a dataset directory is recognised by (else a directory is a set of partitions)
DATASET_FILES = ("u.data", "ratings.dat", "ratings.csv", "ratings.parquet", "train.txt")
_ML_LATEST = {
    "userId": "user_id",
    "movieId": "item_id",
    "rating": "rating",
    "timestamp": "timestamp",
}


@dataclass(frozen=True)
class ColumnMap:
    """Column names (and separator) of a generic CSV/TSV/Parquet file.

    ``rating`` / ``timestamp`` may be None when the file has no such column.
    """

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"
    separator: str | None = None

    def __post_init__(self) -> None:
        sep = self.separator
        if sep is not None and (len(sep) != 1 or len(sep.encode()) != 1 or sep in '\r\n"'):
            raise DataError(
                f"separator: expected one single-byte character (e.g. ',' or a tab), got {sep!r}"
            )


def detect_format(path: str | Path, *, option: str = "path") -> tuple[str, Path]:
    """Guess the format from the file name and first line; returns ``(format, file)``.

    A directory is searched for ``u.data``, ``ratings.dat``, ``ratings.csv``, ``train.txt``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: the format cannot be recognised, or the file is empty.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{option}: file not found: {path}")
    if path.is_dir():
        for name in DATASET_FILES:
            if (path / name).is_file():
                return detect_format(path / name, option=option)
        raise DataError(
            f"{option}: cannot detect a dataset in directory {path}: expected u.data, "
            "ratings.dat, ratings.csv, ratings.parquet or train.txt; pass a file and `format`"
        )
    _check_not_empty(path, "auto", option)
    name = path.name.lower()
    first = _first_line(path) if not name.endswith(".parquet") else ""
    if name == "u.data" or re.fullmatch(r"u\d?\.(base|test)|u[ab]\.(base|test)", name):
        return "ml-100k", path
    if name.endswith(".parquet"):
        return "parquet", path
    if "::" in first:
        return ("movietweetings" if _is_movietweetings(path, first) else "ml-1m"), path
    if name.endswith(".csv"):
        header = first.strip().lower()
        return ("ml-latest" if header.startswith("userid,movieid") else "csv"), path
    if name.endswith(".tsv"):
        return "tsv", path
    fields = first.split()
    if fields and all(f.isdigit() for f in fields) and name.endswith(".txt"):
        return "adjacency", path
    raise DataError(
        f"{option}: cannot detect the format of {path} (first line {first[:60]!r}); "
        f"pass `format`, one of {list(FORMATS[1:])}"
    )


def _check_not_empty(path: Path, fmt: str, option: str) -> None:
    if path.is_file() and path.stat().st_size == 0:
        what = "interactions" if fmt == "auto" else f"{fmt} interactions"
        raise DataError(f"{option}: {path} is an empty file (0 bytes); expected {what}")


def _first_line(path: Path) -> str:
    with open(path, "rb") as fh:
        first = fh.readline(4096).decode("utf-8", errors="replace").rstrip("\r\n")
    return first.removeprefix("\ufeff")  # a byte-order mark (polars skips it too)


def _line_text(path: Path, line: int) -> str:
    """Text of 1-based ``line`` of ``path`` (for error messages only), cut to 120 characters."""
    with open(path, "rb") as fh:
        for k, raw in enumerate(fh, start=1):
            if k == line:
                return raw.decode("utf-8", errors="replace").rstrip("\r\n")[:120]
    return ""


def _is_movietweetings(path: Path, first: str) -> bool:
    users = path.with_name("users.dat")
    if users.is_file():
        return len(_first_line(users).split("::")) == 2
    parts = first.split("::")
    return len(parts) >= 2 and parts[1].startswith("0") and len(parts[1]) == 7


def _scan_lines(path: Path) -> pl.LazyFrame:
    """One String column ``line`` per physical line (blank lines are null), with ``_row``."""
    return pl.scan_csv(
        path, separator="\x1f", has_header=False, schema={"line": pl.String}, quote_char=None
    ).with_row_index("_row")


def _scan(path: Path, fmt: str, columns: ColumnMap) -> tuple[pl.LazyFrame, int, dict[str, str]]:
    """Lazy frame with string/typed columns user_id, item_id, rating, timestamp, _row (and a
    format's check columns); the number of header lines before the first data row; and the
    source's name of each column (for messages)."""
    s = pl.String
    if fmt in _DELIMITED:
        # split each line ourselves: a wrong delimiter or a ragged line is then named by its
        # line, instead of surfacing as a CSV parser error
        sep = _DELIMITED[fmt][0]
        parts = pl.col("line").str.split(sep)
        lf = (
            _scan_lines(path)
            .filter(pl.col("line").str.strip_chars() != "")  # blank lines (null) are skipped
            .select(
                "_row",
                parts.list.len().alias("_fields"),
                *(parts.list.get(k, null_on_oob=True).alias(c) for k, c in enumerate(_FIELDS)),
            )
        )
        return lf, 0, {}
    if fmt == "ml-latest":
        lf = pl.scan_csv(path, infer_schema=False)
        available = lf.collect_schema().names()
        missing = [c for c in _ML_LATEST if c not in available]
        if missing:
            raise DataError(
                f"{path}: column {missing[0]!r} not found: the ml-latest format needs the header "
                f"userId,movieId,rating,timestamp, got {available}; for another layout pass "
                "`format` csv with `user_col` / `item_col` / `rating_col` / `timestamp_col`"
            )
        lf = lf.select(pl.col(k).alias(v) for k, v in _ML_LATEST.items())
        return lf, 1, {v: k for k, v in _ML_LATEST.items()}
    if fmt == "adjacency":
        # ``user item item ...``: non-negative integers separated by spaces. Every token becomes
        # a row (position 0 is the user), so an invalid line - even a lone token - survives the
        # explode and is reported by its line
        line = pl.col("line").str.strip_chars(" ")
        lf = (
            _scan_lines(path)
            .filter(line != "")
            .with_columns(line.alias("line"))
            .with_columns(
                pl.col("line").str.contains(r"^[0-9]+( +[0-9]+)*$").alias("_valid"),
                pl.col("line").str.split(" ").alias("item_id"),
            )
            .with_columns(
                pl.col("item_id").list.first().alias("user_id"),
                pl.int_ranges(0, pl.col("item_id").list.len()).alias("_pos"),
            )
            .explode("item_id", "_pos")
            .filter(~pl.col("_valid") | ((pl.col("_pos") > 0) & (pl.col("item_id") != "")))
            .select(
                "user_id",
                "item_id",
                pl.lit(None, s).alias("rating"),
                pl.lit(None, s).alias("timestamp"),
                "_row",
                "_valid",
            )
        )
        return lf, 0, {}
    if fmt in ("csv", "tsv", "parquet"):
        if fmt == "parquet":
            lf = pl.scan_parquet(path)
            header = 0
        else:
            sep = columns.separator or ("\t" if fmt == "tsv" else ",")
            lf = pl.scan_csv(path, separator=sep, infer_schema=False)
            header = 1
        lf, mapping = map_columns(lf, path, columns)
        return lf, header, mapping
    raise DataError(f"fmt: expected one of {list(FORMATS)}, got {fmt!r}")


def map_columns(
    lf: pl.LazyFrame, path: str | Path, columns: ColumnMap
) -> tuple[pl.LazyFrame, dict[str, str]]:
    """Select a generic csv/tsv/parquet scan's columns as user_id, item_id, rating, timestamp
    (an absent optional rating / timestamp column becomes nulls); also returns the source's name
    of each column. ``path`` names the file in messages.

    Raises:
        DataError: a mapped column is missing (naming it, its option and the columns found).
    """
    available = lf.collect_schema().names()
    mapping = {"user_id": columns.user, "item_id": columns.item}
    for key, col in (("rating", columns.rating), ("timestamp", columns.timestamp)):
        if col is not None and col in available:
            mapping[key] = col
        elif col is not None and col not in ("rating", "timestamp"):
            raise DataError(
                f"{path}: column {col!r} (`{key}_col`) not found; columns are {available}"
            )
    for key in ("user_id", "item_id"):
        if mapping[key] not in available:
            raise DataError(
                f"{path}: column {mapping[key]!r} (`{key.split('_')[0]}_col`) not found; "
                f"columns are {available}"
            )
    exprs = [pl.col(v).alias(k) for k, v in mapping.items()]
    for key in ("rating", "timestamp"):
        if key not in mapping:
            exprs.append(pl.lit(None, pl.String).alias(key))
    return lf.select(exprs), mapping


def read_interactions(
    path: str | Path,
    fmt: str = "auto",
    columns: ColumnMap | None = None,
    *,
    option: str = "path",
) -> tuple[pl.DataFrame, str]:
    """Read one interaction log (lazily, collected once) and normalise it.

    Args:
        path: the log file, or a directory holding one.
        fmt: one of :data:`FORMATS`.
        columns: column names of generic csv/tsv/parquet input.
        option: the caller's argument that named ``path`` (for messages: ``path``, or
            ``input``, ``test_file``, ``valid_file`` of
            :func:`~recsys_ebm.data.prepare.prepare_dataset`).

    Returns:
        ``(frame, format)``: user_id, item_id, rating (Float64), timestamp (Int64), _line.

    Raises:
        FileNotFoundError: missing file.
        DataError: unknown format, an empty file, missing columns, a line with the wrong number
            of fields or the wrong delimiter, non-numeric, non-finite or out-of-range ratings
            (|rating| <= :data:`MAX_ABS_RATING`), bad timestamps or ids - each naming the file,
            and where there is one the line and column.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"fmt: expected one of {list(FORMATS)}, got {fmt!r}")
    if not path.exists():
        raise FileNotFoundError(f"{option}: file not found: {path}")
    if fmt == "auto":
        fmt, path = detect_format(path, option=option)
    elif path.is_dir():
        _, path = detect_format(path, option=option)
    _check_not_empty(path, fmt, option)
    try:
        lf, header, names = _scan(path, fmt, columns or ColumnMap())
        if "_row" not in lf.collect_schema().names():
            lf = lf.with_row_index("_row")
        df = lf.collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        hint = " (text input must be UTF-8)" if "utf" in str(exc).lower() else ""
        raise DataError(f"{path}: could not be parsed as {fmt}: {exc}{hint}") from exc
    if fmt in _DELIMITED:
        bad = df.filter(pl.col("_fields") != 4)
        if bad.height:
            line = int(bad["_row"][0]) + 1
            sep_name = _DELIMITED[fmt][1]
            text = _line_text(path, line)
            raise DataError(
                f"{path}, line {line}: expected 4 fields (user, item, rating, timestamp) "
                f"separated by {sep_name} ({fmt}), got {int(bad['_fields'][0])} field(s) in "
                f"{text!r}"
            )
        df = df.drop("_fields")
    if fmt == "adjacency":
        bad = df.filter(~pl.col("_valid"))
        if bad.height:
            line = int(bad["_row"][0]) + 1
            text = _line_text(path, line)
            tokens = text.strip(" ").split(" ")
            token = next((t for t in tokens if not re.fullmatch(r"[0-9]+", t)), text)
            raise DataError(
                f"{path}, line {line}: expected non-negative integer ids separated by single "
                f"spaces (user item item ...), got {token!r} in {text!r}"
            )
        df = df.drop("_valid")
    if df.height == 0:
        raise DataError(f"{path}: empty input (no interactions)")
    df = df.with_columns((pl.col("_row").cast(pl.Int64) + 1 + header).alias("_line")).drop("_row")
    out = normalise(df, str(path), names)
    if fmt in _MOVIELENS:
        for col in ("rating", "timestamp"):
            missing = out[col].is_null()
            if missing.any():
                _fail(out, missing, col, str(path), f"a {col} ({fmt} lines all have one)", names)
    return out, fmt


def normalise(df: pl.DataFrame, source: str, names: dict[str, str] | None = None) -> pl.DataFrame:
    """Type the columns: ids canonical-int -> Int64 else String; rating Float64; timestamp Int64.

    ``names`` maps user_id / item_id / rating / timestamp to the source's column names, used in
    messages.
    """
    names = names or {}
    out = {}
    for col in ("user_id", "item_id"):
        out[col] = _normalise_id(df, col, source, names)
    out["rating"] = _to_float(df, "rating", source, names)
    out["timestamp"] = _to_epoch(df, "timestamp", source, names)
    return pl.DataFrame({**out, "_line": df["_line"]})


def _fail(
    df: pl.DataFrame,
    mask: pl.Series,
    col: str,
    source: str,
    expected: str,
    names: dict[str, str] | None = None,
) -> None:
    row = df.filter(mask).row(0, named=True)
    label = (names or {}).get(col, col)
    raise DataError(
        f"{source}, {_unit(source)} {row['_line']}, column {label!r}: expected {expected}, "
        f"got {row[col]!r}"
    )


def _unit(source: str) -> str:
    """Parquet has rows, text files have lines."""
    return "row" if source.lower().endswith(".parquet") else "line"


def _normalise_id(df: pl.DataFrame, col: str, source: str, names: dict[str, str]) -> pl.Series:
    series = df[col]
    if series.null_count():
        _fail(df, series.is_null(), col, source, "a non-empty id", names)
    if series.dtype.is_integer():
        return _int_ids(df, series, col, source, names)
    if series.dtype != pl.String:
        if series.dtype.is_float():
            frac = ~series.is_finite() | (series != series.floor()) | (series.abs() >= 2**62)
            if frac.any():
                _fail(df, frac, col, source, "an integer or string id", names)
            return series.cast(pl.Int64)
        try:
            return series.cast(pl.String)
        except pl.exceptions.PolarsError as exc:
            label = names.get(col, col)
            raise DataError(
                f"{source}, column {label!r}: expected integer or string ids, got {series.dtype}"
            ) from exc
    series = series.str.strip_chars()
    if (series == "").any():
        _fail(df, series == "", col, source, "a non-empty id", names)
    if series.str.contains(_CANONICAL_INT).all():
        return series.cast(pl.Int64)
    return series


def _int_ids(
    df: pl.DataFrame, series: pl.Series, col: str, source: str, names: dict[str, str]
) -> pl.Series:
    """Integer ids as Int64 (a UInt64 id beyond Int64 is refused, not wrapped)."""
    cast = series.cast(pl.Int64, strict=False)
    bad = cast.is_null() & series.is_not_null()
    if bad.any():
        _fail(df, bad, col, source, "an integer id below 2**63", names)
    return cast


def _to_float(df: pl.DataFrame, col: str, source: str, names: dict[str, str]) -> pl.Series:
    series = df[col]
    if series.dtype == pl.Null:
        return series.cast(pl.Float64)
    if series.dtype.is_numeric():
        cast = series.cast(pl.Float64)
    else:
        cast = series.cast(pl.Float64, strict=False)
        bad = cast.is_null() & series.is_not_null()
        if bad.any():
            _fail(df, bad, col, source, "a number", names)
    bad = cast.is_not_null() & ~(cast.is_finite() & (cast.abs() <= MAX_ABS_RATING))
    if bad.any():
        _fail(df, bad, col, source, f"a finite number with |{col}| <= {MAX_ABS_RATING:,.0f}", names)
    return cast


def _to_epoch(df: pl.DataFrame, col: str, source: str, names: dict[str, str]) -> pl.Series:
    series = df[col]
    expected = "an integer unix time or an ISO date/time"
    if series.dtype == pl.Null:
        return series.cast(pl.Int64)
    if series.dtype in (pl.Datetime, pl.Date):
        return series.cast(pl.Datetime("us")).dt.epoch("s")
    if series.dtype.is_numeric():
        bad = pl.Series([False] * len(series))
        if series.dtype.is_float():
            bad = series.is_not_null() & ~(series.is_finite() & (series.abs() < _MAX_ABS_TIMESTAMP))
        as_int = series.cast(pl.Int64, strict=False)
        bad = bad | (as_int.is_null() & series.is_not_null())
        if bad.any():
            _fail(df, bad, col, source, expected, names)
        return as_int
    if series.dtype != pl.String:
        try:
            series = series.cast(pl.String)
        except pl.exceptions.PolarsError as exc:
            label = names.get(col, col)
            raise DataError(
                f"{source}, column {label!r}: expected {expected}, got {series.dtype}"
            ) from exc
    as_int = series.cast(pl.Int64, strict=False)
    bad = as_int.is_null() & series.is_not_null()
    if bad.any():
        # ISO dates / datetimes are accepted too
        try:
            parsed = series.str.to_datetime(strict=False, time_unit="us").dt.epoch("s")
        except pl.exceptions.PolarsError:
            parsed = pl.Series(col, [None] * len(series), dtype=pl.Int64)
        as_int = pl.select(pl.coalesce(as_int, parsed)).to_series()
        bad = as_int.is_null() & series.is_not_null()
        if bad.any():
            _fail(df, bad, col, source, expected, names)
    return as_int
