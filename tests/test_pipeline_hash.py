"""Stage skipping is decided by content: a touched input is unchanged, edited bytes are not
(whatever its size and mtime say), and unchanged inputs are not re-read on a rerun."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from recsys_ebm import _pipeline_hash
from recsys_ebm._pipeline_hash import CACHE_NAME, HashCache, input_state, sha256_file
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.pipeline import load_pipeline, run_pipeline

PIPE = """
[pipeline]
name = "t"

[prepare]
input = "{input}"
test_fraction = 0.2

[train.pop]
model = "popularity"
"""


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    p = tmp_path / "u.data"
    rows = [
        f"{u}\t{i}\t4\t{u * 100 + i}" for u in range(1, 30) for i in range(1, 25) if (u + i) % 3
    ]
    p.write_text("\n".join(rows) + "\n")
    return p


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the stage hashing reads (cache misses); files count as settled at once."""
    seen: list[Path] = []

    def counting(path: Path) -> str:
        seen.append(Path(path))
        return sha256_file(path)

    monkeypatch.setattr(_pipeline_hash, "sha256_file", counting)
    monkeypatch.setattr(_pipeline_hash, "RACY_NS", 0)
    return seen


def touch(path: Path, delta_ns: int = -5_000_000_000) -> None:
    """A new mtime (in the past, so the new stat is cached at once), the same bytes."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + delta_ns))


def same_size_edit(path: Path) -> None:
    """Change one byte, keeping the size, and set the mtime back as it was."""
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b"\t4\t", b"\t5\t", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert path.read_bytes() != data


# ------------------------------------------------------------------ the hash cache
def test_file_hash_is_sha256_of_content_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(_pipeline_hash, "BLOCK", 7)  # several blocks, and a short last one
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(100))
    assert sha256_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_cache_reuses_the_hash_of_an_unchanged_file_and_rereads_a_changed_one(tmp_path, reads):
    f = tmp_path / "big.tsv"
    f.write_text("1\t2\t4\t9\n" * 1000)
    run = tmp_path / "run"
    cache = HashCache(run / ".stages" / CACHE_NAME)
    first = cache.file_sha256(f)
    assert first == hashlib.sha256(f.read_bytes()).hexdigest() and reads == [f]
    cache.save()
    # a new load reads the saved cache: the unchanged file is not read again
    again = HashCache(run / ".stages" / CACHE_NAME)
    assert again.file_sha256(f) == first and reads == [f]
    # a touched file is read again (its stat changed), and hashes the same
    touch(f)
    assert again.file_sha256(f) == first and reads == [f, f]
    assert again.file_sha256(f) == first and reads == [f, f]  # the new stat is cached
    # same size, mtime set back: the ctime still differs, so it is re-read: new content, new hash
    same_size_edit(f)
    assert again.file_sha256(f) != first and len(reads) == 3


def test_recently_changed_files_are_not_cached(tmp_path, monkeypatch):
    """A file changed within RACY_NS of its hashing may change again unseen: never cached."""
    monkeypatch.setattr(_pipeline_hash, "RACY_NS", 3600 * 10**9)
    f = tmp_path / "f"
    f.write_text("x")
    cache = HashCache(tmp_path / "cache.json")
    cache.file_sha256(f)
    assert cache.entries == {} and not cache.dirty
    cache.save()
    assert not (tmp_path / "cache.json").exists()


@pytest.mark.parametrize("garbage", [b"", b"{trunc", b"\xff\x00", b"[1, 2]", b'{"version": 99}'])
def test_an_unreadable_cache_means_hash_again(tmp_path, reads, garbage):
    f = tmp_path / "f"
    f.write_text("x")
    (tmp_path / "cache.json").write_bytes(garbage)
    cache = HashCache(tmp_path / "cache.json")
    assert cache.file_sha256(f) == hashlib.sha256(b"x").hexdigest() and reads == [f]
    cache.save()
    assert json.loads((tmp_path / "cache.json").read_text())["version"] == 1


def test_save_drops_entries_of_files_that_changed_or_went(tmp_path, reads):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    cache = HashCache(tmp_path / "cache.json")
    cache.file_sha256(a)
    cache.file_sha256(b)
    b.unlink()
    cache.save()
    files = json.loads((tmp_path / "cache.json").read_text())["files"]
    assert list(files) == [str(a.absolute())]


def test_directory_inputs_count_every_file_by_relative_path_and_content(tmp_path, reads):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "model.json").write_text('{"a": 1}')
    (d / "sub" / "w.bin").write_bytes(b"\x00" * 64)
    run = tmp_path / "run"

    def state() -> list:
        return input_state([d], run, HashCache(run / ".stages" / CACHE_NAME))

    first = state()
    assert first[0][:2] == [str(d), "dir"]
    touch(d / "sub" / "w.bin")
    assert state() == first  # metadata only
    (d / "sub" / "w.bin").write_bytes(b"\x01" + b"\x00" * 63)  # same size, new bytes
    edited = state()
    assert edited != first
    (d / "sub" / "w.bin").rename(d / "sub" / "v.bin")  # same bytes, another name
    assert state() not in (first, edited)


def test_inputs_inside_the_run_dir_are_left_to_upstream_digests(tmp_path, reads):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "x").write_text("x")
    missing = tmp_path / "nope"
    cache = HashCache(run / ".stages" / CACHE_NAME)
    assert input_state([run / "data", missing], run, cache) == [[str(missing), "missing", None]]
    assert reads == []


# ------------------------------------------------------------------ whole pipelines
def test_touched_input_skips_and_same_size_edit_with_restored_mtime_reruns(
    tmp_path, small_log, reads
):
    path = tmp_path / "pipe.toml"
    path.write_text(PIPE.format(input=small_log))
    run_dir = tmp_path / "run"
    first = run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False)
    assert first == {"prepare": "ran", "train.pop": "ran"}
    assert reads == [small_log]
    cached = json.loads((run_dir / ".stages" / CACHE_NAME).read_text())["files"]
    assert list(cached) == [str(small_log.absolute())]
    # unchanged: the cached hash is used, the input is not read again
    again = run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False)
    assert again == {"prepare": "skipped", "train.pop": "skipped"}
    assert reads == [small_log]
    # a new mtime, the same bytes: hashed again, and still skipped
    touch(small_log)
    touched = run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False)
    assert touched == {"prepare": "skipped", "train.pop": "skipped"}
    assert reads == [small_log, small_log]
    entry = json.loads((run_dir / ".stages" / CACHE_NAME).read_text())["files"]
    assert entry[str(small_log.absolute())][1] == small_log.stat().st_mtime_ns  # the new stat
    # new bytes of the same size, the mtime set back: content decides, so it reruns
    same_size_edit(small_log)
    edited = run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False)
    assert edited == {"prepare": "ran", "train.pop": "ran"}
    assert run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False) == {
        "prepare": "skipped",
        "train.pop": "skipped",
    }


def test_loading_a_pipeline_writes_nothing(tmp_path, small_log, reads):
    """Only a run (under the run directory's lock) saves the hash cache."""
    path = tmp_path / "pipe.toml"
    path.write_text(PIPE.format(input=small_log))
    pipe = load_pipeline(path, run_dir=tmp_path / "run")
    assert reads == [small_log] and not (tmp_path / "run").exists()
    assert all(st.digest for st in pipe.stages)


def test_an_unreadable_input_fails_before_any_stage_runs(tmp_path, small_log, monkeypatch):
    def denied(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_pipeline_hash, "sha256_file", denied)
    path = tmp_path / "pipe.toml"
    path.write_text(PIPE.format(input=small_log))
    with pytest.raises(ConfigError, match=r"\[prepare\]: cannot read an input: .*u\.data"):
        load_pipeline(path, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the package's code
def test_code_fingerprint_follows_every_source_by_path_and_content(tmp_path):
    fingerprint = _pipeline_hash.code_fingerprint.__wrapped__  # uncached: the files change here
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "sub").mkdir(parents=True)
        (root / "m.py").write_text("X = 1\n")
        (root / "sub" / "n.py").write_text("Y = 2\n")
        (root / "sub" / "notes.txt").write_text("not code")
    same = fingerprint(tmp_path / "a")
    assert fingerprint(tmp_path / "b") == same  # content and relative paths, not location
    (tmp_path / "b" / "sub" / "notes.txt").write_text("changed")
    assert fingerprint(tmp_path / "b") == same  # only Python sources count
    (tmp_path / "b" / "sub" / "n.py").write_text("Y = 3\n")  # a changed default
    assert fingerprint(tmp_path / "b") != same
    (tmp_path / "b" / "sub" / "n.py").write_text("Y = 2\n")
    (tmp_path / "b" / "sub" / "n.py").rename(tmp_path / "b" / "n2.py")
    assert fingerprint(tmp_path / "b") != same  # moved
    package = Path(_pipeline_hash.__file__).resolve().parent
    assert _pipeline_hash.code_fingerprint() == fingerprint(package)


def test_a_changed_package_reruns_stages_under_the_same_version(tmp_path, small_log, monkeypatch):
    """A model default changed in the package (same ``__version__``: a checkout, an editable
    install) must not leave its old output skipped as unchanged."""
    path = tmp_path / "pipe.toml"
    path.write_text(PIPE.format(input=small_log))
    run_dir = tmp_path / "run"
    assert run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False) == {
        "prepare": "ran",
        "train.pop": "ran",
    }
    assert run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False) == {
        "prepare": "skipped",
        "train.pop": "skipped",
    }
    monkeypatch.setattr(_pipeline_hash, "code_fingerprint", lambda: "0" * 64)  # other code
    assert run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False) == {
        "prepare": "ran",
        "train.pop": "ran",
    }
