"""Batch scoring on Apache Spark: a Spark DataFrame of users in, ``recommend``'s rows out.

The same rows as ``recsys-ebm recommend`` (:mod:`recsys_ebm.batch`): ``user_id`` (raw), ``rank``
(int32, 1-based), ``item_id`` (raw), ``energy`` (float32, lower = better), ``model_version``,
``fallback`` (True when the user had no history). Spark does the data movement; each Python
worker scores its partitions with the project's own scorer (``model.recommend`` on CSR history
rows, ``chunk_size`` users at a time, rows built by the batch job's ``_frame``), through
``mapInArrow`` (``mapInPandas`` without the pandas round trip). ``mlflow.pyfunc.spark_udf`` was
not used: it calls the pyfunc once per row batch with a pandas frame of user ids and cannot be
handed the histories Spark has already joined, so it would load the dataset in every worker.

How the dataset directory (:mod:`recsys_ebm.data.dataset`) is read:

* ``users.parquet`` (``index``, ``user_id``) maps raw user ids to row indices. Ids are matched
  on their decimal text, which is :class:`~recsys_ebm.data.vocab.Vocabulary`'s id rule: ``42``
  and ``"42"`` are one id, ``"042"`` is another, an integral float counts as the int.
* ``interactions/{train,valid,fold_in}.parquet`` (``user_idx``, ``item_idx``, ``rating``) are
  read by Spark, semi-joined to the selected users and grouped per user into the history the
  batch job serves (``dataset.history("test")``: everything known about the user). The
  ``matrices/*.npz`` files are not read: they are the same data, for one process.
* ``items.parquet`` (``index``, ``item_id``) and ``manifest.json`` (``fingerprint``) are read on
  the driver: the model must index the same items (as in the batch job), and the item
  vocabulary (one id per item) is broadcast to turn item indices back into raw ids.

The model directory is read on the driver; with a local master the workers load it from the
same path, on a cluster its files are broadcast and written once per worker. A user absent
from ``users.parquet`` is served from an empty history, flagged ``fallback``, when the model has
a fallback (the ranker's popularity list), and otherwise left out and counted
(:attr:`SparkScores.unknown_users`), as in the batch job.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = [
    "OUTPUT_COLUMNS",
    "SparkScores",
    "check_output",
    "read_user_ids",
    "score_users",
    "select_users",
    "write_scores",
]

OUTPUT_COLUMNS = ("user_id", "rank", "item_id", "energy", "model_version", "fallback")
#: the splits that make up a served history (``Dataset.history("test")``)
HISTORY_SPLITS = ("train", "valid", "fold_in")


@dataclass(frozen=True)
class SparkScores:
    """A lazy Spark DataFrame of recommendations and what was counted to build it."""

    frame: Any  # pyspark.sql.DataFrame with OUTPUT_COLUMNS
    n_users: int  # users that will be served (each gets min(n, catalogue) rows)
    unknown_users: int  # requested ids absent from the dataset, left out (no model fallback)
    n: int  # the list length served (``n`` capped at the catalogue)
    model_version: str


def _spark_types() -> Any:
    from pyspark.sql import types as T  # noqa: N812 - Spark's own spelling

    return T


def _read_catalogue(data: str | Path) -> SimpleNamespace:
    """Items, fingerprint and user id type of a dataset directory (no interactions loaded)."""
    import polars as pl
    import pyarrow.parquet as pq

    from recsys_ebm.data.vocab import Vocabulary

    path = Path(data)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"data: {path} is not a prepared dataset (no manifest.json); "
            "run `recsys-ebm prepare --out DIR` first"
        )
    manifest = json.loads(manifest_path.read_text())
    items = pl.read_parquet(path / "items.parquet")
    vocab = Vocabulary(items["item_id"], name="item")
    user_type = pq.read_schema(path / "users.parquet").field("user_id").type
    return SimpleNamespace(
        path=path.resolve(),
        items=items,
        n_items=items.height,
        item_vocab=vocab,
        item_ids=vocab.ids,
        fingerprint=str(manifest.get("fingerprint", "")),
        users_are_strings=str(user_type) in ("string", "large_string"),
        items_are_strings=items["item_id"].dtype == pl.String,
        splits=[s for s in HISTORY_SPLITS if (path / "interactions" / f"{s}.parquet").is_file()],
    )


def read_user_ids(spark: Any, path: str | Path) -> Any:
    """A file of raw user ids as a DataFrame(user_id), read as ``recommend --users FILE`` reads it.

    Parquet keeps its types; any other file is CSV with a header row, read as strings. A file
    with one column may name it anything; otherwise it needs a ``user_id`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"users: expected 'all', 'test' or a file, got {str(path)!r}")
    if path.suffix == ".parquet":
        df = spark.read.parquet(str(path.resolve()))
    else:
        df = spark.read.csv(str(path.resolve()), header=True, inferSchema=False)
    if "user_id" not in df.columns:
        if len(df.columns) != 1:
            raise ValueError(f"users: {path} has no user_id column (columns: {df.columns})")
        df = df.withColumnRenamed(df.columns[0], "user_id")
    return df.select("user_id")


def select_users(spark: Any, data: str | Path, users: str) -> Any:
    """``all`` / ``test`` / a file of raw ids -> DataFrame(user_id), as the batch job selects."""
    from pyspark.sql import functions as F  # noqa: N812

    root = Path(data).resolve()
    if users == "all":
        return spark.read.parquet(str(root / "users.parquet")).select("user_id")
    if users == "test":  # users with at least one test interaction
        test = spark.read.parquet(str(root / "interactions" / "test.parquet"))
        idx = test.select(F.col("user_idx").alias("index")).distinct()
        return spark.read.parquet(str(root / "users.parquet")).join(idx, "index").select("user_id")
    return read_user_ids(spark, users)


def _id_key(col: Any, dtype: Any) -> Any:
    """The decimal text of a raw id (the Vocabulary id rule), null for an id that matches none."""
    from pyspark.sql import functions as F  # noqa: N812

    T = _spark_types()  # noqa: N806
    if isinstance(dtype, T.StringType):
        return col
    if isinstance(dtype, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return col.cast("string")
    if isinstance(dtype, T.FloatType | T.DoubleType | T.DecimalType):
        return F.when(col == F.floor(col), col.cast("long").cast("string"))
    raise TypeError(f"users: expected a user_id column of integers or strings, got {dtype}")


def score_users(
    spark: Any,
    users: Any,
    model_dir: str | Path,
    data: str | Path,
    *,
    n: int = 100,
    version: str = "",
    chunk_size: int = 2048,
    ship_model: bool | None = None,
) -> SparkScores:
    """Recommendations for a DataFrame of users (column ``user_id``), lazily (module docstring).

    Runs one small Spark action now (the id checks and counts); the scoring itself runs when
    the returned frame is written or collected.

    Args:
        spark: the SparkSession.
        users: DataFrame with a ``user_id`` column of raw ids (ints or strings); duplicates are
            served once.
        model_dir: a saved model directory (resolve ``models:/`` URIs first with
            :func:`recsys_ebm.registry.resolve_model_uri`); it must exist until the frame is used.
        data: the prepared dataset directory the batch job would read (``--data``).
        n: list length per user (> 0), capped at the catalogue size.
        version: written to the ``model_version`` column.
        chunk_size: users per model call in a worker.
        ship_model: broadcast the model's files to the workers (True) or let them read
            ``model_dir`` (False: a local master, or a directory every node mounts); default:
            read it with a local master, broadcast it otherwise.

    Raises:
        ValueError: a model of another item vocabulary, an empty user id, bad ``n``/``chunk_size``.
        TypeError: ``users.user_id`` is neither integers nor strings.
        FileNotFoundError: ``data`` or ``model_dir`` is not what it should be.
    """
    from pyspark.sql import functions as F  # noqa: N812

    from recsys_ebm.batch import check_n
    from recsys_ebm.compat import check_model_matches_dataset
    from recsys_ebm.models import load_model

    T = _spark_types()  # noqa: N806
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    if "user_id" not in users.columns:
        raise ValueError(f"users: expected a DataFrame with a user_id column, got {users.columns}")
    cat = _read_catalogue(data)
    n = check_n(n, cat.n_items)
    model_dir = Path(model_dir).resolve()
    model = load_model(model_dir, device="cpu")  # the driver only checks it
    check_model_matches_dataset(model, cat, argument="model_dir")
    values = model.history_values  # "rating" for rating models (the softmax RBM)

    in_type = users.schema["user_id"].dataType
    req = users.select(F.col("user_id").alias("raw"))
    blank = F.col("raw").isNull()
    if isinstance(in_type, T.StringType):
        blank = blank | (F.trim(F.col("raw")) == "")
    key = F.coalesce(_id_key(F.col("raw"), in_type), F.col("raw").cast("string"))
    req = req.withColumn("key", key).withColumn("blank", blank).dropDuplicates(["key"])
    known = spark.read.parquet(str(cat.path / "users.parquet")).select(
        F.col("index").alias("user_idx"), F.col("user_id").cast("string").alias("key"),
        F.col("user_id").alias("dataset_id"),
    )  # fmt: skip
    req = req.join(known, "key", "left")
    counts = req.agg(  # one Spark action: every check and count at once
        F.count(F.lit(1)).alias("all"),
        F.count("user_idx").alias("known"),
        F.count_if(F.col("blank")).alias("blank"),
    ).first()
    if counts["blank"]:
        raise ValueError(
            f"users: {counts['blank']} distinct empty user_id value(s) (null or blank); "
            "expected a user_id on every row"
        )
    n_unknown = int(counts["all"] - counts["known"])
    serve_unknown = bool(model.has_fallback) and n_unknown > 0
    # the batch job writes user ids as strings as soon as one served id is a string
    strings = cat.users_are_strings or (
        serve_unknown
        and not isinstance(in_type, T.ByteType | T.ShortType | T.IntegerType | T.LongType)
    )
    out_user = T.StringType() if strings else T.LongType()
    if not serve_unknown:
        req = req.filter(F.col("user_idx").isNotNull())
    req = req.select(
        F.coalesce(F.col("dataset_id").cast(out_user), F.col("key").cast(out_user)).alias(
            "user_id"
        ),
        F.coalesce(F.col("user_idx"), F.lit(-1).cast("long")).alias("user_idx"),
    )
    served = int(counts["known"]) + (n_unknown if serve_unknown else 0)

    inter = spark.read.parquet(
        *[str(cat.path / "interactions" / f"{s}.parquet") for s in cat.splits]
    ).select(
        "user_idx",
        F.col("item_idx").cast("int").alias("item_idx"),
        F.coalesce(F.col("rating").cast("float"), F.lit(0.0).cast("float")).alias("rating"),
    )
    hist = (
        inter.join(req.select("user_idx"), "user_idx", "left_semi")
        .groupBy("user_idx")
        .agg(F.collect_list("item_idx").alias("items"), F.collect_list("rating").alias("ratings"))
    )
    rows = req.join(hist, "user_idx", "left").select(
        "user_id",
        "user_idx",
        F.coalesce("items", F.array().cast("array<int>")).alias("items"),
        F.coalesce("ratings", F.array().cast("array<float>")).alias("ratings"),
    )
    schema = T.StructType(
        [
            T.StructField("user_id", out_user),
            T.StructField("rank", T.IntegerType()),
            T.StructField("item_id", T.StringType() if cat.items_are_strings else T.LongType()),
            T.StructField("energy", T.FloatType()),
            T.StructField("model_version", T.StringType()),
            T.StructField("fallback", T.BooleanType()),
        ]
    )
    if ship_model is None:
        ship_model = not spark.sparkContext.master.startswith("local")
    source = (
        ("files", spark.sparkContext.broadcast(_read_dir(model_dir)))
        if ship_model
        else ("path", str(model_dir))
    )
    fn = partial(
        _score_partition,
        source=source,
        key=f"{model_dir}:{version}:{os.stat(model_dir / 'model.json').st_mtime_ns}",
        items=spark.sparkContext.broadcast(cat.items),
        fingerprint=cat.fingerprint,
        n=n,
        version=version,
        values=values,
        chunk_size=chunk_size,
        strings=strings,
    )
    frame = rows.mapInArrow(fn, schema)
    return SparkScores(frame, served, 0 if serve_unknown else n_unknown, n, version)


def write_scores(scores: SparkScores, out: str | Path) -> str:
    """Write the recommendations as a directory of Parquet part files, atomically.

    Spark writes into a temporary sibling of ``out`` that is renamed onto it once every task has
    finished, so a failed job leaves no partial output. A local path goes through
    :func:`recsys_ebm.io.atomic_dir`; a URI with a scheme (``hdfs://``, ``s3a://``...) through
    the Hadoop file system of the session. An existing ``out`` is replaced only when it is an
    earlier Spark output (it holds ``_SUCCESS``).

    Raises:
        FileExistsError: ``out`` exists and is not an earlier Spark output.
    """
    text = str(out)
    if "://" in text and not text.startswith("file:"):
        return _write_hadoop(scores.frame, text)
    from recsys_ebm.io import atomic_dir

    path = check_output(text)
    with atomic_dir(path, overwrite=True) as tmp:
        scores.frame.write.mode("overwrite").parquet(str(tmp))
    return str(path)


def check_output(out: str | Path) -> Path:
    """A local ``out`` that :func:`write_scores` may replace: absent, or an earlier Spark output.

    Raises:
        FileExistsError: ``out`` exists and is not an earlier Spark output (no ``_SUCCESS``).
    """
    path = Path(str(out).removeprefix("file://"))
    if (path.exists() or path.is_symlink()) and not (path / "_SUCCESS").is_file():
        raise FileExistsError(
            f"out: {path} exists and is not an earlier Spark output (no _SUCCESS); "
            "choose another `out`"
        )
    return path


def _write_hadoop(frame: Any, out: str) -> str:
    """:func:`write_scores` on a Hadoop file system: write a temporary sibling, then rename."""
    import uuid

    spark = frame.sparkSession
    jvm = spark._jvm  # the Hadoop FileSystem API has no Python binding
    dst = jvm.org.apache.hadoop.fs.Path(out)
    fs = dst.getFileSystem(spark._jsc.hadoopConfiguration())
    if fs.exists(dst) and not fs.exists(jvm.org.apache.hadoop.fs.Path(dst, "_SUCCESS")):
        raise FileExistsError(
            f"out: {out} exists and is not an earlier Spark output (no _SUCCESS); "
            "choose another `out`"
        )
    tmp = jvm.org.apache.hadoop.fs.Path(dst.getParent(), f".{dst.getName()}.tmp-{uuid.uuid4().hex}")
    try:
        frame.write.parquet(tmp.toString())
        if fs.exists(dst):
            fs.delete(dst, True)
        if not fs.rename(tmp, dst):
            raise OSError(f"out: could not rename {tmp.toString()} to {out}")
    finally:
        if fs.exists(tmp):
            fs.delete(tmp, True)
    return out


def _read_dir(path: Path) -> dict[str, bytes]:
    """Every file of a model directory (relative path -> bytes), to broadcast to the workers."""
    return {
        str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()
    }


#: models loaded in this Python worker, by key (Spark reuses workers across tasks)
_MODELS: dict[str, Any] = {}


def _worker_model(source: tuple[str, Any], key: str) -> Any:
    from recsys_ebm.models import load_model

    if key not in _MODELS:
        _MODELS.clear()  # one model per worker at a time
        kind, ref = source
        if kind == "path":
            _MODELS[key] = load_model(Path(ref), device="auto")
        else:  # broadcast files: written to a temporary directory, loaded, removed
            path = Path(tempfile.mkdtemp(prefix="recsys-ebm-spark-model-"))
            try:
                for rel, blob in ref.value.items():
                    (path / rel).parent.mkdir(parents=True, exist_ok=True)
                    (path / rel).write_bytes(blob)
                _MODELS[key] = load_model(path, device="auto")
            finally:  # what the model holds is in memory (or mapped, which survives unlink)
                shutil.rmtree(path, ignore_errors=True)
    return _MODELS[key]


def _training_rows(model: Any, fingerprint: str, idx: np.ndarray, raw: list[Any]) -> np.ndarray:
    """The model's training row of each user (-1: not one of its users), as the batch job's
    ``_training_rows``: dataset rows on the model's own dataset, else matched by raw id."""
    fp = (getattr(model, "fit_info", None) or {}).get("dataset_fingerprint")
    if fp is not None and fp == fingerprint:
        return idx
    model_users = getattr(model, "user_vocab", None)
    if model_users is None:
        return idx if fp is None else np.full(idx.size, -1, np.int64)
    out = np.full(idx.size, -1, np.int64)
    known = np.flatnonzero(idx >= 0)  # users absent from the dataset are served as new ones
    if known.size:
        out[known] = model_users.index([raw[k] for k in known], unknown="missing")
    return out


def _history(batch: Any, n_items: int, values: str) -> Any:
    """(B, I) float32 CSR of a record batch's ``items`` / ``ratings`` lists."""
    import pyarrow.compute as pc
    import scipy.sparse as sp

    items = batch.column("items")
    lengths = pc.list_value_length(items).to_numpy(zero_copy_only=False).astype(np.int64)
    cols = pc.list_flatten(items).to_numpy(zero_copy_only=False).astype(np.int64)
    if values == "rating":
        data = pc.list_flatten(batch.column("ratings")).to_numpy(zero_copy_only=False)
    else:
        data = np.ones(cols.size, np.float32)
    rows = np.repeat(np.arange(batch.num_rows), lengths)
    m = sp.csr_matrix(
        (data.astype(np.float32), (rows, cols)), shape=(batch.num_rows, n_items), dtype=np.float32
    )  # COO -> CSR sums duplicates and sorts the columns, like Dataset.history
    if values != "rating":
        m.data[:] = 1.0
    return m


def _score_partition(
    batches: Any,
    *,
    source: tuple[str, Any],
    key: str,
    items: Any,
    fingerprint: str,
    n: int,
    version: str,
    values: str,
    chunk_size: int,
    strings: bool,
) -> Any:
    """mapInArrow body: record batches of (user_id, user_idx, items, ratings) -> output rows."""
    import polars as pl
    import pyarrow as pa

    from recsys_ebm.batch import _frame

    model = _worker_model(source, key)
    catalogue = SimpleNamespace(items=items.value)
    n_items = catalogue.items.height
    user_dtype = pl.String if strings else pl.Int64
    schema = None
    for batch in batches:
        for start in range(0, batch.num_rows, chunk_size):
            part = batch.slice(start, chunk_size)
            hist = _history(part, n_items, values)
            raw = part.column("user_id").to_pylist()
            idx = part.column("user_idx").to_numpy(zero_copy_only=False).astype(np.int64)
            rows = _training_rows(model, fingerprint, idx, raw)
            top, energies = model.recommend(hist, n=n, users=rows)
            frame = _frame(
                raw, user_dtype, top, energies, catalogue, version, hist.getnnz(axis=1) == 0
            ).to_arrow()
            if schema is None:  # Spark's Arrow types: string, not polars' large_string
                schema = pa.schema(
                    [
                        pa.field(
                            f.name, pa.string() if pa.types.is_large_string(f.type) else f.type
                        )
                        for f in frame.schema
                    ]
                )
            yield from frame.cast(schema).to_batches()
