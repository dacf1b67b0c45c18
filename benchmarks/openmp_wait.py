"""OpenMP wait policies against an RBM fit, quiet and beside busy processes (issue 13): the
measurements behind the command line's policy (``recsys_ebm.device.prepare_openmp``).

    python benchmarks/openmp_wait.py [--ml100k PATH] [--policies PASSIVE,1000,3000]
        [--rounds 3] [--epochs 0] [--threads 2] [--busy N]

Each fit runs in a fresh Python process (OpenMP reads its variables once, when torch loads it)
with one policy in its environment: ``PASSIVE`` sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads
sleep at once), a number sets ``GOMP_SPINCOUNT`` (libgomp spins that many times at a barrier,
then sleeps; its default is 300,000). The fit: the RBM with its defaults on MovieLens 100K
(``--ml100k``; the bundled ml-latest-small when absent), per-user random split 20/10, seed 0,
early-stopped on validation (``--epochs N``: N epochs, no early stopping), timed from a fresh
model to a fitted one. Rounds interleave the policies, first quiet, then beside one CPU-bound
busy process per CPU (``benchmarks/busy.py``'s); prints every time and each policy's range.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy import ROOT, busy, cpus  # noqa: E402

FIT = r"""
import sys, time, torch
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.models import get_model_class
src, epochs = sys.argv[1], int(sys.argv[2])
ds = prepare_dataset(src, split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
kw = {"epochs": epochs, "patience": 0} if epochs else {}
t0 = time.perf_counter()
get_model_class("rbm")(progress=False, **kw).fit_dataset(ds)
print(f"{time.perf_counter() - t0:.3f}")
"""
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def policy_env(policy: str, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy.upper() == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        env["GOMP_SPINCOUNT"] = str(int(policy))
    return env


def fit_seconds(policy: str, src: str, args: argparse.Namespace) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", FIT, src, str(args.epochs)],
        env=policy_env(policy, args.threads),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(f"the fit failed under {policy}:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    ap.add_argument("--policies", default="PASSIVE,1000,3000",
                    help="comma-separated: PASSIVE or a GOMP_SPINCOUNT")
    ap.add_argument("--rounds", type=int, default=3, help="fits per policy and condition")
    ap.add_argument("--epochs", type=int, default=0, help="0: early-stopped defaults")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--busy", type=int, default=None, help="busy processes (default: CPUs)")
    args = ap.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        if p.upper() != "PASSIVE" and not p.isdigit():
            ap.error(f"--policies: expected PASSIVE or a spin count, got {p!r}")
    src = Path(args.ml100k)
    if not (src / "u.data").is_file():
        print(f"[note] MovieLens 100K not found at {src}: using the bundled ml-latest-small")
        src = ROOT / "data" / "ml-latest-small"
    what = "early-stopped" if not args.epochs else f"{args.epochs} epochs"
    print(f"RBM fit on {src.name} ({what}), {args.threads} threads, {args.rounds} rounds")
    times: dict[tuple[str, str], list[float]] = {}

    def rounds(condition: str) -> None:
        for _ in range(args.rounds):
            for p in policies:
                t = fit_seconds(p, str(src), args)
                times.setdefault((condition, p), []).append(t)
                print(f"  {condition:<5} {p:>8}: {t:.2f} s", flush=True)

    rounds("quiet")
    with busy(args.busy or cpus()) as desc:
        print(f"busy: {desc}", flush=True)
        rounds("busy")
    print(f"\n| policy | quiet (s) | beside {desc} (s) |")
    print("| --- | ---: | ---: |")
    for p in policies:
        q, b = times[("quiet", p)], times[("busy", p)]
        name = "OMP_WAIT_POLICY=PASSIVE" if p.upper() == "PASSIVE" else f"GOMP_SPINCOUNT={p}"
        print(f"| {name} | {min(q):.2f}-{max(q):.2f} | {min(b):.2f}-{max(b):.2f} |")


if __name__ == "__main__":
    main()
