"""Bad inputs of ``recsys-ebm run`` (pipeline files): each fails with exit 2 before a stage
writes anything, or, for a bad value only a stage can judge, with that stage's message."""

from __future__ import annotations

import atexit
import subprocess
import sys
from pathlib import Path

from tests.cli_cases import Case, World
from tests.cli_cases._world import log_csv

PIPE = """
[pipeline]
name = "cases"

[prepare]
input = "{input}"

[train.pop]
model = "popularity"

[train.ease]
model = "ease"
set = {{ l2_grid = [] }}
"""

# holds RUN_DIR/.lock, as a running `recsys-ebm run` does, until its stdin closes
_HOLDER = """
import fcntl, os, sys
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


def pipe_file(w: World, t: Path, extra: str = "") -> Path:
    path = t / "pipe.toml"
    path.write_text(PIPE.format(input=log_csv(w)) + extra)
    return path


def locked_run_dir(w: World) -> Path:
    """A run directory whose lock a live helper process holds for the rest of the session."""

    def build(w: World) -> Path:
        run = w.dir("locked-run")
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(run)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(proc.kill)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        w.get("lock-holder", lambda w: proc)  # keep it (and its stdin) alive
        return run

    return w.get("locked_run_dir", build)


def run_argv(w: World, t: Path, *sets: str, extra: str = "", run: Path | None = None) -> list[str]:
    argv = ["run", str(pipe_file(w, t, extra)), "--run-dir", str(run or t / "run"), "--no-mlflow"]
    for s in sets:
        argv += ["--set", s]
    return argv


CASES = [
    Case(
        id="pipeline-stage-name-escapes-run-dir",
        argv=lambda w, t: run_argv(w, t, extra='\n[train."../../victim"]\nmodel = "ease"\n'),
        expect=("pipe.toml", "stage name '../../victim'", "plain identifier"),
        absent=lambda w, t: [t / "run", t / "victim"],
    ),
    Case(
        id="pipeline-unknown-model-config-key",
        argv=lambda w, t: run_argv(w, t, "train.ease.set.no_such_key=1"),
        expect=("[train.ease]", "no_such_key"),
        absent=lambda w, t: [t / "run"],
    ),
    Case(
        id="pipeline-bad-model-config-value",
        argv=lambda w, t: run_argv(w, t, "train.ease.set.l2=-1"),
        expect=("[train.ease]", "EASEConfig.l2"),
        absent=lambda w, t: [t / "run"],
    ),
    Case(
        id="pipeline-bad-value-reaching-a-stage",
        argv=lambda w, t: run_argv(w, t, "prepare.test_fraction=1.5"),
        expect=("recsys-ebm prepare: error: test_fraction", "stage prepare failed (exit 2)"),
        absent=lambda w, t: [t / "run" / "data", t / "run" / "models"],
    ),
    Case(
        id="pipeline-run-dir-held-by-another-run",
        argv=lambda w, t: run_argv(w, t, run=locked_run_dir(w)),
        expect=("is in use", "another `recsys-ebm run`", "locked-run"),
        absent=lambda w, t: [locked_run_dir(w) / "data", locked_run_dir(w) / ".stages"],
    ),
]
