"""Readers: one per real log format, each a lazy polars scan normalised to one schema.

Every reader returns columns ``user_id``, ``item_id`` (raw ids as they are: Int64 where every id is
a plain canonical integer, else String - so MovieTweetings' zero-padded ids stay strings),
``rating`` (Float64, nullable), ``timestamp`` (Int64 seconds, nullable) and ``_line`` (1-based line
of the source file, for error messages). Files are scanned lazily and collected once.

Formats: ``ml-100k`` (u.data, tab), ``ml-1m`` (ratings.dat, ``::``; also ML-10M),
``ml-latest`` (ratings.csv with header), ``movietweetings`` (ratings.dat, ``::``), ``csv`` /
``tsv`` / ``parquet`` (generic, with column mapping) and ``adjacency`` (``user item item ...``
per line, as in the Gowalla / Yelp2018 / Amazon-Book benchmark splits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys_ebm.diagnostics import DataError

__all__ = ["FORMATS", "ColumnMap", "detect_format", "read_interactions", "read_item_metadata"]

FORMATS = (
    "auto",
    "ml-100k",
    "ml-1m",
    "ml-latest",
    "movietweetings",
    "csv",
    "tsv",
    "parquet",
    "adjacency",
)
_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"


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


def detect_format(path: str | Path) -> tuple[str, Path]:
    """Guess the format from the file name and first line; returns ``(format, file)``.

    A directory is searched for ``u.data``, ``ratings.dat``, ``ratings.csv``, ``train.txt``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: the format cannot be recognised.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--input: file not found: {path}")
    if path.is_dir():
        for name in ("u.data", "ratings.dat", "ratings.csv", "ratings.parquet", "train.txt"):
            if (path / name).is_file():
                return detect_format(path / name)
        raise DataError(
            f"--input: cannot detect a dataset in directory {path}: expected u.data, ratings.dat, "
            "ratings.csv, ratings.parquet or train.txt; pass a file and --format"
        )
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
        f"--input: cannot detect the format of {path} (first line {first[:60]!r}); "
        f"pass --format, one of {list(FORMATS[1:])}"
    )


