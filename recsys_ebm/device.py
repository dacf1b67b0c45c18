"""Device resolution, done once per model (nanoGPT style), and the CPU thread count.

Threads. torch, implicit's ALS/BPR and numpy's BLAS each start one thread per core by default,
and torch's OpenMP threads spin while they wait for each other. On a machine shared with other
CPU-bound jobs (a busy node; a container whose CPU quota is below the host's core count) those
threads stall each other and a job can run many times slower. Here the thread count comes from
the CPUs this process may really use (:func:`available_cpus`: the affinity mask and the cgroup
CPU quota), is chosen by :func:`resolve_threads` (``--threads``, ``RECSYS_EBM_THREADS``, ...)
and applied once by the application's entry point (:func:`configure_threads`; the CLI and the
pipeline runner call it). Nothing here changes global state on import.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "THREADS_ENV",
    "available_cpus",
    "cgroup_cpu_quota",
    "check_threads",
    "configure_threads",
    "current_threads",
    "native_bf16",
    "prepare_openmp",
    "resolve_device",
    "resolve_threads",
]

#: environment variable that sets the thread count (``--threads`` wins over it)
THREADS_ENV = "RECSYS_EBM_THREADS"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")
#: the count applied by :func:`configure_threads` (None until an entry point calls it)
_configured: int | None = None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device``.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: ``device`` names CUDA but CUDA is absent, or is not a device string.
    """
    import torch  # here, not at the top: the CLI sets OpenMP's variables before torch loads

    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {type(device).__name__}"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device: {device!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively on ``device``: CUDA, or a CPU with AVX512-BF16
    or AMX tiles (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later), where
    oneDNN multiplies bf16 with fp32 accumulation. Elsewhere a CPU emulates them, slower than
    fp32, so mixed precision stays off. (The retriever's early-stopped ml-latest-small fit on this
    project's 2-core AMD EPYC: 3.11 s with, 3.66 s without; `python benchmarks/train_speed.py
    --retriever-variants`, benchmarks/README.md.)"""
    import torch

    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        fn = getattr(cpu, name, None)
        try:
            if fn is not None and bool(fn()):
                return True
        except RuntimeError:  # pragma: no cover - a torch built without the CPU probes
            continue
    return False


# --------------------------------------------------------------------------- CPU quota


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def parse_cpu_max(text: str | None) -> float | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` line (``"200000 100000"`` -> 2.0); None for
    ``"max ..."`` (no quota) and for anything unreadable."""
    parts = (text or "").split()
    if len(parts) not in (1, 2) or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) == 2 else 100_000  # the kernel's default period
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str | None, period_text: str | None) -> float | None:
    """CPUs granted by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None for a quota
    of -1 (no quota) and for anything unreadable."""
    try:
        quota = int((quota_text or "").strip())
        period = int((period_text or "").strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _own_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's ``cpu`` controller."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _ancestors(base: Path, rel: str | None) -> list[Path]:
    """``base/rel`` and each folder above it up to ``base`` (a quota anywhere above binds)."""
    dirs = [base]
    if rel:
        parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
        dirs += [base.joinpath(*parts[:k]) for k in range(1, len(parts) + 1)]
    return dirs


def cgroup_cpu_quota(
    root: str | Path = _CGROUP_ROOT, proc_cgroup: str | Path = _PROC_CGROUP
) -> float | None:
    """CPUs the cgroup CPU quota grants this process (e.g. 1.5), or None when there is none.

    Reads cgroup v2 ``cpu.max`` and v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in the
    process's own cgroup (from ``proc_cgroup``) and every cgroup above it, under ``root``; the
    smallest quota found binds. Missing or garbled files are ignored (never an error).

    Args:
        root: the cgroup mount (tests pass a folder of fake files).
        proc_cgroup: the ``/proc/self/cgroup`` file naming this process's cgroups.
    """
    root, proc_cgroup = Path(root), Path(proc_cgroup)
    v2, v1 = _own_paths(proc_cgroup)
    found: list[float] = []
    for d in _ancestors(root, v2):
        q = parse_cpu_max(_read(d / "cpu.max"))
        if q is not None:
            found.append(q)
    for ctl in ("cpu", "cpu,cpuacct", "cpuacct,cpu", "."):
        if not (root / ctl).is_dir():
            continue
        for d in _ancestors(root / ctl, v1):
            q = parse_cfs(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us"))
            if q is not None:
                found.append(q)
        break
    return min(found) if found else None


def available_cpus() -> int:
    """CPUs this process may use: the smallest of its affinity mask, its cgroup CPU quota
    (rounded up: a 1.5-CPU quota keeps 2 threads busy) and the machine's CPU count."""
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):  # Linux; absent on macOS and Windows
        counts.append(len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_quota()
    if quota is not None:
        counts.append(math.ceil(quota))
    return max(1, min(counts))


# --------------------------------------------------------------------------- thread count


def check_threads(value: object, name: str) -> int:
    """A thread count >= 1 from an int or its text; ValueError/TypeError naming ``name``."""
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise ValueError(f"{name}: expected a whole number of threads >= 1, got {value!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a whole number of threads >= 1, got {value}")
    return value


def resolve_threads(threads: int | str | None = None, *, default: int | None = None) -> int:
    """The thread count to use: the first set of ``threads``, ``$RECSYS_EBM_THREADS``,
    ``default`` (a pipeline file's ``threads``), ``$OMP_NUM_THREADS`` (when a plain number),
    else :func:`available_cpus`. Never more than :func:`available_cpus` (a larger request is
    lowered to it, with a ``RuntimeWarning``): threads beyond the CPUs only wait on each other.

    Raises:
        ValueError, TypeError: ``threads``, the variable or ``default`` is not a count >= 1.
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads is not None:
        n, source = check_threads(threads, "threads"), "threads"
    elif env:
        n, source = check_threads(env, THREADS_ENV), THREADS_ENV
    elif default is not None:
        n, source = check_threads(default, "threads"), "threads"
    elif omp.isdigit() and int(omp) >= 1:
        n, source = int(omp), "OMP_NUM_THREADS"
    else:
        return available_cpus()
    cap = available_cpus()
    if n > cap:
        warnings.warn(
            f"{source}={n} is more than the {cap} CPU(s) this process may use (affinity mask "
            f"and cgroup CPU quota); using {cap}",
            RuntimeWarning,
            stacklevel=2,
        )
        n = cap
    return n


def current_threads() -> int:
    """The count :func:`configure_threads` applied; before any call, :func:`resolve_threads`'s
    (what a library user gets: the variables, else the CPUs available)."""
    return _configured if _configured is not None else resolve_threads()


#: what :func:`prepare_openmp` sets when the user chose no wait policy
OPENMP_WAIT = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0"}


def prepare_openmp(environ: MutableMapping[str, str] | None = None) -> bool:
    """Make OpenMP's idle threads spin only briefly, then sleep, unless the user chose a
    policy (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` set): libgomp (torch's
    OpenMP on Linux) spins 1,000 times (microseconds) at a barrier before it sleeps
    (``GOMP_SPINCOUNT=1000``); Intel's and LLVM's runtimes sleep at once
    (``KMP_BLOCKTIME=0``). For entry points only, and only before torch is imported (OpenMP
    reads the variables once, when torch loads it); returns whether it was in time.

    Why: a thread that finishes its share of a parallel loop spins until the others finish. On
    a busy machine the others are often descheduled, so long-spinning threads burn the CPU time
    the late ones need. Measured 2026-11-27 on a 2-core machine loaded by other jobs: 3 RBM
    epochs on ML-100K with 2 threads took 172-175 s with libgomp's default spinning (300,000),
    37-51 s with ``GOMP_SPINCOUNT=10000`` and 20-29 s with ``OMP_WAIT_POLICY=PASSIVE``. But
    sleeping at once costs a wake-up at every parallel region, and training runs thousands of
    small ones: 2026-11-28, an early-stopped RBM fit on ML-100K (2 threads, 3 runs each) took
    2.8-3.1 s quiet and 3.6-5.3 s beside two busy loops with ``PASSIVE``, 1.9 s and 4.5-7.0 s
    with ``GOMP_SPINCOUNT=1000`` (``python benchmarks/openmp_wait.py``; benchmarks/README.md,
    "Busy machine").
    """
    env = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return False
    if not any(v in env for v in ("OMP_WAIT_POLICY", *OPENMP_WAIT)):
        env.update(OPENMP_WAIT)
    return True


def configure_threads(threads: int) -> int:
    """Apply ``threads`` to torch (intra-op; inter-op while still settable), numpy's BLAS
    (threadpoolctl), implicit's models (their ``num_threads=0``) and, through the variables,
    to libraries loaded later and to child processes. For entry points: it changes process-wide
    state. A library not loaded yet is not loaded here: torch, for one, takes the count from
    ``OMP_NUM_THREADS`` when it loads (so a command that fails early does not pay for it).
    Returns ``threads``.

    Raises:
        ValueError, TypeError: ``threads`` is not a count >= 1.
    """
    global _configured
    n = check_threads(threads, "threads")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)  # read by torch / BLAS / OpenMP libraries when they load
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
        try:  # settable once, before any inter-op work; later calls keep the first value
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass
    if "numpy" in sys.modules or "scipy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")  # the BLAS libraries loaded so far
    _configured = n
    return n
