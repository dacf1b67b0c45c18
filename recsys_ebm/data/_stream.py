"""A log split over many files (a directory or a glob of Parquet / CSV / TSV partitions), scanned
lazily for polars' streaming engine.

``prepare`` takes this path when ``input`` is a glob (``*``, ``?``, ``[``) or a directory that
holds none of :data:`~recsys_ebm.data.readers.DATASET_FILES`. The files are checked up front
(one format, one schema, none empty) and read with ``scan_parquet`` / ``scan_csv`` as one lazy
frame normalised with the same rules as the single-file reader
(:func:`~recsys_ebm.data.readers.normalise`), written as expressions so that nothing but the
aggregated result is ever held in memory. A first streaming pass only checks the rows (and
decides whether string ids are all canonical integers); where a check fails, the offending file
is read again by the single-file reader, so its error names the file, line (or row) and column.

Row order: the files are read in sorted path order and ``_line`` counts rows across them, so the
tie-breaks that use it (a pair's most recent rating) treat the partitions as one concatenated
log - the same result as the in-memory path on that concatenation.
"""

from __future__ import annotations

import glob as _glob
from pathlib import Path

import polars as pl

from recsys_ebm.data.readers import (
    _CANONICAL_INT,
    _MAX_ABS_TIMESTAMP,
    DATASET_FILES,
    MAX_ABS_RATING,
    ColumnMap,
    _check_not_empty,
    map_columns,
    read_interactions,
)
from recsys_ebm.diagnostics import DataError

__all__ = ["StreamInput", "is_partitioned", "list_files", "scan_partitions"]

_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
_GLOB_CHARS = "*?["


def is_partitioned(path: str | Path) -> bool:
    """Whether ``path`` names many files: a glob that is not itself an existing path, or a
    directory without a single-file dataset (u.data, ratings.csv, ...) in it."""
    p = Path(path)
    if any(c in str(path) for c in _GLOB_CHARS) and not p.exists():
        return True
    return p.is_dir() and not any((p / name).is_file() for name in DATASET_FILES)


def _hidden(rel: Path) -> bool:
    """Spark / Hadoop bookkeeping (``_SUCCESS``, ``.part-0.crc``) and hidden folders."""
    return any(part.startswith(("_", ".")) for part in rel.parts)


