"""Pipeline runs are safe to repeat, interrupt and race: the run-directory lock, atomic stage
stamps, stage names that stay inside the run directory, exit codes passed through, the whole
configuration checked before any stage runs, and a rerun after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_ebm._pipeline_hash import CACHE_NAME
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.pipeline import RunDirLocked, StageFailed, load_pipeline, run_pipeline

ROOT = Path(__file__).resolve().parents[1]

PIPE = """
[pipeline]
name = "t"

[prepare]
input = "{input}"
test_fraction = 0.2

[train.pop]
model = "popularity"
"""

# holds RUN_DIR/.lock (what a running `recsys-ebm run` holds) until its stdin closes
HOLDER = """
import fcntl, os, sys
from pathlib import Path
run = Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)
fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def pipe_file(tmp_path: Path) -> Path:
    log = tmp_path / "u.data"
    rows = [
        f"{u}\t{i}\t4\t{u * 100 + i}" for u in range(1, 30) for i in range(1, 25) if (u + i) % 3
    ]
    log.write_text("\n".join(rows) + "\n")
    path = tmp_path / "pipe.toml"
    path.write_text(PIPE.format(input=log))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def hold_lock(run_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


# ------------------------------------------------------------------ 1. the run-directory lock
def test_second_run_on_a_locked_run_dir_fails_at_once(pipe_file, tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        r = cli("run", str(pipe_file), "--run-dir", str(run_dir), "--no-mlflow", cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert f"run directory {run_dir} is in use" in r.stderr
        assert f"another `recsys-ebm run` (pid {holder.pid}) holds its lock" in r.stderr
        assert not (run_dir / "data").exists() and not (run_dir / ".stages").exists()
        with pytest.raises(RunDirLocked, match="is in use"):
            run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False)
    finally:
        holder.communicate("")  # closes its stdin: it exits, the kernel drops the lock
    # the holder is gone: the same run now goes through, and releases the lock when done
    status = run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False)
    assert status == {"prepare": "ran", "train.pop": "ran"}
    again = run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False)
    assert again == {"prepare": "skipped", "train.pop": "skipped"}


# ------------------------------------------------------------------ 2. stage stamps
def test_truncated_or_garbage_stamp_reruns_the_stage(pipe_file, tmp_path):
    run_dir = tmp_path / "run"
    run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False)
    stamps = run_dir / ".stages"
    prep, train = stamps / "prepare.json", stamps / "train.pop.json"
    text = prep.read_text()
    prep.write_text(text[: len(text) // 2])  # a write cut short
    train.write_bytes(b"\xff\x00garbage")
    assert run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False) == {
        "prepare": "ran",
        "train.pop": "ran",
    }
    assert json.loads(prep.read_text())["digest"] and json.loads(train.read_text())["digest"]
    # --force with a broken stamp reruns too (it used to crash before looking at --force)
    prep.write_text("[1, 2")
    forced = run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), force=True, mlflow=False)
    assert forced == {"prepare": "ran", "train.pop": "ran"}
    assert run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False) == {
        "prepare": "skipped",
        "train.pop": "skipped",
    }
    left = sorted(p.name for p in stamps.iterdir() if p.name != CACHE_NAME)
    assert left == ["prepare.json", "train.pop.json"]


