"""Data-parallel training benchmark: one epoch with 1 process vs N processes (torchrun, gloo).

    python benchmarks/distributed.py [--model rbm|retriever|both] [--nproc 2] [--users 20000]
        [--items 2000] [--per-user 30] [--threads 1]
    python benchmarks/distributed.py --gpu-large [--model ...]   # one single-GPU epoch

One synthetic log (seeded; item popularity ~ rank^-0.8, a Zipf-like long tail; --per-user
interactions per user on average), one epoch of the model's trainer, the task the shared loop
drives (:class:`~recsys_ebm.models._rbm_train.RBMTrainer`, ``RetrieverTrainer``), timed around
``train_epoch`` alone (no validation). 1 process: the plain path (no process group). N processes:
``torchrun --nproc_per_node=N benchmarks/distributed.py --worker ...`` (gloo on CPU, each rank
``--threads`` threads, the same global batches); the epoch time is the slowest rank's.
Efficiency = t1 / (N x tN): 1.0 is linear scaling (the same work split N ways); below it are the
all-reduce and the work every rank repeats (the global batch's random draws, the item table).

``--gpu-large``: one epoch on CUDA, one process, of a synthetic 1M-user x 100k-item log (50M
interactions by default; CSR on the host, each batch densified on the GPU, never the whole log).

Configs: each model's defaults (the objective in use is printed), the RBM with batch 256 (its
default 32 suits ~1k users); ``--set '{"objective": "cd"}'`` overrides. Timings on a shared
machine are noisy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]


def synthetic_log(n_users: int, n_items: int, per_user: float, seed: int = 0) -> sp.csr_matrix:
    """(U, I) binary CSR: each user ~Poisson(per_user) items (at least 2), drawn by popularity
    p_i ~ (i + 1)^-0.8 (duplicates merged). Built in chunks of users: memory ~ the CSR."""
    rng = np.random.default_rng(seed)
    p = (np.arange(n_items) + 1.0) ** -0.8
    cdf = np.cumsum(p / p.sum())
    parts = []
    for lo in range(0, n_users, 100_000):
        n = min(100_000, n_users - lo)
        counts = np.maximum(2, rng.poisson(per_user, n))
        rows = np.repeat(np.arange(n), counts)
        cols = np.minimum(np.searchsorted(cdf, rng.random(rows.size)), n_items - 1)
        m = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, n_items))
        m.data[:] = 1.0  # duplicates were summed
        parts.append(m)
    return sp.vstack(parts, format="csr")


def make_task(model_name: str, train: sp.csr_matrix, device: str, overrides: dict):
    """The model's trainer (what run_training drives), freshly initialised."""
    if model_name == "rbm":
        from recsys_ebm.models._rbm_train import RBMTrainer
        from recsys_ebm.models.rbm import RBM, RBMConfig

        cfg = {"batch_size": 256, "progress": False, "device": device}
        model = RBM(RBMConfig(**{**cfg, **overrides}))
        return RBMTrainer(model, train, None, progress=False)
    from recsys_ebm.models._retriever_train import RetrieverTrainer
    from recsys_ebm.models.retriever import Retriever

    model = Retriever(**{"progress": False, "device": device, **overrides})
    train = (train > 0).astype(np.float32).tocsr()
    return RetrieverTrainer(model, train, None, progress=False)


