"""Batch recommendation jobs: top-N lists for many users, chunked, sharded and resumable.

Output: one Parquet row per recommendation, columns ``user_id`` (raw), ``rank`` (1-based),
``item_id`` (raw), ``energy`` (lower = better), ``model_version`` and ``fallback`` (True when
the user had no history at all and was served by the model's popularity fallback). Each chunk
of users is scored and written to ``<out>.parts/`` atomically; the parts are then merged, one
row group per chunk, into a temporary file renamed onto ``out``. A killed job re-run with
``resume=True`` skips the chunks already on disk, so the result has no duplicates and no gaps.

Guarantees (plumbing in :mod:`recsys_ebm._batch_job`):

* the model must index the dataset's item vocabulary (:func:`~recsys_ebm.compat.check_model_\
matches_dataset`); a dataset with other users is fine (they are served from their histories);
* one job per output: ``<out>.lock`` is held (``flock``) for the whole job, a second job fails at
  once with :class:`~recsys_ebm._batch_job.OutputBusyError`;
* ``<out>.parts/job.json`` fingerprints the model, dataset, selected users, history file and
  options; ``resume=True`` refuses a job whose fingerprint differs, and keeps only the chunks the
  manifest records (with their row counts);
* before the rename, every chunk must be present with the row count the manifest recorded, and
  the output must hold their sum, else :class:`~recsys_ebm._batch_job.BatchIntegrityError` and
  no output;
* temporaries a killed job left (``.<out>.tmp-*``, a stale ``<out>.parts`` when not resuming) are
  removed by the next run, under the lock.

Known users are served from ``dataset.history("test")`` (train + valid + fold-in: everything
known about them); users given in a history file are served from that history. Requested users
with no history anywhere are served from an empty history when the model has a fallback for it
(:attr:`~recsys_ebm.models.base.Recommender.has_fallback`: the ranker's popularity list), and
are otherwise left out and counted in ``unknown_users``.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_ebm._batch_job import (
    BatchIntegrityError,
    OutputBusyError,
    Progress,
    chunk_path,
    merge_chunks,
    model_fingerprint,
    open_parts,
    output_lock,
    remove_stale_temporaries,
    write_manifest,
)
from recsys_ebm.compat import check_model_matches_dataset
from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.io import atomic_file, sha256_file, update_hash, write_parquet

__all__ = [
    "BatchIntegrityError",
    "BatchResult",
    "OutputBusyError",
    "check_n",
    "model_version",
    "output_lock",
    "parse_shard",
    "run_batch",
    "select_users",
]


@dataclass
class BatchResult:
    out: Path
    n_users: int
    n_rows: int
    seconds: float
    chunks_done: int
    chunks_skipped: int
    unknown_users: int
    n: int = 0  # the list length served (``n`` capped at the catalogue size)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"shard: expected I/N such as 0/4, got {text!r}") from exc
    if n <= 0 or not 0 <= i < n:
        raise ValueError(f"shard: expected 0 <= I < N, got {text!r}")
    return i, n


def check_n(n: Any, n_items: int | None = None) -> int:
    """The list length: a positive int, capped at ``n_items`` (the catalogue) when given."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"n: expected a positive int (items per user), got {n!r}")
    if n <= 0:
        raise ValueError(f"n: expected a positive int (items per user), got {n}")
    return int(n if n_items is None else min(n, n_items))


def model_version(model_dir: Path) -> str:
    """``<model name>-<12 hex of a sha256 over every file of the directory>``.

    Covers weights, config and, for a ranker, its components: changes whenever any of them does.
    """
    from recsys_ebm.models.base import read_model_json  # corrupt file: error naming it

    meta = read_model_json(Path(model_dir) / "model.json")
    h = hashlib.sha256()
    for f in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(model_dir)).encode() + b"\0")
        update_hash(h, f)  # streamed: the same digest as hashing name + bytes at once
    return f"{meta['model']}-{h.hexdigest()[:12]}"


