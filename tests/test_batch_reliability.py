"""Batch job reliability: model/dataset mismatch, one job per output, verified merge, resume
fingerprints, bad history ids, capped n, unwritable outputs, stale temporaries, progress lines."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys_ebm.batch import (
    BatchIntegrityError,
    OutputBusyError,
    _training_rows,
    run_batch,
)
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.models.ease import EASE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Dataset A and an EASE model trained on it; B: A's log with other item ids (same count);
    C: A's log with half the users renamed (same items, other users)."""
    root = tmp_path_factory.mktemp("reliab")
    log = planted_communities(n_users=200, n_items=80, n_interactions=5_000, seed=5)
    log = log.drop("community")
    log.write_parquet(root / "a.parquet")
    log.with_columns(pl.col("item_id") + 1000).write_parquet(root / "b.parquet")
    renamed = pl.when(pl.col("user_id") >= 100).then(pl.col("user_id") + 10_000)
    log.with_columns(renamed.otherwise(pl.col("user_id"))).write_parquet(root / "c.parquet")
    a, b, c = (prepare_dataset(root / f"{k}.parquet", seed=0) for k in "abc")
    model = EASE(l2=20.0, l2_grid=(), device="cpu").fit_dataset(a)
    model.fit_info["dataset_fingerprint"] = a.fingerprint
    return a, b, c, model


class CrashAfter:
    """A model that dies after a number of chunks: a simulated kill of the job."""

    def __init__(self, model, chunks: int, before=None):
        self.model, self.left, self.before = model, chunks, before
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def recommend(self, *args, **kwargs):
        if self.before is not None:
            self.before(self.calls)
        self.calls += 1
        if self.left == 0:
            raise RuntimeError("killed")
        self.left -= 1
        return self.model.recommend(*args, **kwargs)


def _kill_after(model, ds, out, chunks, **kw):
    with pytest.raises(RuntimeError, match="killed"):
        run_batch(CrashAfter(model, chunks), ds, out, progress=False, **kw)


# ------------------------------------------------------------------ 1. model vs dataset
def test_model_refused_on_dataset_with_other_items_allowed_with_other_users(world, tmp_path):
    a, b, c, model = world
    assert b.n_items == a.n_items and b.fingerprint != a.fingerprint
    with pytest.raises(ValueError, match="model: the model's item vocabulary differs"):
        run_batch(model, b, tmp_path / "b.parquet", n=5, progress=False)
    assert not (tmp_path / "b.parquet").exists()
    assert not (tmp_path / "b.parquet.parts").exists()
    # same items, other users: served, and users match the model's by raw id
    res = run_batch(model, c, tmp_path / "c.parquet", n=5, progress=False)
    assert res.n_users == c.n_users and res.n_rows == 5 * c.n_users
    rows = _training_rows(model, c, np.arange(c.n_users))
    for k in range(c.n_users):
        raw = c.user_ids[k]
        expect = int(np.flatnonzero(a.user_ids == raw)[0]) if raw < 100 else -1
        assert rows[k] == expect


# ------------------------------------------------------------------ 2. one job per output
def test_second_job_fails_at_once_while_the_lock_is_held(world, tmp_path):
    a, _, _, model = world
    out = tmp_path / "recs.parquet"
    stale = tmp_path / ".recs.parquet.tmp-other"
    fd = os.open(tmp_path / "recs.parquet.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        stale.write_text("the holder's file")
        with pytest.raises(OutputBusyError, match=r"out: another job holds .*recs\.parquet"):
            run_batch(model, a, out, n=3, progress=False)
        assert stale.read_text() == "the holder's file"  # a holder's temporaries are kept
        assert not out.exists() and not (tmp_path / "recs.parquet.parts").exists()
    finally:
        os.close(fd)
    res = run_batch(model, a, out, n=3, progress=False)  # released: runs, cleans, unlocks
    assert res.n_rows == pl.read_parquet(out).height == 3 * a.n_users
    assert not stale.exists() and not (tmp_path / "recs.parquet.lock").exists()


def test_lock_held_by_another_process(world, tmp_path):
    a, _, _, model = world
    out = tmp_path / "recs.parquet"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from recsys_ebm.batch import output_lock\n"
            f"with output_lock(Path({str(out)!r})):\n"
            "    print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=f"held by process {holder.pid}"):
            run_batch(model, a, out, n=3, progress=False)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert not out.exists()
    run_batch(model, a, out, n=3, progress=False)
    assert pl.read_parquet(out).height == 3 * a.n_users


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_merge_refuses_chunks_that_do_not_add_up(world, tmp_path, damage):
    a, _, _, model = world
    out = tmp_path / "recs.parquet"
    parts = tmp_path / "recs.parquet.parts"

    def vandal(call):  # another process altering the job's chunks behind its back
        if call == 2:
            chunk = parts / "chunk-000000.parquet"
            if damage == "delete":
                chunk.unlink()
            else:
                pl.read_parquet(chunk).head(7).write_parquet(chunk)

    spy = CrashAfter(model, 10**6, before=vandal)
    with pytest.raises(BatchIntegrityError, match="chunk 0"):
        run_batch(spy, a, out, n=4, chunk_size=40, progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".recs.parquet.tmp")]
    res = run_batch(model, a, out, n=4, chunk_size=40, progress=False, resume=True)
    assert res.chunks_done == 1  # only the damaged chunk is scored again
    ref = run_batch(model, a, tmp_path / "ref.parquet", n=4, chunk_size=40, progress=False)
    assert pl.read_parquet(out).equals(pl.read_parquet(ref.out))


