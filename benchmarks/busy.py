"""Busy-machine benchmark (issue 13): each job timed on the quiet machine, then again beside one
CPU-bound busy process per CPU; prints both times and their ratio (target: at most 3x).

    python benchmarks/busy.py [--ml100k PATH] [--parts main,rbm] [--passive] [--old-spin]

Jobs, each through the real CLI in a fresh process (so the CLI's own thread setup applies:
threads from the affinity mask and cgroup quota, OpenMP's idle threads spinning briefly, then
sleeping):

* ``main``: the README's main job, ``recsys-ebm run pipelines/quickstart.toml``, into a fresh
  temporary run directory and MLflow store each time (nothing skipped);
* ``rbm``: one early-stopped RBM fit, ``recsys-ebm train --model rbm``, on MovieLens 100K
  (``--ml100k``; when absent, on the bundled ml-latest-small), prepared once beforehand.

``--passive`` adds a row with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once: the
command line's policy until 2026-11-28, now a short spin first, ``GOMP_SPINCOUNT=1000``).

Busy processes: ``stress-ng --cpu N`` when installed, else N Python busy loops, at normal
priority, N = the machine's CPUs in this process's affinity mask. ``--old-spin`` adds a row with
OpenMP's spin-waiting as it was before (``GOMP_SPINCOUNT=300000``, libgomp's default when no
wait policy is set), to show what the sleeping policy buys. The variables that set the thread
count (``RECSYS_EBM_THREADS``, ``OMP_NUM_THREADS``) are removed from the jobs' environment
unless ``--threads`` is given: the defaults are what is measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "recsys_ebm"]
OLD_SPIN = {"GOMP_SPINCOUNT": "300000"}  # libgomp's default spin count when no policy is set


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def busy(n: int) -> Iterator[str]:
    """``n`` CPU-bound processes at normal priority for the duration of the block."""
    if shutil.which("stress-ng"):
        procs = [subprocess.Popen(["stress-ng", "--cpu", str(n), "--quiet"])]
        what = f"stress-ng --cpu {n}"
    else:
        loop = [sys.executable, "-c", "while True: pass"]
        procs = [subprocess.Popen(loop) for _ in range(n)]
        what = f"{n} Python busy loop(s)"
    time.sleep(1.0)  # let them start
    try:
        yield what
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def timed(argv: list[str], env: dict[str, str], log: Path) -> float:
    """Seconds one CLI command takes; its output goes to ``log`` (printed if it fails)."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    rc = proc.returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"failed (exit {rc}): {' '.join(argv)}\n{log.read_text()[-3000:]}")
    return seconds


def main_job(tmp: Path, tag: str) -> list[str]:
    run_dir, store = tmp / f"quick-{tag}", tmp / f"mlflow-{tag}.db"
    return [
        *CLI,
        "run",
        str(ROOT / "pipelines" / "quickstart.toml"),
        "--run-dir",
        str(run_dir),
        "--tracking-uri",
        f"sqlite:///{store}",
    ]


def rbm_fit(tmp: Path, tag: str) -> list[str]:
    data, out = tmp / "data", tmp / f"rbm-{tag}"
    return [*CLI, "train", "--data", str(data), "--model", "rbm", "--out", str(out), "--no-mlflow"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--parts", default="main,rbm", help="comma-separated: main, rbm")
    ap.add_argument("--threads", type=int, default=None, help="pass --threads N to every job")
    ap.add_argument("--old-spin", action="store_true", help="also time the RBM with old spinning")
    ap.add_argument(
        "--passive",
        action="store_true",
        help="also time the RBM with OMP_WAIT_POLICY=PASSIVE (the CLI's policy until 2026-11-28)",
    )
    ap.add_argument("--busy", type=int, default=None, help="busy processes (default: CPUs)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    env = {k: v for k, v in os.environ.items()}
    if args.threads is None:
        for var in ("RECSYS_EBM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(var, None)
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):  # the CLI's own policy
        env.pop(var, None)
    extra = [] if args.threads is None else ["--threads", str(args.threads)]
    n_busy = args.busy or cpus()
    ml = Path(args.ml100k)
    with tempfile.TemporaryDirectory(prefix="busy-bench-") as t:
        tmp = Path(t)
        jobs: list[tuple[str, object, dict[str, str]]] = []
        if "main" in parts:
            jobs.append(("main job (quickstart pipeline)", main_job, env))
        if "rbm" in parts:
            if (ml / "u.data").is_file():
                source, name = str(ml), "MovieLens 100K"
            else:
                source, name = str(ROOT / "data" / "ml-latest-small"), "ml-latest-small"
            prep = [*CLI, "prepare", "--input", source, "--out", str(tmp / "data")]
            timed([*prep, "--split", "random", "--seed", "0"], env, tmp / "prepare.log")
            jobs.append((f"RBM fit ({name})", rbm_fit, env))
            if args.passive:
                passive = {**env, "OMP_WAIT_POLICY": "PASSIVE"}
                jobs.append((f"RBM fit ({name}), sleeping at once", rbm_fit, passive))
            if args.old_spin:
                jobs.append((f"RBM fit ({name}), old spinning", rbm_fit, {**env, **OLD_SPIN}))
        print(
            f"{cpus()} CPU(s) in the affinity mask; jobs run with "
            + (f"--threads {args.threads}" if extra else "the default thread count")
        )
        quiet = {}
        for i, (label, make, job_env) in enumerate(jobs):
            argv = [*make(tmp, f"q{i}"), *extra]  # type: ignore[operator]
            quiet[label] = timed(argv, job_env, tmp / f"q{i}.log")
            print(f"  quiet  {label}: {quiet[label]:.1f} s", flush=True)
        rows = []
        with busy(n_busy) as what:
            print(f"busy: {what}", flush=True)
            for i, (label, make, job_env) in enumerate(jobs):
                argv = [*make(tmp, f"b{i}"), *extra]  # type: ignore[operator]
                seconds = timed(argv, job_env, tmp / f"b{i}.log")
                print(f"  busy   {label}: {seconds:.1f} s", flush=True)
                rows.append((label, quiet[label], seconds))
    print(f"\n| job | quiet (s) | beside {what} (s) | ratio (target <= 3x) |")
    print("| --- | ---: | ---: | ---: |")
    for label, q, b in rows:
        print(f"| {label} | {q:.1f} | {b:.1f} | {b / q:.2f}x |")


if __name__ == "__main__":
    main()