def _table(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False)


def _check_not_empty(df: pl.DataFrame, columns: list[str], path: Path, argument: str) -> None:
    """Refuse a null or blank id: it would become a user/item called "None" or ""."""
    for col in columns:
        s = df[col].cast(pl.String)
        bad = (s.is_null() | (s.str.strip_chars() == "")).fill_null(True)
        if bad.any():
            k = int(bad.arg_max())
            where = f"row {k + 1}" if path.suffix == ".parquet" else f"line {k + 2}"
            raise ValueError(
                f"{argument}: {path} {where}: empty {col} ({int(bad.sum())} row(s) in all); "
                f"expected a {col} on every row"
            )


def _read_ids(path: Path) -> list[Any]:
    df = _table(path)
    if "user_id" not in df.columns:
        if df.width == 1:
            df = df.rename({df.columns[0]: "user_id"})
        else:
            raise ValueError(f"users: {path} has no user_id column (columns: {df.columns})")
    _check_not_empty(df, ["user_id"], path, "users")
    return df["user_id"].to_list()


def select_users(dataset: Any, users: str) -> tuple[np.ndarray, list[Any]]:
    """Dataset user indices for ``all`` / ``test`` / a file of raw ids, and the unknown raw ids."""
    if users == "all":
        return np.arange(dataset.n_users), []
    if users == "test":
        return np.flatnonzero(dataset.test.getnnz(axis=1) > 0), []
    path = Path(users)
    if not path.is_file():
        raise FileNotFoundError(f"users: expected 'all', 'test' or a file, got {users!r}")
    raw = _read_ids(path)
    idx = dataset.user_index(raw)
    unknown = list(dict.fromkeys(r for r, i in zip(raw, idx, strict=True) if i < 0))
    return np.unique(idx[idx >= 0]), unknown


def read_histories(
    path: Path, dataset: Any, *, values: str = "binary"
) -> tuple[list[Any], sp.csr_matrix, int]:
    """Histories of users absent from the dataset: (raw user ids, CSR, unknown item rows).

    With ``values="rating"`` (rating models) the file needs a numeric ``rating`` column too.
    An empty user or item id is refused (ValueError naming the file and line).
    """
    df = _table(path)
    missing = {"user_id", "item_id"} - set(df.columns)
    if values == "rating" and "rating" not in df.columns:
        missing.add("rating")  # rating models read ratings, not bare interactions
    if missing:
        raise ValueError(
            f"history_file: {path} lacks column(s) {sorted(missing)}; has {df.columns}"
        )
    _check_not_empty(df, ["user_id", "item_id"], path, "history_file")
    if values == "rating":  # a repeated (user, item) keeps its last rating, never a sum
        df = df.unique(subset=["user_id", "item_id"], keep="last", maintain_order=True)
    items = dataset.item_index(df["item_id"].to_list())
    users = df["user_id"].cast(pl.String)
    order = users.unique(maintain_order=True).to_list()
    keep = items >= 0
    rows = Vocabulary(order, name="history user").index(users)[keep]
    data = np.ones(int(keep.sum()), np.float32)
    if values == "rating":
        try:
            data = df["rating"].cast(pl.Float32).to_numpy()[keep]
        except pl.exceptions.InvalidOperationError as exc:
            raise ValueError(f"history_file: {path} column rating: expected numbers") from exc
    m = sp.csr_matrix((data, (rows, items[keep])), shape=(len(order), dataset.n_items))
    m.sum_duplicates()
    if values != "rating":
        m.data[:] = 1.0
    return order, m, int((~keep).sum())