# ------------------------------------------------------------------ 3. resume fingerprints
def test_resume_refuses_another_dataset_model_n_or_history(world, tmp_path):
    a, _, c, model = world
    out = tmp_path / "recs.parquet"
    hist = tmp_path / "hist.csv"
    hist.write_text(f"user_id,item_id\nnewbie,{a.item_ids[0]}\n")
    kw = {"n": 4, "chunk_size": 40, "history_file": hist}
    _kill_after(model, a, out, 2, **kw)
    some = tmp_path / "users.csv"
    some.write_text("user_id\n" + "\n".join(str(u) for u in a.user_ids[:50]) + "\n")
    other = EASE(l2=200.0, l2_grid=(), device="cpu").fit_dataset(a)
    other.fit_info["dataset_fingerprint"] = a.fingerprint
    for why, m, ds, extra in [
        ("the .dataset.", model, c, {}),
        ("the model", other, a, {}),
        ("option n changed .4 -> 3.", model, a, {"n": 3}),
        ("option chunk_size", model, a, {"chunk_size": 50}),
        ("the selected users", model, a, {"users": str(some)}),
    ]:
        with pytest.raises(ValueError, match=f"resume: .* holds chunks of another job: .*{why}"):
            run_batch(m, ds, out, resume=True, progress=False, **{**kw, **extra})
    hist.write_text(f"user_id,item_id\nnewbie,{a.item_ids[1]}\n")
    with pytest.raises(ValueError, match="resume: .*the `history_file` content changed"):
        run_batch(model, a, out, resume=True, progress=False, **kw)
    hist.write_text(f"user_id,item_id\nnewbie,{a.item_ids[0]}\n")  # back to the job's input
    res = run_batch(model, a, out, resume=True, progress=False, **kw)
    assert res.chunks_skipped == 2 and res.n_rows == 4 * (a.n_users + 1)


# ------------------------------------------------------------------ 4. history ids
@pytest.mark.parametrize(
    "body, where, col",
    [("u1,{i}\n,{i}\n", "line 3", "user_id"), ("u1,{i}\nu2,  \n", "line 3", "item_id")],
)
def test_history_with_an_empty_id_is_refused(world, tmp_path, body, where, col):
    a, _, _, model = world
    hist = tmp_path / "hist.csv"
    hist.write_text("user_id,item_id\n" + body.format(i=a.item_ids[0]))
    with pytest.raises(ValueError, match=f"history_file: .*hist.csv {where}: empty {col}"):
        run_batch(model, a, tmp_path / "r.parquet", n=3, history_file=hist, progress=False)
    pq_hist = tmp_path / "hist.parquet"
    pl.DataFrame({"user_id": ["u1", None], "item_id": [1, 2]}).write_parquet(pq_hist)
    with pytest.raises(ValueError, match="history_file: .*hist.parquet row 2: empty user_id"):
        run_batch(model, a, tmp_path / "r.parquet", n=3, history_file=pq_hist, progress=False)
    assert not (tmp_path / "r.parquet").exists()