def list_files(
    path: str | Path, fmt: str = "auto", *, option: str = "input"
) -> tuple[list[Path], str]:
    """The data files of a directory (recursively, skipping ``_``/``.``-prefixed names) or a
    glob (``**`` recurses), sorted by path, and their one format.

    Raises:
        DataError (a ValueError) naming ``option``: a format other than auto/csv/tsv/parquet, a
            glob that matches no file, a directory without data files, a file that is not
            ``.parquet`` / ``.csv`` / ``.tsv``, files of two formats, a ``format`` that the files
            do not have, or an empty (0-byte) file.
    """
    if fmt not in ("auto", "csv", "tsv", "parquet"):
        raise DataError(
            f"format: a directory or glob `{option}` is read as generic partitions, so expected "
            f"format auto, csv, tsv or parquet, got {fmt!r}"
        )
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not _hidden(f.relative_to(p)))
        if not files:
            raise DataError(
                f"{option}: directory {p} is empty; expected .parquet, .csv or .tsv files "
                "(names starting with '_' or '.' are skipped)"
            )
    else:
        files = sorted(Path(f) for f in _glob.glob(str(path), recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(f"{option}: the glob {str(path)!r} matches no file")
    other = [f for f in files if f.suffix.lower() not in _SUFFIXES]
    if other:
        raise DataError(
            f"{option}: {other[0]} is not a .parquet, .csv or .tsv file ({len(other)} such of "
            f"{len(files)} files); expected partitions of one log in one format"
        )
    kinds: dict[str, list[Path]] = {}
    for f in files:
        kinds.setdefault(_SUFFIXES[f.suffix.lower()], []).append(f)
    if len(kinds) > 1:
        seen = ", ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in sorted(kinds.items()))
        raise DataError(f"{option}: the files mix formats: {seen}; expected one format")
    kind = next(iter(kinds))
    if fmt == "auto":
        fmt = kind
    elif (fmt == "parquet") != (kind == "parquet"):
        raise DataError(
            f"format: expected {fmt} files in `{option}`, got {kind} files ({files[0]})"
        )
    for f in files:
        _check_not_empty(f, fmt, option)
    return files, fmt


class StreamInput:
    """The lazy, normalised scan of many files (columns of
    :func:`~recsys_ebm.data.readers.read_interactions`), after a streaming check pass.

    Attributes:
        frame: LazyFrame with user_id, item_id, rating (Float64), timestamp (Int64), _line.
        fmt: the files' format; ``files``: the files in reading order.
        n_rows: the number of events; ``has_ratings``: whether any event has a rating.
    """

    def __init__(
        self, frame: pl.LazyFrame, fmt: str, files: list[Path], n_rows: int, has_ratings: bool
    ) -> None:
        self.frame, self.fmt, self.files = frame, fmt, files
        self.n_rows, self.has_ratings = n_rows, has_ratings


def _raw_scan(files: list[Path], fmt: str, columns: ColumnMap) -> tuple[pl.LazyFrame, int]:
    if fmt == "parquet":
        return pl.scan_parquet(files, glob=False), 0
    sep = columns.separator or ("\t" if fmt == "tsv" else ",")
    return pl.scan_csv(files, separator=sep, infer_schema=False, glob=False), 1


def _schema_of(f: Path, fmt: str, columns: ColumnMap) -> dict[str, pl.DataType]:
    lf, _ = _raw_scan([f], fmt, columns)
    return dict(lf.collect_schema())


def _check_schemas(files: list[Path], fmt: str, columns: ColumnMap, option: str) -> None:
    """Every file has the first file's columns (and, for Parquet, their types)."""
    first = _schema_of(files[0], fmt, columns)
    for f in files[1:]:
        schema = _schema_of(f, fmt, columns)
        if schema != first:
            show = (lambda s: s) if fmt == "parquet" else list
            raise DataError(
                f"{option}: the files have different schemas: {files[0]} has {show(first)}, "
                f"{f} has {show(schema)}; expected partitions of one log"
            )


def _id(raw: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr, pl.Expr | None]:
    """(normalised id, bad-row flag, all-canonical flag for string ids) - as
    :func:`~recsys_ebm.data.readers._normalise_id`."""
    if dtype.is_integer():
        out = raw.cast(pl.Int64, strict=False)
        return out, out.is_null(), None
    if dtype.is_float():
        bad = raw.is_null() | ~raw.is_finite() | (raw != raw.floor()) | (raw.abs() >= 2**62)
        return raw.cast(pl.Int64, strict=False), bad, None
    if dtype != pl.String:
        out = raw.cast(pl.String)
        return out, out.is_null(), None
    s = raw.str.strip_chars()
    return s, s.is_null() | (s == ""), s.str.contains(_CANONICAL_INT).all()


def _rating(raw: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """As :func:`~recsys_ebm.data.readers._to_float`."""
    if dtype == pl.Null:
        return pl.lit(None, pl.Float64), pl.lit(False)
    out = raw.cast(pl.Float64, strict=dtype.is_numeric())
    bad = out.is_null() & raw.is_not_null()
    bad = bad | (out.is_not_null() & ~(out.is_finite() & (out.abs() <= MAX_ABS_RATING)))
    return out, bad


def _timestamp(raw: pl.Expr, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """As :func:`~recsys_ebm.data.readers._to_epoch` (unix seconds, or ISO dates in text)."""
    if dtype == pl.Null:
        return pl.lit(None, pl.Int64), pl.lit(False)
    if dtype in (pl.Datetime, pl.Date) or isinstance(dtype, pl.Datetime):
        return raw.cast(pl.Datetime("us")).dt.epoch("s"), pl.lit(False)
    if dtype.is_numeric():
        out = raw.cast(pl.Int64, strict=False)
        bad = out.is_null() & raw.is_not_null()
        if dtype.is_float():
            bad = bad | (raw.is_not_null() & ~(raw.is_finite() & (raw.abs() < _MAX_ABS_TIMESTAMP)))
        return out, bad
    text = raw.cast(pl.String)
    parsed = text.str.to_datetime(strict=False, time_unit="us").dt.epoch("s")
    out = pl.coalesce(text.cast(pl.Int64, strict=False), parsed)
    return out, out.is_null() & text.is_not_null()


def _build(
    files: list[Path], fmt: str, columns: ColumnMap
) -> tuple[pl.LazyFrame, pl.LazyFrame, dict[str, pl.Expr], tuple[bool, bool]]:
    """(mapped raw scan, normalised scan, the check pass's aggregates over the raw scan, whether
    user / item ids are strings)."""
    raw, header = _raw_scan(files, fmt, columns)
    lf, _ = map_columns(raw, files[0], columns)
    schema = lf.collect_schema()
    uid, bad_u, canon_u = _id(pl.col("user_id"), schema["user_id"])
    iid, bad_i, canon_i = _id(pl.col("item_id"), schema["item_id"])
    rating, bad_r = _rating(pl.col("rating"), schema["rating"])
    ts, bad_t = _timestamp(pl.col("timestamp"), schema["timestamp"])
    checks = {
        "n": pl.len(),
        "bad": (bad_u | bad_i | bad_r | bad_t).any(),
        "rated": rating.is_not_null().any(),
        "canon_u": canon_u if canon_u is not None else pl.lit(False),
        "canon_i": canon_i if canon_i is not None else pl.lit(False),
    }
    out = lf.with_row_index("_row").select(
        uid.alias("user_id"),
        iid.alias("item_id"),
        rating.alias("rating"),
        ts.alias("timestamp"),
        (pl.col("_row").cast(pl.Int64) + 1 + header).alias("_line"),
    )
    return lf, out, checks, (canon_u is not None, canon_i is not None)


def _check(files: list[Path], fmt: str, columns: ColumnMap) -> dict[str, object]:
    """The check pass (streaming): row count, any bad row, any rating, canonical string ids."""
    lf, _, checks, _ = _build(files, fmt, columns)
    return lf.select(**checks).collect(engine="streaming").row(0, named=True)


def scan_partitions(
    path: str | Path, fmt: str = "auto", columns: ColumnMap | None = None, *, option: str = "input"
) -> StreamInput:
    """Check the files of ``path`` and return their normalised lazy scan.

    Raises:
        DataError (a ValueError): see :func:`list_files`; files with different schemas; a
            missing mapped column; no rows at all; a bad id, rating or timestamp (the single-file
            reader's message, naming the file, line or row, and column).
    """
    columns = columns or ColumnMap()
    files, fmt = list_files(path, fmt, option=option)
    _check_schemas(files, fmt, columns, option)
    try:
        stats = _check(files, fmt, columns)
    except pl.exceptions.PolarsError as exc:
        _raise_from_file(files, fmt, columns, option)
        raise DataError(f"{option}: {path} could not be parsed as {fmt}: {exc}") from exc
    if stats["bad"]:
        _raise_from_file(files, fmt, columns, option)
    if stats["n"] == 0:
        raise DataError(f"{option}: {path}: empty input (no interactions in {len(files)} files)")
    _, frame, _, strings = _build(files, fmt, columns)
    # string ids that are all canonical integers become Int64, as in the single-file reader
    casts = [
        pl.col(col).cast(pl.Int64)
        for col, is_str, flag in zip(
            ("user_id", "item_id"), strings, ("canon_u", "canon_i"), strict=True
        )
        if is_str and stats[flag]
    ]
    if casts:
        frame = frame.with_columns(casts)
    return StreamInput(frame, fmt, files, int(stats["n"]), bool(stats["rated"]))  # type: ignore[call-overload]


def _raise_from_file(files: list[Path], fmt: str, columns: ColumnMap, option: str) -> None:
    """Find the first file whose rows fail a check and read it with the single-file reader,
    whose error names the file, line (or row) and column."""
    for f in files:
        try:
            bad = _check([f], fmt, columns)["bad"]
        except pl.exceptions.PolarsError:
            bad = True
        if bad:
            try:
                read_interactions(f, fmt, columns, option=option)
            except DataError as exc:
                text = str(exc)
                raise DataError(
                    text if text.startswith(f"{option}:") else f"{option}: {text}"
                ) from exc
            raise DataError(f"{option}: {f}: rows that cannot be read as {fmt} interactions")