def _training_rows(model: Any, dataset: Any, idx: np.ndarray) -> np.ndarray:
    """The model's training-row index of each dataset user ``idx`` (-1: not one of its users).

    Only on the dataset the model was trained on are dataset rows its training rows; on another
    dataset (same items, other users) users are matched by raw id through the model's saved
    user vocabulary, or served as new users (from their histories) when it saved none.
    """
    idx = np.asarray(idx, dtype=np.int64)
    fp = (getattr(model, "fit_info", None) or {}).get("dataset_fingerprint")
    if fp is not None and fp == dataset.fingerprint:
        return idx
    model_users = getattr(model, "user_vocab", None)
    if model_users is None:
        return idx if fp is None else np.full(idx.size, -1, np.int64)
    return model_users.index(dataset.user_ids[idx], unknown="missing")


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
    progress_interval: float | None = None,
    model_hash: str | None = None,
) -> BatchResult:
    """Write top-``n`` recommendations of the selected users to ``out`` (module docstring).

    Args:
        n: list length per user (> 0); capped at the catalogue size (``dataset.n_items``).
        resume: keep the finished chunks of the same job in ``<out>.parts/``.
        progress: tqdm on a terminal, else a timestamped line at most every
            ``progress_interval`` seconds (default ``$RECSYS_EBM_PROGRESS_INTERVAL`` or 30 s;
            :mod:`recsys_ebm.progress`).
        model_hash: what identifies the model in the job manifest (the CLI passes the hash of
            the model directory); default: a hash of the model's config and state tensors.

    Raises:
        ValueError: bad options, a model of another item vocabulary, a ``resume`` of a job
            with another model/dataset/users/history/options, ``out`` not writable.
        OutputBusyError: another job holds ``out``'s lock.
        BatchIntegrityError: the finished chunks do not add up (nothing is written).
    """
    n = check_n(n, dataset.n_items)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    check_model_matches_dataset(model, dataset, argument="model")
    out = Path(out)
    with output_lock(out):
        t0 = time.perf_counter()
        remove_stale_temporaries(out)  # a killed job's half-written outputs (we hold the lock)
        raw_ids, matrix, known_rows, unknown = _requests(model, dataset, users, history_file)
        return _score(
            model,
            dataset,
            out,
            raw_ids,
            matrix,
            known_rows,
            sel=np.arange(len(raw_ids))[shard[0] :: shard[1]],  # deterministic interleaved
            n=n,
            shard=shard,
            resume=resume,
            history_file=history_file,
            chunk_size=chunk_size,
            version=version,
            progress=Progress(enabled=progress, interval=progress_interval),
            model_hash=model_hash,
            n_unknown=len(unknown),
            t0=t0,
        )


def _requests(
    model: Any, dataset: Any, users: str, history_file: Path | None
) -> tuple[list[Any], sp.csr_matrix, np.ndarray, list[Any]]:
    """The users to serve: (raw ids, history rows, model training rows, unknown raw ids left)."""
    idx, unknown = select_users(dataset, users)
    values = model.history_values  # "rating" for rating models (the softmax RBM)
    hist_all = dataset.history("test", values=values)
    raw_ids = dataset.user_ids[idx].tolist()
    matrix = hist_all[idx]
    known_rows = _training_rows(model, dataset, idx)
    if history_file is not None:
        extra_ids, extra, _ = read_histories(history_file, dataset, values=values)
        matrix = sp.vstack([matrix, extra]).tocsr()
        raw_ids += extra_ids
        known_rows = np.concatenate([known_rows, np.full(len(extra_ids), -1, np.int64)])
        given = Vocabulary(extra_ids, name="history user")
        unknown = [u for u in unknown if u not in given]
    if unknown and model.has_fallback:
        # no history anywhere: an empty row, which the model serves from its fallback
        empty = sp.csr_matrix((len(unknown), dataset.n_items), dtype=np.float32)
        matrix = sp.vstack([matrix, empty]).tocsr()
        raw_ids += unknown
        known_rows = np.concatenate([known_rows, np.full(len(unknown), -1, np.int64)])
        unknown = []
    return raw_ids, matrix, known_rows, unknown