def test_users_file_with_an_empty_id_is_refused(world, tmp_path):
    a, _, _, model = world
    users = tmp_path / "users.csv"
    users.write_text(f"user_id,note\n{a.user_ids[0]},x\n,y\n")
    with pytest.raises(ValueError, match="users: .*users.csv line 3: empty user_id"):
        run_batch(model, a, tmp_path / "r.parquet", users=str(users), n=3, progress=False)


# ------------------------------------------------------------------ 5. n
def test_huge_n_is_capped_at_the_catalogue_and_bad_n_refused(world, tmp_path):
    a, _, _, model = world
    res = run_batch(model, a, tmp_path / "r.parquet", n=10**12, progress=False)
    assert res.n == a.n_items
    seen = a.history("test").getnnz(axis=1)
    assert res.n_rows == int((a.n_items - seen).sum())  # every unseen item, once per user
    for bad in (0, -3):
        with pytest.raises(ValueError, match="n: expected a positive int"):
            run_batch(model, a, tmp_path / "x.parquet", n=bad, progress=False)
    with pytest.raises(TypeError, match="n: expected"):
        run_batch(model, a, tmp_path / "x.parquet", n=2.5, progress=False)


# ------------------------------------------------------------------ 6. unwritable --out
def test_out_that_cannot_be_written_is_refused_up_front(world, tmp_path):
    a, _, _, model = world
    (tmp_path / "adir").mkdir()
    with pytest.raises(ValueError, match="out: .*adir is a directory"):
        run_batch(model, a, tmp_path / "adir", n=3, progress=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="out: .*afile is not a directory"):
        run_batch(model, a, tmp_path / "afile" / "sub" / "r.parquet", n=3, progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only directories")
def test_out_in_a_read_only_directory_is_refused(world, tmp_path):
    a, _, _, model = world
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="out: cannot write in .*ro"):
            run_batch(model, a, ro / "r.parquet", n=3, progress=False)
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------ 7. stale temporaries
def test_next_run_removes_a_killed_jobs_temporaries(world, tmp_path):
    a, _, _, model = world
    out = tmp_path / "recs.parquet"
    _kill_after(model, a, out, 2, n=3, chunk_size=40)
    tmp_file = tmp_path / ".recs.parquet.tmp-x1y2"
    tmp_file.write_bytes(b"PAR1 half a file")
    (tmp_path / "recs.parquet.parts" / ".chunk-000005.parquet.tmp-zz").write_bytes(b"half")
    unrelated = tmp_path / ".other.parquet.tmp-x1y2"
    unrelated.write_bytes(b"another output's")
    res = run_batch(model, a, out, n=3, chunk_size=40, progress=False)  # not --resume
    assert res.chunks_skipped == 0  # a stale OUT.parts is not reused without resume
    assert not tmp_file.exists() and not (tmp_path / "recs.parquet.parts").exists()
    assert unrelated.exists()
    assert pl.read_parquet(out).height == 3 * a.n_users


# ------------------------------------------------------------------ 8. progress
STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ recsys-ebm recommend: "
LINE = re.compile(STAMP + r"chunk (\d+)/(\d+) users (\d+)/(\d+) users/s \d+ eta \S+$")


def test_progress_lines_when_stderr_is_not_a_terminal(world, tmp_path, capsys):
    a, _, _, model = world
    n_chunks = -(-a.n_users // 50)
    run_batch(model, a, tmp_path / "r.parquet", n=3, chunk_size=50, progress_interval=0.0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert re.match(STAMP + f"started \\({n_chunks} chunks\\)$", lines[0]), lines
    assert re.match(STAMP + f"chunk {n_chunks}/{n_chunks} users .* done in", lines[-1]), lines
    got = [LINE.match(x) for x in lines[1:-1]]
    assert all(got), lines
    assert [int(m.group(1)) for m in got] == list(range(1, n_chunks + 1))
    users_done = [min(50 * k, a.n_users) for k in range(1, n_chunks + 1)]
    assert [int(m.group(3)) for m in got] == users_done
    run_batch(model, a, tmp_path / "s.parquet", n=3, chunk_size=50, progress_interval=1e9)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "started" in lines[0] and "done in" in lines[1], lines
    run_batch(model, a, tmp_path / "t.parquet", n=3, chunk_size=50, progress=False)
    assert capsys.readouterr().err == ""