def _first_line(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.readline(4096).decode("utf-8", errors="replace").rstrip("\r\n")


def _is_movietweetings(path: Path, first: str) -> bool:
    users = path.with_name("users.dat")
    if users.is_file():
        return len(_first_line(users).split("::")) == 2
    parts = first.split("::")
    return len(parts) >= 2 and parts[1].startswith("0") and len(parts[1]) == 7


def _scan(path: Path, fmt: str, columns: ColumnMap) -> tuple[pl.LazyFrame, int]:
    """Lazy frame with string/typed columns user_id, item_id, rating, timestamp, _row; and the
    number of header lines before the first data row."""
    s = pl.String
    if fmt == "ml-100k":
        schema = {"user_id": s, "item_id": s, "rating": s, "timestamp": s}
        lf = pl.scan_csv(path, separator="\t", has_header=False, schema=schema, quote_char=None)
        return lf, 0
    if fmt in ("ml-1m", "movietweetings"):
        names = ["user_id", "_s1", "item_id", "_s2", "rating", "_s3", "timestamp"]
        lf = pl.scan_csv(
            path, separator=":", has_header=False, schema=dict.fromkeys(names, s), quote_char=None
        )
        return lf, 0
    if fmt == "ml-latest":
        lf = pl.scan_csv(path, infer_schema=False).rename(
            {"userId": "user_id", "movieId": "item_id"}, strict=False
        )
        return lf, 1
    if fmt == "adjacency":
        lf = pl.scan_csv(
            path, separator="\x1f", has_header=False, schema={"line": s}, quote_char=None
        ).with_row_index("_row")
        lf = (
            lf.with_columns(pl.col("line").str.strip_chars().str.split(" "))
            .with_columns(
                pl.col("line").list.first().alias("user_id"),
                pl.col("line").list.slice(1).alias("item_id"),
            )
            .explode("item_id")
            .filter(pl.col("item_id").is_not_null() & (pl.col("item_id") != ""))
            .select(
                "user_id",
                "item_id",
                pl.lit(None, s).alias("rating"),
                pl.lit(None, s).alias("timestamp"),
                "_row",
            )
        )
        return lf, 0
    if fmt in ("csv", "tsv", "parquet"):
        if fmt == "parquet":
            lf = pl.scan_parquet(path)
            header = 0
        else:
            sep = columns.separator or ("\t" if fmt == "tsv" else ",")
            lf = pl.scan_csv(path, separator=sep, infer_schema=False)
            header = 1
        available = lf.collect_schema().names()
        mapping = {"user_id": columns.user, "item_id": columns.item}
        for key, col in (("rating", columns.rating), ("timestamp", columns.timestamp)):
            if col is not None and col in available:
                mapping[key] = col
            elif col is not None and col not in ("rating", "timestamp"):
                raise DataError(
                    f"{path}: column {col!r} (--{key}-col) not found; columns are {available}"
                )
        for key in ("user_id", "item_id"):
            if mapping[key] not in available:
                raise DataError(
                    f"{path}: column {mapping[key]!r} (--{key.split('_')[0]}-col) not found; "
                    f"columns are {available}"
                )
        exprs = [pl.col(v).alias(k) for k, v in mapping.items()]
        for key in ("rating", "timestamp"):
            if key not in mapping:
                exprs.append(pl.lit(None, pl.String).alias(key))
        return lf.select(exprs), header
    raise DataError(f"--format: expected one of {list(FORMATS)}, got {fmt!r}")


def read_interactions(
    path: str | Path, fmt: str = "auto", columns: ColumnMap | None = None
) -> tuple[pl.DataFrame, str]:
    """Read one interaction log (lazily, collected once) and normalise it.

    Returns:
        ``(frame, format)``: user_id, item_id, rating (Float64), timestamp (Int64), _line.

    Raises:
        FileNotFoundError: missing file.
        DataError: unknown format, missing columns, non-numeric ratings/timestamps (naming the
            line), missing ids, or an empty file.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(f"--format: expected one of {list(FORMATS)}, got {fmt!r}")
    if not path.exists():
        raise FileNotFoundError(f"--input: file not found: {path}")
    if fmt == "auto":
        fmt, path = detect_format(path)
    elif path.is_dir():
        _, path = detect_format(path)
    lf, header = _scan(path, fmt, columns or ColumnMap())
    if "_row" not in lf.collect_schema().names():
        lf = lf.with_row_index("_row")
    try:
        df = lf.collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: could not be parsed as {fmt}: {exc}") from exc
    if fmt in ("ml-1m", "movietweetings"):
        bad = df.filter(
            pl.any_horizontal(pl.col(c).is_not_null() for c in ("_s1", "_s2", "_s3"))
            | pl.col("timestamp").is_null()
        )
        if bad.height:
            line = int(bad["_row"][0]) + 1
            raise DataError(f"{path}, line {line}: expected user::item::rating::timestamp")
        df = df.drop("_s1", "_s2", "_s3")
    if df.height == 0:
        raise DataError(f"{path}: empty input (no interactions)")
    df = df.with_columns((pl.col("_row").cast(pl.Int64) + 1 + header).alias("_line")).drop("_row")
    return normalise(df, str(path)), fmt


def normalise(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Type the columns: ids canonical-int -> Int64 else String; rating Float64; timestamp Int64."""
    out = {}
    for col in ("user_id", "item_id"):
        out[col] = _normalise_id(df, col, source)
    out["rating"] = _to_float(df, "rating", source)
    out["timestamp"] = _to_epoch(df, "timestamp", source)
    return pl.DataFrame({**out, "_line": df["_line"]})


def _fail(df: pl.DataFrame, mask: pl.Series, col: str, source: str, expected: str) -> None:
    row = df.filter(mask).row(0, named=True)
    raise DataError(
        f"{source}, line {row['_line']}, column {col!r}: expected {expected}, got {row[col]!r}"
    )


def _normalise_id(df: pl.DataFrame, col: str, source: str) -> pl.Series:
    series = df[col]
    if series.null_count():
        _fail(df, series.is_null(), col, source, "a non-empty id")
    if series.dtype.is_integer():
        return series.cast(pl.Int64)
    if series.dtype != pl.String:
        if series.dtype.is_float():
            frac = series != series.floor()
            if frac.any():
                _fail(df, frac, col, source, "an integer or string id")
            return series.cast(pl.Int64)
        return series.cast(pl.String)
    series = series.str.strip_chars()
    if (series == "").any():
        _fail(df, series == "", col, source, "a non-empty id")
    if series.str.contains(_CANONICAL_INT).all():
        return series.cast(pl.Int64)
    return series


def _to_float(df: pl.DataFrame, col: str, source: str) -> pl.Series:
    series = df[col]
    if series.dtype.is_numeric():
        return series.cast(pl.Float64)
    cast = series.cast(pl.Float64, strict=False)
    bad = cast.is_null() & series.is_not_null()
    if bad.any():
        _fail(df, bad, col, source, "a number")
    if cast.is_nan().any():
        _fail(df, cast.is_nan(), col, source, "a number")
    return cast


def _to_epoch(df: pl.DataFrame, col: str, source: str) -> pl.Series:
    series = df[col]
    if series.dtype.is_integer():
        return series.cast(pl.Int64)
    if series.dtype.is_float():
        return series.cast(pl.Int64)
    if series.dtype in (pl.Datetime, pl.Date):
        return series.cast(pl.Datetime("us")).dt.epoch("s")
    if series.dtype == pl.Null:
        return series.cast(pl.Int64)
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
            _fail(df, bad, col, source, "an integer unix time or an ISO date/time")
    return as_int


# ------------------------------------------------------------------------------ item metadata
_ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def read_item_metadata(path: str | Path, fmt: str) -> pl.DataFrame | None:
    """Titles and genres beside the ratings file, when the source ships them.

    Returns:
        item_id (String, raw), title (String), genres (List[String]); None when absent.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    rows: list[tuple[str, str, list[str]]] = []
    if fmt == "ml-100k" and (folder / "u.item").is_file():
        text = (folder / "u.item").read_bytes().decode("latin-1")
        for line in text.splitlines():
            parts = line.split("|")
            if len(parts) < 5 + len(_ML100K_GENRES):
                continue
            flags = parts[5 : 5 + len(_ML100K_GENRES)]
            rows.append(
                (
                    parts[0],
                    parts[1],
                    [g for g, f in zip(_ML100K_GENRES, flags, strict=True) if f == "1"],
                )
            )
    elif fmt in ("ml-1m", "movietweetings") and (folder / "movies.dat").is_file():
        enc = "utf-8" if fmt == "movietweetings" else "latin-1"
        text = (folder / "movies.dat").read_bytes().decode(enc, errors="replace")
        for line in text.splitlines():
            parts = line.split("::")
            if len(parts) >= 2:
                genres = parts[2].split("|") if len(parts) > 2 and parts[2] else []
                rows.append((parts[0], parts[1], genres))
    elif fmt == "ml-latest" and (folder / "movies.csv").is_file():
        movies = pl.read_csv(folder / "movies.csv", infer_schema=False)
        return movies.select(
            pl.col("movieId").alias("item_id"),
            pl.col("title"),
            pl.col("genres")
            .str.split("|")
            .list.eval(pl.element().filter(pl.element() != "(no genres listed)")),
        )
    if not rows:
        return None
    return pl.DataFrame(
        rows,
        schema={"item_id": pl.String, "title": pl.String, "genres": pl.List(pl.String)},
        orient="row",
    )
