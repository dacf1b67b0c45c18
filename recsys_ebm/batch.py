"""Batch recommendation jobs: top-N lists for many users, chunked, sharded and resumable.

Output: one Parquet row per recommendation, columns ``user_id`` (raw), ``rank`` (1-based),
``item_id`` (raw), ``energy`` (lower = better), ``model_version`` and ``fallback`` (True when
the user had no history at all and was served by the model's popularity fallback). Each chunk
of users is scored and written to ``<out>.parts/`` atomically; the parts are then merged, one
row group per chunk, into a temporary file renamed onto ``out``. A killed job re-run with
``resume=True`` skips the chunks already on disk, so the result has no duplicates and no gaps.

Known users are served from ``dataset.history("test")`` (train + valid + fold-in: everything
known about them); users given in a history file are served from that history. Requested users
with no history anywhere are served from an empty history when the model has a fallback for it
(:attr:`~recsys_ebm.models.base.Recommender.has_fallback`: the ranker's popularity list), and
are otherwise left out and counted in ``unknown_users``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys_ebm.io import atomic_file

__all__ = ["BatchResult", "model_version", "parse_shard", "run_batch", "select_users"]


@dataclass
class BatchResult:
    out: Path
    n_users: int
    n_rows: int
    seconds: float
    chunks_done: int
    chunks_skipped: int
    unknown_users: int


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"--shard: expected I/N such as 0/4, got {text!r}") from exc
    if n <= 0 or not 0 <= i < n:
        raise ValueError(f"--shard: expected 0 <= I < N, got {text!r}")
    return i, n


def model_version(model_dir: Path) -> str:
    """``<model name>-<12 hex of a sha256 over every file of the directory>``.

    Covers weights, config and, for a ranker, its components: changes whenever any of them does.
    """
    meta = json.loads((model_dir / "model.json").read_text())
    h = hashlib.sha256()
    for f in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(model_dir)).encode() + b"\0" + f.read_bytes())
    return f"{meta['model']}-{h.hexdigest()[:12]}"


def _read_ids(path: Path) -> list[Any]:
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
    else:
        df = pl.read_csv(path, infer_schema=False)
    if "user_id" not in df.columns:
        if df.width == 1:
            df = df.rename({df.columns[0]: "user_id"})
        else:
            raise ValueError(f"--users: {path} has no user_id column (columns: {df.columns})")
    return df["user_id"].to_list()


def select_users(dataset: Any, users: str) -> tuple[np.ndarray, list[Any]]:
    """Dataset user indices for ``all`` / ``test`` / a file of raw ids, and the unknown raw ids."""
    if users == "all":
        return np.arange(dataset.n_users), []
    if users == "test":
        return np.flatnonzero(dataset.test.getnnz(axis=1) > 0), []
    path = Path(users)
    if not path.is_file():
        raise FileNotFoundError(f"--users: expected 'all', 'test' or a file, got {users!r}")
    raw = _read_ids(path)
    idx = dataset.user_index(raw)
    unknown = list(dict.fromkeys(r for r, i in zip(raw, idx, strict=True) if i < 0))
    return np.unique(idx[idx >= 0]), unknown


def read_histories(
    path: Path, dataset: Any, *, values: str = "binary"
) -> tuple[list[Any], sp.csr_matrix, int]:
    """Histories of users absent from the dataset: (raw user ids, CSR, unknown item rows).

    With ``values="rating"`` (rating models) the file needs a numeric ``rating`` column too.
    """
    df = (
        pl.read_parquet(path)
        if path.suffix == ".parquet"
        else pl.read_csv(path, infer_schema=False)
    )
    missing = {"user_id", "item_id"} - set(df.columns)
    if values == "rating" and "rating" not in df.columns:
        missing.add("rating")  # rating models read ratings, not bare interactions
    if missing:
        raise ValueError(f"--history: {path} lacks column(s) {sorted(missing)}; has {df.columns}")
    if values == "rating":  # a repeated (user, item) keeps its last rating, never a sum
        df = df.unique(subset=["user_id", "item_id"], keep="last", maintain_order=True)
    items = dataset.item_index(df["item_id"].to_list())
    users = df["user_id"].cast(pl.String).to_list()
    order = list(dict.fromkeys(users))
    pos = {u: k for k, u in enumerate(order)}
    keep = items >= 0
    rows = np.array([pos[u] for u in users], dtype=np.int64)[keep]
    data = np.ones(int(keep.sum()), np.float32)
    if values == "rating":
        try:
            data = df["rating"].cast(pl.Float32).to_numpy()[keep]
        except pl.exceptions.InvalidOperationError as exc:
            raise ValueError(f"--history: {path} column rating: expected numbers") from exc
    m = sp.csr_matrix((data, (rows, items[keep])), shape=(len(order), dataset.n_items))
    m.sum_duplicates()
    if values != "rating":
        m.data[:] = 1.0
    return order, m, int((~keep).sum())


def run_batch(
    model: Any,
    dataset: Any,
    out: Path,
    *,
    users: str = "all",
    n: int = 100,
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    history_file: Path | None = None,
    chunk_size: int = 2048,
    version: str = "",
    progress: bool = True,
) -> BatchResult:
    if n <= 0:
        raise ValueError(f"--n: expected a positive int, got {n}")
    if chunk_size <= 0:
        raise ValueError(f"--chunk-size: expected a positive int, got {chunk_size}")
    t0 = time.perf_counter()
    idx, unknown = select_users(dataset, users)
    values = model.history_values  # "rating" for rating models (the softmax RBM)
    hist_all = dataset.history("test", values=values)
    raw_ids = [dataset.user_ids[i] for i in idx]
    matrix = hist_all[idx]
    known_rows = idx.astype(np.int64)
    if history_file is not None:
        extra_ids, extra, _ = read_histories(history_file, dataset, values=values)
        matrix = sp.vstack([matrix, extra]).tocsr()
        raw_ids += extra_ids
        known_rows = np.concatenate([known_rows, np.full(len(extra_ids), -1, np.int64)])
        given = {str(u) for u in extra_ids}
        unknown = [u for u in unknown if str(u) not in given]
    if unknown and getattr(model, "has_fallback", False):
        # no history anywhere: an empty row, which the model serves from its fallback
        empty = sp.csr_matrix((len(unknown), dataset.n_items), dtype=np.float32)
        matrix = sp.vstack([matrix, empty]).tocsr()
        raw_ids += unknown
        known_rows = np.concatenate([known_rows, np.full(len(unknown), -1, np.int64)])
        unknown = []
    sel = np.arange(len(raw_ids))[shard[0] :: shard[1]]  # deterministic interleaved shard
    parts = out.with_name(out.name + ".parts")
    job = {
        "users": users,
        "n": n,
        "shard": list(shard),
        "chunk_size": chunk_size,
        "version": version,
        "history": str(history_file),
        "n_users": int(sel.size),
    }
    if parts.exists():
        prev = (
            json.loads((parts / "job.json").read_text()) if (parts / "job.json").is_file() else {}
        )
        if not resume or prev != job:
            if resume:
                raise ValueError(
                    f"--resume: {parts} belongs to a job with other options ({prev}); "
                    "rerun without --resume to start afresh"
                )
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    (parts / "job.json").write_text(json.dumps(job))
    starts = list(range(0, sel.size, chunk_size))
    it = starts
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        it = tqdm(starts, desc="recommend", unit="chunk")
    done = skipped = 0
    user_dtype = pl.String if any(isinstance(r, str) for r in raw_ids) else pl.Int64
    item_ids = dataset.items["item_id"]
    for s in it:
        part = parts / f"chunk-{s // chunk_size:06d}.parquet"
        if part.is_file():
            skipped += 1
            continue
        rows = sel[s : s + chunk_size]
        items, energies = model.recommend(matrix[rows], n=n, users=known_rows[rows])
        valid = items >= 0
        counts = valid.sum(axis=1)
        frame = pl.DataFrame(
            {
                "user_id": pl.Series(
                    [str(raw_ids[r]) if user_dtype == pl.String else raw_ids[r] for r in rows],
                    dtype=user_dtype,
                ).gather(np.repeat(np.arange(len(rows)), counts)),
                "rank": np.concatenate([np.arange(1, c + 1) for c in counts]).astype(np.int32)
                if len(rows)
                else np.zeros(0, np.int32),
                "item_id": item_ids.gather(items[valid]),
                "energy": energies[valid].astype(np.float32),
                "model_version": pl.Series([version] * int(valid.sum()), dtype=pl.String),
                "fallback": np.repeat(matrix[rows].getnnz(axis=1) == 0, counts),
            }
        )
        with atomic_file(part) as tmp:
            frame.write_parquet(tmp)
        done += 1
    files = sorted(parts.glob("chunk-*.parquet"))
    n_rows = 0
    with atomic_file(out) as tmp:
        writer = None
        for f in files:
            table = pq.read_table(f)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)  # one row group per chunk
            n_rows += table.num_rows
        if writer is None:
            schema = pa.schema(
                [
                    ("user_id", pa.string()),
                    ("rank", pa.int32()),
                    ("item_id", pa.string()),
                    ("energy", pa.float32()),
                    ("model_version", pa.string()),
                    ("fallback", pa.bool_()),
                ]
            )
            writer = pq.ParquetWriter(tmp, schema)
        writer.close()
    shutil.rmtree(parts)
    return BatchResult(
        out, int(sel.size), n_rows, time.perf_counter() - t0, done, skipped, len(unknown)
    )