def time_epoch(task) -> float:
    """Seconds of one ``train_epoch`` (CUDA work included)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    task.train_epoch(0)
    sync()
    return time.perf_counter() - t0


def worker(args: argparse.Namespace) -> None:
    """One torchrun rank: the epoch inside the process group; rank 0 prints the slowest time."""
    import torch.distributed as dist

    from recsys_ebm.models.distributed import data_parallel

    torch.set_num_threads(args.threads)
    train = synthetic_log(args.users, args.items, args.per_user)
    with data_parallel(torch.device("cpu")) as dp:
        task = make_task(args.model, train, "cpu", json.loads(args.set))
        dist.barrier()
        t = torch.tensor([time_epoch(task)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if dp.is_main:
            print(json.dumps({"epoch_seconds": float(t[0])}))


def run_ranks(args: argparse.Namespace, model_name: str, nproc: int) -> float:
    cmd = [
        sys.executable, "-m", "torch.distributed.run",  # torchrun
        f"--nproc_per_node={nproc}", "--master_port", str(_port()), __file__,
        "--worker", "--model", model_name, "--users", str(args.users), "--items",
        str(args.items), "--per-user", str(args.per_user), "--threads", str(args.threads),
        "--set", args.set,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"torchrun failed ({r.returncode}):\n{r.stderr[-4000:]}")
    line = [s for s in r.stdout.splitlines() if s.startswith("{")][-1]
    return json.loads(line)["epoch_seconds"]


def _describe(task) -> str:
    cfg = task.config
    keys = ("objective", "softmax", "batch_size", "n_hidden", "embedding_size")
    return ", ".join(f"{k}={getattr(cfg, k)}" for k in keys if hasattr(cfg, k))


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scaling(args: argparse.Namespace, models: list[str]) -> None:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train = synthetic_log(args.users, args.items, args.per_user)
    print(
        f"synthetic log: {train.shape[0]:,} users x {train.shape[1]:,} items, "
        f"{train.nnz:,} interactions ({time.perf_counter() - t0:.1f}s); "
        f"{args.threads} thread(s) per process"
    )
    print(f"{'model':10} {'1 process':>10} {f'{args.nproc} (torchrun)':>14} {'speed-up':>9} "
          f"{'efficiency':>11}")  # fmt: skip
    for name in models:
        task = make_task(name, train, "cpu", json.loads(args.set))
        t1 = time_epoch(task)
        tn = run_ranks(args, name, args.nproc)
        print(
            f"{name:10} {t1:9.2f}s {tn:13.2f}s {t1 / tn:8.2f}x {t1 / (args.nproc * tn):11.2f}"
            f"   ({_describe(task)})"
        )


def gpu_large(args: argparse.Namespace, models: list[str]) -> None:
    if not torch.cuda.is_available() and args.device == "cuda":
        raise SystemExit("--gpu-large: CUDA is not available (pass --device cpu for a dry run)")
    t0 = time.perf_counter()
    train = synthetic_log(args.users, args.items, args.per_user)
    print(
        f"synthetic log: {train.shape[0]:,} users x {train.shape[1]:,} items, "
        f"{train.nnz:,} interactions ({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    for name in models:
        task = make_task(name, train, args.device, json.loads(args.set))
        print(f"{name}: {_describe(task)}", flush=True)
        secs = time_epoch(task)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0
        print(f"{name}: one epoch {secs:.1f}s on {dev} (peak GPU memory {peak:.1f} GiB)",
              flush=True)  # fmt: skip
        del task
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", choices=["rbm", "retriever", "both"], default="both")
    ap.add_argument("--nproc", type=int, default=2, help="processes of the torchrun run")
    ap.add_argument("--users", type=int, default=None, help="default 20,000 (1M: --gpu-large)")
    ap.add_argument("--items", type=int, default=None, help="default 2,000 (100k: --gpu-large)")
    ap.add_argument("--per-user", type=float, default=None, help="mean items per user (30; 50)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--set", default="{}", help='JSON config overrides, e.g. \'{"epochs": 1}\'')
    ap.add_argument("--gpu-large", action="store_true", help="one single-GPU epoch, 1M x 100k")
    ap.add_argument("--device", default="cuda", help="--gpu-large's device (cpu: a dry run)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    big = args.gpu_large
    args.users = args.users or (1_000_000 if big else 20_000)
    args.items = args.items or (100_000 if big else 2_000)
    args.per_user = args.per_user or (50.0 if big else 30.0)
    if args.worker:
        return worker(args)
    models = ["rbm", "retriever"] if args.model == "both" else [args.model]
    (gpu_large if big else scaling)(args, models)


if __name__ == "__main__":
    sys.exit(main())
