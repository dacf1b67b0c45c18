"""Every bad-input case of the reliability issue, run through the real CLI in a subprocess.

For each case (``tests/cli_cases/*.py``): exit status 2, no traceback, a message that names the
argument or file, and nothing written (the case's output paths are absent, and no temporary file
is left beside them).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tests.cli_cases as cli_cases
from tests.cli_cases import Case, World

ROOT = Path(__file__).resolve().parents[1]


def _all_cases() -> list[Case]:
    cases: list[Case] = []
    for mod in pkgutil.iter_modules(cli_cases.__path__):
        if mod.name.startswith("_"):
            continue
        cases += importlib.import_module(f"tests.cli_cases.{mod.name}").CASES
    ids = [c.id for c in cases]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    assert not dup, f"duplicate case ids: {dup}"
    return cases


CASES = _all_cases()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("cli-world"))
    yield w
    for cleanup in reversed(w.cleanups):
        cleanup()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_message_and_writes_nothing(case: Case, world, tmp_path):
    argv = case.argv(world, tmp_path)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT),
        **case.env,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *argv],
        cwd=tmp_path,
        env=env,
        input=case.stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    for text in case.expect:
        assert text in err, f"{text!r} not in the message:\n{err}"
    for path in case.absent(world, tmp_path):
        assert not path.exists(), f"{path} was written"
        if path.parent.is_dir():
            left = [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.tmp")]
            assert not left, f"temporary outputs left beside {path}: {left}"
