"""Atomic outputs: the umask's mode, and temporaries of killed writers cleaned by the next run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from recsys_ebm.io import atomic_dir, atomic_file, clean_stale_temporaries


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_outputs_follow_the_umask(tmp_path, umask_022):
    with atomic_file(tmp_path / "out.parquet") as tmp:
        tmp.write_text("x")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "w").write_text("x")
    assert stat.S_IMODE((tmp_path / "out.parquet").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_temporaries_of_a_killed_writer_are_removed_and_a_live_ones_kept(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".out.parquet.tmp-{dead}-x1").write_text("partial")
    (tmp_path / f".model.tmp-{dead}-x2").mkdir()
    (tmp_path / f".model.old-{dead}").mkdir()
    live = tmp_path / f".out.parquet.tmp-{os.getppid()}-x3"  # our parent is alive
    live.write_text("another job's")
    other = tmp_path / f".other.parquet.tmp-{dead}-x4"  # another output's: not ours to touch
    other.write_text("x")
    with atomic_file(tmp_path / "out.parquet") as tmp:
        tmp.write_text("ok")
    with atomic_dir(tmp_path / "model") as tmp:
        pass
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["out.parquet", "model", live.name, other.name])
    assert clean_stale_temporaries(tmp_path / "other.parquet") == [other]


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "f.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_outputs_refuse_the_wrong_kind_of_existing_path(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(IsADirectoryError, match="dir"), atomic_file(tmp_path / "dir"):
        pass
    with pytest.raises(FileExistsError, match="file"), atomic_dir(
        tmp_path / "file", overwrite=True
    ):
        pass


def test_a_lock_held_by_another_process_names_it_and_is_free_once_it_exits(tmp_path):
    from recsys_ebm.io import LockHeld, acquire_lock

    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from recsys_ebm.io import acquire_lock\n"
            f"fd = acquire_lock({str(lock)!r}); print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld) as err:
            acquire_lock(lock)
        assert err.value.holder == str(holder.pid)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    fd = acquire_lock(lock)  # released when its holder exited
    try:
        assert lock.read_text().strip() == str(os.getpid())
    finally:
        os.close(fd)
