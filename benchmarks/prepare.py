"""Benchmark ``prepare``: wall time and peak RSS of read + clean + k-core + split + CSR.

    python benchmarks/prepare.py [--events 50000000] [--in-memory] [--ml100k PATH]

Rows: the real logs (MovieLens 100K when present, the bundled ml-latest-small; in-memory
path), then a synthetic planted-communities log written as partitioned Parquet (``--part-rows``
events per file, so building it never holds the whole log) and prepared from its directory with
polars' streaming engine: at 10M events, and at ``--events`` when larger, so growth is visible.
Users = events / 20 and items = events / 200 (10M: 500k x 50k, as in the earlier benchmark);
k-core 5/5, random 70/10/20 split. ``--in-memory`` also prepares the 10M log from one Parquet
file with the in-memory path, for comparison.

Each measured run is a fresh subprocess, so its peak RSS (ru_maxrss) and CPU time (user + system,
import included) are its own; on a shared machine the CPU time is the steadier figure. Targets on
the 2-core machine: 50M events in <= 150 s and <= 12 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from recsys_ebm.data.prepare import prepare_dataset
t_import = time.perf_counter()
ds = prepare_dataset(sys.argv[1], min_user_interactions=int(sys.argv[2]),
                     min_item_interactions=int(sys.argv[3]), split="random",
                     test_fraction=0.2, valid_fraction=0.1, seed=0)
mats = [ds.matrix(s) for s in ds.splits]  # CSR of every split
t1 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "seconds": t1 - t_import, "import_seconds": t_import - t0,
    "cpu_seconds": ru.ru_utime + ru.ru_stime,
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "users": ds.n_users, "items": ds.n_items,
    "interactions": {s: int(m.nnz) for s, m in zip(ds.splits, mats)},
    "raw": ds.manifest["counts"]["raw_events"], "fingerprint": ds.fingerprint,
}))
"""


def measure(path: Path, min_user: int, min_item: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(min_user), str(min_item)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name: str, r: dict) -> None:
    parts = ", ".join(f"{k} {v:,}" for k, v in r["interactions"].items())
    print(
        f"{name:<38} {r['raw']:>11,} events  {r['seconds']:7.2f} s  "
        f"(CPU {r['cpu_seconds']:.0f} s)  peak RSS {r['peak_rss_gb']:.2f} GB"
        f"  -> {r['users']:,} users x {r['items']:,} items ({parts})",
        flush=True,
    )


def write_partitioned_log(
    folder: Path,
    n_events: int,
    n_users: int,
    n_items: int,
    *,
    part_rows: int = 5_000_000,
    n_communities: int = 20,
    in_community: float = 0.8,
    seed: int = 0,
) -> list[Path]:
    """The planted-communities log of :func:`recsys_ebm.data.synthetic.planted_communities`
    (uniform users, Zipf item popularity, a user's community preferred with probability
    ``in_community``, higher ratings inside it), drawn ``part_rows`` events at a time from one
    fixed set of communities and popularities, one Parquet file per part; time increases from
    part to part."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    user_comm = rng.integers(0, n_communities, n_users)
    item_comm = np.arange(n_items) % n_communities
    weights = np.arange(1, n_items + 1, dtype=np.float64) ** -1.0
    weights = weights[rng.permutation(n_items)]
    cdf = np.cumsum(weights) / weights.sum()
    pools = [np.flatnonzero(item_comm == c) for c in range(n_communities)]
    pool_cdfs = [np.cumsum(weights[p]) / weights[p].sum() for p in pools]
    n_parts = -(-n_events // part_rows)
    start, span = 1_600_000_000, 86_400 * 365
    files = []
    for k in range(n_parts):
        n = min(part_rows, n_events - k * part_rows)
        r = np.random.default_rng([seed, k])
        users = r.integers(0, n_users, n)
        items = np.minimum(np.searchsorted(cdf, r.random(n)), n_items - 1)
        inside = r.random(n) < in_community
        comm = user_comm[users]
        for c in range(n_communities):
            sel = np.flatnonzero(inside & (comm == c))
            draw = np.searchsorted(pool_cdfs[c], r.random(len(sel)))
            items[sel] = pools[c][np.minimum(draw, len(pools[c]) - 1)]
        match = comm == item_comm[items]
        rating = np.where(match, r.integers(4, 6, n), r.integers(1, 4, n)).astype(np.float64)
        lo, hi = start + span * k // n_parts, start + span * (k + 1) // n_parts
        f = folder / f"part-{k:05d}.parquet"
        pl.DataFrame(
            {
                "user_id": users,
                "item_id": items.astype(np.int64),
                "rating": rating,
                "timestamp": np.sort(r.integers(lo, hi, n)),
            }
        ).write_parquet(f)
        files.append(f)
    return files


def synthetic(events: int, args: argparse.Namespace, in_memory: bool) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp) / "log"
        t0 = time.perf_counter()
        files = write_partitioned_log(
            folder, events, events // 20, events // 200, part_rows=args.part_rows
        )
        size = sum(f.stat().st_size for f in files) / 2**20
        print(
            f"(wrote {events:,} events as {len(files)} Parquet files, {size:,.0f} MiB, in "
            f"{time.perf_counter() - t0:.1f} s, not timed below)",
            flush=True,
        )
        report(f"synthetic {events / 1e6:g}M, directory (streaming)", measure(folder, 5, 5))
        if in_memory:
            single = Path(tmp) / "log.parquet"
            pl.scan_parquet(files).sink_parquet(single)
            report(f"synthetic {events / 1e6:g}M, one file (in-memory)", measure(single, 5, 5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--ml100k",
        default=str(ROOT.parent / "shared" / "data" / "ml-100k"),
        help="MovieLens 100K folder (never copied into the repo); skipped if absent",
    )
    ap.add_argument("--events", type=int, default=10_000_000, help="largest synthetic log")
    ap.add_argument("--part-rows", type=int, default=5_000_000, help="events per Parquet file")
    ap.add_argument(
        "--in-memory", action="store_true", help="also the in-memory path on the 10M log"
    )
    ap.add_argument("--skip-real", action="store_true", help="skip the MovieLens rows")
    ap.add_argument("--tmp", default=None, help="folder for the synthetic logs (default: $TMPDIR)")
    args = ap.parse_args()
    if args.events <= 0 or args.part_rows <= 0:
        raise ValueError(f"events / part_rows: expected > 0, got {args.events} / {args.part_rows}")

    print("pipeline: read -> dedupe/aggregate -> k-core -> random split -> vocab -> CSR")
    if not args.skip_real:
        ml = Path(args.ml100k)
        if (ml / "u.data").is_file():
            report("MovieLens 100K (k-core 1/1)", measure(ml / "u.data", 1, 1))
        else:
            print(f"MovieLens 100K: skipped ({ml} not found)")
        report("ml-latest-small (bundled)", measure(ROOT / "data" / "ml-latest-small", 1, 1))
    sizes = sorted({min(10_000_000, args.events), args.events})
    for events in sizes:
        synthetic(events, args, in_memory=args.in_memory and events == sizes[0])


if __name__ == "__main__":
    main()
