"""Spark batch scoring vs the batch job: users per second for the same users, the same model.

    python benchmarks/spark.py [--users 20000] [--items 2000] [--interactions 400000]
                               [--n 100] [--model ease|als] [--master local[2]] [--threads 2]

On a synthetic planted-community log, one model (EASE by default: it scores from the history,
so the Spark job must join every user's history) serves top-``n`` to every user twice:

* the batch job, ``recsys_ebm.batch.run_batch`` in this process (torch with ``--threads``),
* the Spark job, ``recsys_ebm.jobs.spark.score_users`` + ``write_scores`` on ``--master``
  (each Python worker scores with one thread; Spark sets ``OMP_NUM_THREADS`` to the task's
  cores): the history join, the scoring and the Parquet write, timed from an already started
  session; the session start-up is printed apart.

Both outputs are read back and compared (same rows; energies within 1e-5), so the figure is
for identical work. Each timing is the best of ``--repeats`` runs: these machines are shared.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--interactions", type=int, default=400_000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--model", choices=("ease", "als"), default="ease")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the batch job")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import polars as pl
    import torch
    from pyspark.sql import SparkSession

    from recsys_ebm.batch import model_version, run_batch
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.synthetic import planted_communities
    from recsys_ebm.jobs.spark import score_users, select_users, write_scores
    from recsys_ebm.models import load_model
    from recsys_ebm.models.ease import EASE
    from recsys_ebm.models.implicit_adapter import ALS

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="recsys-ebm-spark-bench-"))
    try:
        log = planted_communities(
            n_users=args.users, n_items=args.items, n_interactions=args.interactions, seed=0
        )
        log.drop("community").write_parquet(root / "log.parquet")
        ds = prepare_dataset(root / "log.parquet", seed=0)
        ds.save(root / "data")
        if args.model == "ease":
            model = EASE(l2=200.0, l2_grid=(), device="cpu").fit_dataset(ds)
        else:
            model = ALS(factors=64, epochs=3, num_threads=args.threads).fit_dataset(ds)
        model.save(root / "model")
        version = model_version(root / "model")
        served = load_model(root / "model")
        print(
            f"{ds.n_users:,} users x {ds.n_items:,} items, "
            f"{sum(ds.summary()['interactions'].values()):,} interactions; model {args.model}, "
            f"top-{args.n}; batch job: 1 process x {args.threads} threads; Spark: {args.master}"
        )

        def batch() -> None:
            out = root / "batch.parquet"
            run_batch(served, ds, out, n=args.n, version=version, progress=False)

        t0 = time.perf_counter()
        spark = (
            SparkSession.builder.master(args.master)
            .appName("recsys-ebm spark benchmark")
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")
        start_s = time.perf_counter() - t0

        def on_spark() -> None:
            users = select_users(spark, root / "data", "all")
            scores = score_users(spark, users, root / "model", root / "data", n=args.n,
                                 version=version)  # fmt: skip
            write_scores(scores, root / "spark-out")

        timings = {}
        for name, fn in (("batch job", batch), ("spark job", on_spark)):
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            timings[name] = best
        spark.stop()

        key = ["user_id", "rank"]
        want = pl.read_parquet(root / "batch.parquet").sort(key)
        got = pl.read_parquet(sorted((root / "spark-out").glob("part-*.parquet"))).sort(key)
        assert got.drop("energy").equals(want.drop("energy")), "Spark rows differ from the batch"
        gap = float(np.max(np.abs(got["energy"].to_numpy() - want["energy"].to_numpy())))
        print(f"spark session start-up: {start_s:.1f} s (not counted below)")
        for name, s in timings.items():
            print(f"{name:>10}: {s:7.2f} s  {ds.n_users / s:10,.0f} users/s")
        print(
            f"spark / batch throughput: {timings['batch job'] / timings['spark job']:.2f}x; "
            f"{want.height:,} identical rows (max |energy gap| {gap:.1e})"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