# ------------------------------------------------------------------ 3. stage names
@pytest.mark.parametrize("name", ["../../../victim", "a/b", ".hidden", "..", "9lives", "a b", ""])
def test_stage_names_are_plain_identifiers(pipe_file, name):
    path = pipe_file.parent / "bad.toml"
    path.write_text(pipe_file.read_text() + f"\n[train.{json.dumps(name)}]\nmodel = 'ease'\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, run_dir=pipe_file.parent / "run")
    assert str(path) in str(err.value) and f"stage name {name!r}" in str(err.value)


def test_stage_names_with_dash_and_underscore_are_fine(pipe_file):
    path = pipe_file.parent / "ok.toml"
    path.write_text(pipe_file.read_text() + "\n[train._ease-2]\nmodel = 'ease'\n")
    pipe = load_pipeline(path, run_dir=pipe_file.parent / "run")
    assert "train._ease-2" in [st.name for st in pipe.stages]


def test_pipeline_name_used_as_run_dir_is_one_path_component(pipe_file):
    path = pipe_file.parent / "escape.toml"
    path.write_text(pipe_file.read_text().replace('name = "t"', 'name = "../../victim"'))
    with pytest.raises(ConfigError, match=r"\[pipeline\]: key 'name'"):
        load_pipeline(path)
    assert load_pipeline(path, run_dir=pipe_file.parent / "run").run_dir.name == "run"


# ------------------------------------------------------------------ 4. exit codes
def test_stage_that_fails_on_bad_input_makes_run_exit_2(pipe_file, tmp_path):
    run_dir = tmp_path / "run"
    r = cli(
        "run", str(pipe_file), "--run-dir", str(run_dir), "--no-mlflow",
        "--set", "prepare.test_fraction=1.5",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "recsys-ebm prepare: error: test_fraction" in r.stderr  # the stage's own message
    assert f"pipeline {pipe_file}: stage prepare failed (exit 2)" in r.stderr
    assert not (run_dir / "data").exists()


def test_stage_that_fails_unexpectedly_makes_run_exit_1(pipe_file, tmp_path):
    """An RBM with 10**13 hidden units cannot allocate its weights (960 TB, beyond any address
    space): torch raises RuntimeError, not bad input, so exit 1, with the stage named."""
    path = tmp_path / "huge.toml"
    path.write_text(
        pipe_file.read_text()
        + "\n[train.rbm]\nmodel = 'rbm'\nset = { epochs = 1, n_hidden = 10000000000000 }\n"
    )
    with pytest.raises(StageFailed) as err:
        run_pipeline(load_pipeline(path, run_dir=tmp_path / "lib"), mlflow=False)
    assert err.value.returncode == 1 and "stage train.rbm failed (exit 1)" in str(err.value)
    r = cli("run", str(path), "--run-dir", str(tmp_path / "run"), "--no-mlflow", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "stage train.rbm failed (exit 1): RuntimeError" in r.stderr
    assert not (tmp_path / "run" / "models" / "rbm").exists()


# ------------------------------------------------------------------ 5. checked before any stage
def test_bad_model_config_key_fails_before_prepare_writes_anything(pipe_file, tmp_path):
    run_dir = tmp_path / "run"
    r = cli(
        "run", str(pipe_file), "--run-dir", str(run_dir), "--no-mlflow",
        "--set", "train.pop.set.no_such_key=1",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"{pipe_file}: [train.pop]" in r.stderr and "no_such_key" in r.stderr
    assert "[run] prepare" not in r.stdout
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "table, message",
    [
        ("model = 'rbm'\nset = { n_hidden = 'many' }\n", "n_hidden: expected an int"),
        ("model = 'rbm'\nset = { epochs = 0 }\n", "RBMConfig.epochs: expected > 0"),
        ("model = 'ranker'\nset = { components = ['ease', 'ghost'] }\n", "'ghost' is neither"),
        (
            "model = 'ranker'\nset = { components = ['ease', 'ranker'] }\n",
            "cannot contain a ranker",
        ),
        ("model = 'ranker'\nset = { components = ['softmax-rbm'] }\n", "ranks from ratings"),
        (
            "model = 'ranker'\ncomponents = ['pop']\nset = { candidates = 'retriever' }\n",
            "'retriever' needs a component with retrieve()",
        ),
        (
            "model = 'ranker'\nset = { component_config = { ease = { l3 = 1 } } }\n",
            "key 'set.component_config.ease'",
        ),
        (
            "model = 'ranker'\nset = { component_config = { nope = {} } }\n",
            "key 'set.component_config': 'nope' is not a model name",
        ),
        ("model = 'ease'\nconfig = 'missing.toml'\n", "missing.toml"),
    ],
)
def test_model_config_checked_at_load(pipe_file, table, message):
    path = pipe_file.parent / "cfg.toml"
    path.write_text(pipe_file.read_text() + "\n[train.m]\n" + table)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, run_dir=pipe_file.parent / "run")
    assert f"{path}: [train.m]" in str(err.value) and message in str(err.value)


def test_ranker_component_config_table_reaches_the_stage(pipe_file, tmp_path):
    """A table under ``set`` (component_config) is passed as a TOML inline table."""
    path = tmp_path / "cc.toml"
    path.write_text(
        pipe_file.read_text()
        + "\n[train.r]\nmodel = 'ranker'\ncomponents = ['pop']\n"
        + "set = { device = 'cpu', component_config = { als = { factors = 8 } } }\n"
    )
    run_dir = tmp_path / "run"
    assert run_pipeline(load_pipeline(path, run_dir=run_dir), mlflow=False)["train.r"] == "ran"
    meta = json.loads((run_dir / "models" / "r" / "model.json").read_text())
    assert meta["config"]["component_config"] == {"als": {"factors": 8}}


# ------------------------------------------------------------------ 6. a rerun after a kill
def test_rerun_after_a_kill_removes_its_temporaries(pipe_file, tmp_path):
    run_dir = tmp_path / "run"
    run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False)
    # a run killed (SIGKILL) while writing a model and a stamp, holding the lock
    killed = (
        "import fcntl, os, signal, sys\n"
        "from pathlib import Path\n"
        "from recsys_ebm.io import atomic_dir, atomic_file\n"
        "run = Path(sys.argv[1])\n"
        "fd = os.open(run / '.lock', os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "with atomic_dir(run / 'models' / 'pop', overwrite=True) as tmp:\n"
        "    (tmp / 'half.bin').write_bytes(b'x' * 100)\n"
        "    with atomic_file(run / '.stages' / 'train.pop.json') as t:\n"
        "        t.write_text('{\"dig')\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", killed, str(run_dir)], env=env, timeout=120)
    assert p.returncode == -signal.SIGKILL
    left = [*(run_dir / "models").glob(".pop.tmp-*"), *(run_dir / ".stages").glob(".*.tmp-*")]
    assert len(left) == 2, left
    # every stage is unchanged (skipped), yet the run removes what the killed one left
    status = run_pipeline(load_pipeline(pipe_file, run_dir=run_dir), mlflow=False)
    assert status == {"prepare": "skipped", "train.pop": "skipped"}
    assert not any(p.exists() for p in left)
    assert sorted(p.name for p in (run_dir / "models").iterdir()) == ["pop"]
