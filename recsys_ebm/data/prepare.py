"""From a raw interaction log to a leak-free :class:`Dataset`.

Steps, in order (each reported in ``manifest["counts"]``):

1. read the log (one lazy scan, collected once) and, for ``predefined``, the test/valid files.
   A directory of partitions or a glob (:mod:`recsys_ebm.data._stream`) is never collected: its
   normalised scan goes straight into steps 2-4, run by polars' streaming engine, so only the
   aggregated pairs, the vocabularies and the matrices are ever in memory - with the same
   result as the in-memory path on the concatenated files (steps 2-7 are one code path);
2. drop exact duplicate events (same user, item, rating and timestamp);
3. ``min_rating``: keep ratings >= X as positives (default: every interaction is positive);
4. aggregate repeated (user, item) pairs. **Rule:** the pair keeps its *most recent* rating (the
   user's latest opinion), its *earliest* timestamp (when the user first met the item, so a
   temporal split never lets a re-rating drag an old pair into the future) and ``n_events``;
5. iterative k-core filtering (users and items until both minimums hold);
6. split (random per-user, global temporal, leave-last-k, held-out users, or predefined);
7. vocabularies from the training part (+ held-out users' fold-in histories); valid/test pairs
   whose user or item is unknown to training are dropped and counted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys_ebm.data import splits as S
from recsys_ebm.data._stream import is_partitioned, scan_partitions
from recsys_ebm.data.dataset import DATASET_FORMAT_VERSION, Dataset
from recsys_ebm.data.prepare_options import DEFAULT_INPUT, PrepareOptions
from recsys_ebm.data.readers import read_interactions, read_item_metadata
from recsys_ebm.diagnostics import DataError

__all__ = ["DEFAULT_INPUT", "PrepareOptions", "kcore_mask", "prepare_dataset"]


def _log(msg: str, t0: float, verbose: bool) -> None:
    if verbose:
        print(f"[prepare {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


#: a missing timestamp sorts after every real one (readers bound |timestamp| below 9.2e18)
_NO_TIME = 2**63 - 1
#: rank of an event in time: timestamp * 2**40 + line (Int128; a log has < 2**40 lines)
_LINE_SPAN = 2**40
_NEVER = -(2**126)


def _clean(
    lf: pl.LazyFrame,
    opts: PrepareOptions,
    counts: dict[str, int],
    tag: str,
    *,
    has_ratings: bool,
    engine: str = "auto",
) -> pl.DataFrame:
    """Steps 2-4 (exact duplicates, min_rating, aggregation of repeated pairs) as one lazy query,
    run by ``engine`` ("streaming" for partitioned input: only the pairs are ever in memory).

    Two group-bys: distinct events (user, item, rating, timestamp) with their first line and
    multiplicity, then pairs over the distinct events, where the min_rating filter is a flag
    (``_pos``) so the counts of each step come out of the same pass. A pair's latest rating is
    the one of its largest (timestamp, line) - one Int128 key, so ``max_by`` has no ties.

    Returns the pairs: user_id, item_id, rating, timestamp, n_events, _line (first line).
    """
    if opts.min_rating is not None and not has_ratings:
        raise DataError(f"min_rating: the {tag or 'input'} log has no rating column")
    events = lf.group_by(["user_id", "item_id", "rating", "timestamp"]).agg(
        pl.col("_line").min(), pl.len().cast(pl.Int64).alias("_raw")
    )
    pos = pl.lit(True)
    if opts.min_rating is not None:
        pos = (pl.col("rating") >= opts.min_rating).fill_null(False)
    order = pl.col("timestamp").fill_null(_NO_TIME).cast(pl.Int128) * _LINE_SPAN + pl.col("_line")
    is_pos = pl.col("_pos")
    events = events.with_columns(pos.alias("_pos")).with_columns(
        pl.when(is_pos).then(order).otherwise(pl.lit(_NEVER, pl.Int128)).alias("_order"),
        pl.when(is_pos).then(pl.col("timestamp")).alias("timestamp"),
        pl.when(is_pos).then(pl.col("_line")).alias("_line"),
    )
    pairs = events.group_by(["user_id", "item_id"]).agg(
        pl.col("rating").max_by("_order"),
        pl.col("timestamp").min(),
        is_pos.sum().cast(pl.Int64).alias("n_events"),
        pl.col("_line").min(),
        pl.col("_raw").sum(),
        pl.len().cast(pl.Int64).alias("_distinct"),
    )
    df = pairs.collect(engine=engine)  # type: ignore[call-overload]
    raw, distinct, kept = df.select(
        pl.col("_raw").sum(), pl.col("_distinct").sum(), pl.col("n_events").sum()
    ).row(0)
    df = df.drop("_raw", "_distinct")
    counts[f"{tag}duplicate_events_dropped"] = int(raw or 0) - int(distinct or 0)
    if opts.min_rating is not None:
        counts[f"{tag}below_min_rating_dropped"] = int(distinct or 0) - int(kept or 0)
        df = df.filter(pl.col("n_events") > 0)
    counts[f"{tag}repeated_events_aggregated"] = int(kept or 0) - df.height
    return df


def kcore_mask(
    users: np.ndarray, items: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Iterative k-core: keep rows until every user has >= min_user and every item >= min_item.

    Returns ``(mask, iterations)``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    mask = np.ones(len(users), dtype=bool)
    it = 0
    while True:
        it += 1
        uc = np.bincount(users[mask], minlength=users.max(initial=-1) + 1)
        ic = np.bincount(items[mask], minlength=items.max(initial=-1) + 1)
        new = mask & (uc[users] >= min_user) & (ic[items] >= min_item)
        if new.sum() == mask.sum():
            return new, it
        mask = new


def _ids_like_training(
    other: pl.DataFrame, train: pl.DataFrame, file: str | Path, train_path: Path
) -> pl.DataFrame:
    """Give a predefined test/valid file's ids the training file's id type.

    Raises:
        DataError: an id that cannot have that type (e.g. ``abc`` where every training id is an
            integer), naming the file, the line and the column.
    """
    for col in ("user_id", "item_id"):
        dtype = train[col].dtype
        if other[col].dtype == dtype:
            continue
        cast = other[col].cast(dtype, strict=False)
        bad = cast.is_null() & other[col].is_not_null()
        if bad.any():
            row = other.filter(bad).sort("_line").row(0, named=True)
            raise DataError(
                f"{file}, line {row['_line']}, column {col!r}: expected an integer id like "
                f"every {col.split('_')[0]} id of the training file {train_path}, "
                f"got {row[col]!r}"
            )
        other = other.with_columns(cast.alias(col))
    return other


def _codes(series: pl.Series) -> np.ndarray:
    return (series.rank("dense").cast(pl.Int64) - 1).to_numpy()


def prepare_dataset(
    input: str | Path | None = None, *, verbose: bool = False, **options: Any
) -> Dataset:
    """Read, clean, filter, split and index an interaction log.

    Args:
        input: log file or directory (default: the bundled ml-latest-small ratings.csv), or a
            directory or glob of Parquet / CSV / TSV partitions (generic columns; streamed).
        verbose: print progress of each step to stderr.
        **options: fields of :class:`PrepareOptions`.

    Raises:
        FileNotFoundError, DataError (a ValueError): see :mod:`recsys_ebm.data.readers` and,
        for partitions, :func:`recsys_ebm.data._stream.scan_partitions`; also an
        empty result after filtering, a predefined test file whose users are all unknown, or a
        predefined test/valid id that cannot have the training ids' type (``abc`` among
        integer ids: refused with file, line and column rather than silently dropped).
        ValueError: an option out of range (fractions, ``seed`` < 0, a non-finite
        ``min_rating``, a separator that is not one byte).
    """
    opts = PrepareOptions(**options)
    opts.check_fractions()
    t0 = time.perf_counter()
    path = Path(input) if input is not None else DEFAULT_INPUT
    if is_partitioned(path):
        src = scan_partitions(path, opts.format, opts.columns, option="input")
        fmt, n_raw, engine = src.fmt, src.n_rows, "streaming"
        lf, has_ratings = src.frame, src.has_ratings
        _log(f"checked {n_raw:,} events ({fmt}) in {len(src.files)} files of {path}", t0, verbose)
    else:
        raw, fmt = read_interactions(path, opts.format, opts.columns, option="input")
        n_raw, engine = raw.height, "auto"
        lf, has_ratings = raw.lazy(), raw["rating"].null_count() < raw.height
        del raw
        _log(f"read {n_raw:,} events ({fmt}) from {path}", t0, verbose)
    counts: dict[str, int] = {"raw_events": n_raw}
    df = _clean(lf, opts, counts, "", has_ratings=has_ratings, engine=engine).drop("_line")
    del lf
    if df.height == 0:
        raise DataError(f"{path}: no interactions left after `min_rating` {opts.min_rating}")

    # 5. k-core on integer codes
    ucodes, icodes = _codes(df["user_id"]), _codes(df["item_id"])
    mask, iters = kcore_mask(ucodes, icodes, opts.min_user_interactions, opts.min_item_interactions)
    counts["kcore_removed"] = int((~mask).sum())
    counts["kcore_iterations"] = iters
    if not mask.all():
        df = df.filter(pl.Series(mask))
    if df.height == 0:
        raise DataError(
            f"{path}: no interactions left after k-core filtering "
            f"(`min_user_interactions` {opts.min_user_interactions}, "
            f"`min_item_interactions` {opts.min_item_interactions})"
        )
    _log(f"cleaned and filtered to {df.height:,} pairs ({iters} k-core iterations)", t0, verbose)

    # 6. split (codes made dense again after filtering so bincount-based splits stay small)
    present = np.bincount(ucodes[mask]) > 0
    users = (np.cumsum(present) - 1)[ucodes[mask]]
    keys = S.pair_keys(users, icodes[mask], opts.seed)
    ts = df["timestamp"]
    if opts.split in ("temporal", "leave-last-k") and ts.null_count():
        raise DataError(f"split: {opts.split!r} needs timestamps, but {path} has none")
    if opts.split == "random":
        part = S.random_split(users, keys, opts.test_fraction, opts.valid_fraction)
    elif opts.split == "temporal":
        part = S.temporal_split(ts.to_numpy(), opts.test_fraction, opts.valid_fraction)
    elif opts.split == "leave-last-k":
        part = S.leave_last_k_split(users, ts.to_numpy(), keys, opts.leave_k, opts.valid_k)
    elif opts.split == "users":
        part = S.heldout_users_split(
            users,
            keys,
            int(users.max()) + 1,
            opts.test_fraction,
            opts.valid_fraction,
            opts.fold_in_fraction,
            opts.seed,
        )
    else:
        part = np.full(df.height, S.TRAIN, dtype=np.int8)
    df = df.with_columns(pl.Series("part", part))
    del ucodes, icodes, mask, present, users, keys, part, ts  # (N,) arrays: free before step 7
    extra = []
    if opts.split == "predefined":
        for code, f, option in (
            (S.TEST, opts.test_file, "test_file"),
            (S.VALID, opts.valid_file, "valid_file"),
        ):
            if f:
                other, _ = read_interactions(f, fmt, opts.columns, option=option)
                rated = other["rating"].null_count() < other.height
                other = _clean(
                    other.lazy(), opts, counts, f"{S.PART_NAMES[code]}_", has_ratings=rated
                )
                other = (
                    _ids_like_training(other, df, f, path)
                    .with_columns(pl.lit(code, pl.Int8).alias("part"))
                    .drop("_line")
                )
                extra.append((f, other))
        df = pl.concat([df] + [o for _, o in extra], how="vertical_relaxed")
    _log(f"split: {opts.split}", t0, verbose)

    # 7. vocabularies from what the model may train on or be given as history
    known = df["part"].is_in([S.TRAIN, S.FOLD_IN])
    user_vocab = df["user_id"].filter(known).unique().sort()
    item_vocab = df["item_id"].filter(known).unique().sort()
    del known
    users_df = pl.DataFrame({"index": np.arange(len(user_vocab)), "user_id": user_vocab})
    items_df = pl.DataFrame({"index": np.arange(len(item_vocab)), "item_id": item_vocab})
    df = df.join(users_df.rename({"index": "user_idx"}), on="user_id", how="left").join(
        items_df.rename({"index": "item_idx"}), on="item_id", how="left"
    )
    # a pair already in training never counts again in a later part (predefined files may repeat)
    dropped: dict[str, dict[str, int]] = {}
    for code in (S.VALID, S.TEST):
        name = S.PART_NAMES[code]
        sub = df.filter(pl.col("part") == code)
        if sub.height == 0:
            continue
        dropped[name] = {
            "unknown_user_interactions": int(sub["user_idx"].null_count()),
            "unknown_item_interactions": int(sub["item_idx"].null_count()),
        }
        if (
            opts.split == "predefined"
            and code == S.TEST
            and sub["user_idx"].null_count() == sub.height
        ):
            raise DataError(
                f"{opts.test_file}: none of its {sub['user_id'].n_unique()} users appear in the "
                f"training file {path}"
            )
    df = df.drop("user_id", "item_id")
    if df["user_idx"].null_count() or df["item_idx"].null_count():
        df = df.drop_nulls(["user_idx", "item_idx"])
    if opts.split == "predefined":
        n_before = df.height
        df = df.sort("part").unique(subset=["user_idx", "item_idx"], keep="first")
        counts["overlap_with_train_dropped"] = n_before - df.height
    # one sort, then every split is a zero-copy slice (pairs are unique: the order is total)
    df = df.sort(["part", "user_idx", "item_idx"])
    part_sorted = df["part"].to_numpy()
    interactions = {}
    for code, name in S.PART_NAMES.items():
        lo, hi = np.searchsorted(part_sorted, [code, code + 1])
        sub = df.slice(int(lo), int(hi - lo))
        if sub.height or code in (S.TRAIN, S.TEST):
            interactions[name] = sub.select(
                pl.col("user_idx").cast(pl.Int64),
                pl.col("item_idx").cast(pl.Int64),
                "rating",
                "timestamp",
                "n_events",
            )
    if interactions["test"].height == 0:
        raise DataError(
            f"{path}: the {opts.split} split left no test interactions; lower the filters or "
            "raise `test_fraction`"
        )

    metadata = read_item_metadata(path, fmt)
    if metadata is not None:
        key = pl.col("item_id").cast(pl.String)
        metadata = (
            items_df.select(key.alias("_k"), "item_id")
            .join(metadata.with_columns(key.alias("_k")).drop("item_id"), on="_k", how="inner")
            .drop("_k")
        )
    ratings = df["rating"].drop_nulls()
    manifest = {
        "format_version": DATASET_FORMAT_VERSION,
        "source": {"path": str(path.resolve()), "format": fmt},
        "options": opts.to_dict(),
        "counts": {**counts, "dropped_unknown": dropped},
        "n_users": users_df.height,
        "n_items": items_df.height,
        "has_ratings": ratings.len() == df.height and df.height > 0,
        "rating_values": sorted(ratings.unique().to_list())[:100] if ratings.len() else [],
        "split": opts.split,
    }
    from recsys_ebm.data.store import fingerprint

    ds = Dataset(users_df, items_df, interactions, manifest, metadata)
    manifest["fingerprint"] = fingerprint(ds)
    manifest["summary"] = ds.summary()
    _log(f"indexed {ds.n_users:,} users x {ds.n_items:,} items", t0, verbose)
    return ds
