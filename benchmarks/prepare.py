"""Benchmark the data pipeline: wall time and peak RSS of read + clean + k-core + split + CSR.

    python benchmarks/prepare.py [--ml100k PATH] [--interactions 10000000]

Each measured run is a fresh subprocess, so its peak RSS (ru_maxrss) is its own. Target on a
2-core machine: 10M interactions through k-core + split + CSR in <= 30 s and <= 4 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
print(json.dumps({
    "seconds": t1 - t_import, "import_seconds": t_import - t0,
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "users": ds.n_users, "items": ds.n_items,
    "interactions": {s: int(m.nnz) for s, m in zip(ds.splits, mats)},
    "raw": ds.manifest["counts"]["raw_events"],
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
        f"{name:<34} {r['raw']:>11,} events  {r['seconds']:7.2f} s  "
        f"peak RSS {r['peak_rss_gb']:.2f} GB"
        f"  -> {r['users']:,} users x {r['items']:,} items ({parts})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--ml100k",
        default=str(ROOT.parent / "shared" / "data" / "ml-100k"),
        help="MovieLens 100K folder (never copied into the repo); skipped if absent",
    )
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--items", type=int, default=50_000)
    args = ap.parse_args()

    print("pipeline: read -> dedupe/aggregate -> k-core -> random split -> vocab -> CSR")
    ml = Path(args.ml100k)
    if (ml / "u.data").is_file():
        report("MovieLens 100K (k-core 1/1)", measure(ml / "u.data", 1, 1))
    else:
        print(f"MovieLens 100K: skipped ({ml} not found)")
    report("ml-latest-small (bundled)", measure(ROOT / "data" / "ml-latest-small", 1, 1))

    from recsys_ebm.data.synthetic import planted_communities

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        log = planted_communities(
            n_users=args.users,
            n_items=args.items,
            n_interactions=args.interactions,
            n_communities=20,
            seed=0,
        ).drop("community")
        path = Path(tmp) / "synthetic.parquet"
        log.write_parquet(path)
        del log
        print(f"(generated synthetic log in {time.perf_counter() - t0:.1f} s, not timed below)")
        report(f"synthetic {args.interactions / 1e6:g}M (k-core 5/5)", measure(path, 5, 5))


if __name__ == "__main__":
    main()
