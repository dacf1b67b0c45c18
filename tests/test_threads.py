"""Thread count (issue 13, busy machine): from the CPUs this process may use (affinity mask,
cgroup CPU quota), ``--threads`` > ``RECSYS_EBM_THREADS`` > a pipeline's ``threads`` >
``OMP_NUM_THREADS``, never more than the CPUs; bad values fail through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_ebm.device import (
    THREADS_ENV,
    available_cpus,
    cgroup_cpu_quota,
    parse_cfs,
    parse_cpu_max,
    prepare_openmp,
    resolve_threads,
)
from recsys_ebm.diagnostics import ConfigError

ROOT = Path(__file__).resolve().parents[1]
AFFINITY = hasattr(os, "sched_setaffinity")

# a real CLI run that sets the threads, then fails on bad input (exit 2) without reading data;
# the process then reports what torch, implicit's ALS and the library use
CHILD = """
import json, os, sys
from recsys_ebm.cli import main
rc = main(["prepare", *sys.argv[1:], "--input", "/nonexistent/u.data", "--out", "/nonexistent/o"])
import torch
from recsys_ebm.device import current_threads
from recsys_ebm.models.implicit_adapter import ALS
wait = [os.environ.get(v) for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")]
print(json.dumps({"rc": rc, "torch": torch.get_num_threads(), "current": current_threads(),
                  "als": ALS()._make().num_threads, "wait": wait}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (THREADS_ENV, "OMP_NUM_THREADS")}
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        env.pop(var, None)
    env.update(extra)
    return env


def _child(*flags: str, cpus: set[int] | None = None, **env: str) -> tuple[dict, str]:
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(**env),
        preexec_fn=pre,
        cwd=ROOT,
    )
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture
def no_thread_env(monkeypatch):
    for var in (THREADS_ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


# ------------------------------------------------------------------ affinity, in a real process


@pytest.mark.skipif(not AFFINITY, reason="os.sched_setaffinity is Linux-only")
def test_cli_threads_follow_the_affinity_mask():
    one = {min(os.sched_getaffinity(0))}
    got, err = _child(cpus=one)
    assert got["rc"] == 2  # the bad input, after the threads were set
    assert got == {"rc": 2, "torch": 1, "current": 1, "als": 1, "wait": [None, "1000", "0"]}, err
    # more threads than the mask allows are lowered to it, with a warning
    got, err = _child("--threads", "4", cpus=one)
    assert (got["torch"], got["als"]) == (1, 1)
    assert "recsys-ebm prepare: warning: threads=4 is more than the 1 CPU(s)" in err
    if len(os.sched_getaffinity(0)) > 1:  # the whole mask: as many threads as it has CPUs
        got, _ = _child()
        assert got["torch"] == got["als"] == available_cpus() > 1


@pytest.mark.skipif(not AFFINITY, reason="os.sched_setaffinity is Linux-only")
def test_flag_beats_variable_beats_default_in_the_cli():
    if available_cpus() < 2:
        pytest.skip("needs 2 CPUs to tell 1 thread from 2")
    got, _ = _child(**{THREADS_ENV: "1"})
    assert (got["torch"], got["als"]) == (1, 1)
    got, _ = _child("--threads", "2", **{THREADS_ENV: "1"})
    assert (got["torch"], got["als"]) == (2, 2)
    # the old advice (README) still works; a wait policy the user chose is kept
    got, _ = _child(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="ACTIVE")
    assert (got["torch"], got["wait"]) == (1, ["ACTIVE", None, None])
    got, _ = _child(GOMP_SPINCOUNT="50")  # so is a spin count, alone
    assert got["wait"] == [None, "50", None]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0"}),  # a short spin, then sleep
        ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),  # the user's choice
        ({"KMP_BLOCKTIME": "5"}, {"KMP_BLOCKTIME": "5"}),
    ],
)
def test_prepare_openmp_sets_a_short_spin_unless_the_user_chose(env, expected, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as at an entry point's start
    environ = dict(env)
    assert prepare_openmp(environ) is True
    assert environ == expected
    # once torch is loaded it is too late for OpenMP: nothing is changed
    monkeypatch.setitem(sys.modules, "torch", object())
    environ = dict(env)
    assert prepare_openmp(environ) is False
    assert environ == env


@pytest.mark.parametrize(
    "argv, env, names",
    [
        (["train", "--threads", "0"], {}, "argument --threads"),
        (["--threads", "-1", "prepare"], {}, "argument --threads"),
        (["prepare", "--threads", "abc"], {}, "argument --threads"),
        (["prepare", "--input", "x", "--out", "y"], {THREADS_ENV: "abc"}, THREADS_ENV),
        (["prepare", "--input", "x", "--out", "y"], {THREADS_ENV: "0"}, THREADS_ENV),
    ],
)
def test_bad_thread_counts_exit_2_naming_the_option(argv, env, names):
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(**env),
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert names in proc.stderr and "Traceback" not in proc.stderr
    bad = argv[argv.index("--threads") + 1] if "--threads" in argv else env[THREADS_ENV]
    assert bad in proc.stderr  # the value received


# ------------------------------------------------------------------ resolution, in this process


def test_precedence(no_thread_env, monkeypatch):
    cap = available_cpus()
    assert resolve_threads() == cap
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # OpenMP's nested list: not ours, ignored
    assert resolve_threads() == cap
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(default=cap) == cap  # a pipeline's threads beats OMP_NUM_THREADS
    monkeypatch.setenv(THREADS_ENV, "1")
    assert resolve_threads(default=cap) == 1  # the variable beats the pipeline's
    assert resolve_threads(cap) == cap  # --threads beats everything


def test_never_more_than_available(no_thread_env, monkeypatch):
    cap = available_cpus()
    with pytest.warns(RuntimeWarning, match=rf"threads={cap + 3} is more than the {cap} CPU"):
        assert resolve_threads(cap + 3) == cap
    monkeypatch.setenv(THREADS_ENV, str(cap + 1))
    with pytest.warns(RuntimeWarning, match=THREADS_ENV):
        assert resolve_threads() == cap


@pytest.mark.parametrize("bad", [0, -1, "abc", "1.5", 2.0, True])
def test_bad_values_name_threads(bad, no_thread_env):
    with pytest.raises((ValueError, TypeError), match=r"threads: expected .*" + repr(bad)[:2]):
        resolve_threads(bad)


@pytest.mark.skipif(not AFFINITY, reason="os.sched_getaffinity is Linux-only")
def test_available_cpus_is_the_affinity_mask_at_most():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


# ------------------------------------------------------------------ cgroup quota files


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("max 100000\n", None),
        ("200000 100000\n", 2.0),
        ("150000 100000", 1.5),
        ("50000", 0.5),  # no period: the kernel's default 100000
        ("", None),
        ("garbage here\n", None),
        ("-5 100000", None),
        ("1 2 3", None),
    ],
)
def test_parse_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    "quota, period, cpus",
    [("-1\n", "100000\n", None), ("250000\n", "100000\n", 2.5), ("x", "100000", None)],
)
def test_parse_cfs(quota, period, cpus):
    assert parse_cfs(quota, period) == cpus


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_cgroup_v2_quota_of_own_group_and_its_parents(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    proc.write_text("0::/jobs/mine\n")
    _tree(root, {"cpu.max": "max 100000\n", "jobs/mine/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(root, proc) is None
    _tree(root, {"jobs/cpu.max": "150000 100000\n"})  # a parent's quota binds its children
    assert cgroup_cpu_quota(root, proc) == 1.5
    _tree(root, {"jobs/mine/cpu.max": "100000 100000\n"})  # the smallest wins
    assert cgroup_cpu_quota(root, proc) == 1.0
    _tree(root, {"jobs/mine/cpu.max": "\x00\xff garbage"})  # garbage is ignored, no crash
    assert cgroup_cpu_quota(root, proc) == 1.5


def test_cgroup_v1_quota(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "proc_cgroup"
    proc.write_text("4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    _tree(
        root,
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_quota(root, proc) == 3.0


def test_cgroup_missing_files(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "none", tmp_path / "no_proc_file") is None


# ------------------------------------------------------------------ pipeline option


def test_pipeline_threads_option(tmp_path):
    from recsys_ebm.pipeline import load_pipeline

    p = tmp_path / "p.toml"
    p.write_text('[pipeline]\nname = "t"\nthreads = 1\n')
    assert load_pipeline(p).threads == 1
    assert load_pipeline(p, ["pipeline.threads=2"]).threads == 2
    for bad in ("0", "'two'", "1.5"):
        p.write_text(f'[pipeline]\nname = "t"\nthreads = {bad}\n')
        with pytest.raises(ConfigError, match=r"\[pipeline\]: key 'threads' expects"):
            load_pipeline(p)