def _score(
    model: Any,
    dataset: Any,
    out: Path,
    raw_ids: list[Any],
    matrix: sp.csr_matrix,
    known_rows: np.ndarray,
    *,
    sel: np.ndarray,
    n: int,
    shard: tuple[int, int],
    resume: bool,
    history_file: Path | None,
    chunk_size: int,
    version: str,
    progress: Progress,
    model_hash: str | None,
    n_unknown: int,
    t0: float,
) -> BatchResult:
    """Score the selected rows ``sel`` chunk by chunk into ``<out>.parts``, then merge."""
    values = model.history_values
    user_dtype = pl.String if any(isinstance(r, str) for r in raw_ids) else pl.Int64
    selected = "\n".join(str(raw_ids[r]) for r in sel)
    job = {
        "model": model_hash or model_fingerprint(model),
        "dataset": dataset.fingerprint or f"unfingerprinted {dataset.n_users}x{dataset.n_items}",
        "users": hashlib.sha256(f"{user_dtype}\n{selected}".encode()).hexdigest()[:16],
        "history": None if history_file is None else sha256_file(history_file)[:16],
        "options": {
            "n": n,
            "shard": f"{shard[0]}/{shard[1]}",
            "chunk_size": chunk_size,
            "version": version,
            "values": values,
        },
    }
    n_chunks = -(-int(sel.size) // chunk_size)
    parts = out.with_name(out.name + ".parts")
    manifest = open_parts(parts, job, resume, n_chunks)
    done = skipped = 0
    progress.start(n_chunks, int(sel.size))
    saved = time.monotonic()
    try:
        for k in range(n_chunks):
            rows = sel[k * chunk_size : (k + 1) * chunk_size]
            if str(k) in manifest["chunks"]:
                skipped += 1
                progress.update(len(rows), scored=False)
                continue
            items, energies = model.recommend(matrix[rows], n=n, users=known_rows[rows])
            frame = _frame(
                [raw_ids[r] for r in rows], user_dtype, items, energies, dataset, version,
                matrix[rows].getnnz(axis=1) == 0,
            )  # fmt: skip
            with atomic_file(chunk_path(parts, k)) as tmp:
                write_parquet(frame, tmp)
            # recorded once the chunk is on disk: a chunk the manifest lists is complete. The
            # manifest is saved every few seconds and when the loop ends or fails; a chunk a
            # hard kill left unrecorded is scored again on resume
            manifest["chunks"][str(k)] = {"users": len(rows), "rows": frame.height}
            if time.monotonic() - saved >= _SAVE_EVERY_S:
                write_manifest(parts, manifest)
                saved = time.monotonic()
            done += 1
            progress.update(len(rows), scored=True)
    finally:
        write_manifest(parts, manifest)
    progress.close()
    n_rows = merge_chunks(parts, manifest, out, int(sel.size), n)
    shutil.rmtree(parts)
    return BatchResult(
        out, int(sel.size), n_rows, time.perf_counter() - t0, done, skipped, n_unknown, n
    )


#: seconds between saves of the job manifest while chunks are scored
_SAVE_EVERY_S = 2.0


def _frame(
    users: list[Any],
    user_dtype: Any,
    items: np.ndarray,
    energies: np.ndarray,
    dataset: Any,
    version: str,
    fallback: np.ndarray,
) -> pl.DataFrame:
    """Output rows of one chunk: (B, n) items/energies (item -1 = padding, dropped)."""
    valid = items >= 0
    counts = valid.sum(axis=1)  # (B,)
    return pl.DataFrame(
        {
            "user_id": pl.Series(
                [str(u) if user_dtype == pl.String else u for u in users], dtype=user_dtype
            ).gather(np.repeat(np.arange(len(users)), counts)),
            "rank": np.concatenate([np.arange(1, c + 1) for c in counts]).astype(np.int32)
            if len(users)
            else np.zeros(0, np.int32),
            "item_id": dataset.items["item_id"].gather(items[valid]),
            "energy": energies[valid].astype(np.float32),
            "model_version": pl.Series([version] * int(valid.sum()), dtype=pl.String),
            "fallback": np.repeat(fallback, counts),
        }
    )
