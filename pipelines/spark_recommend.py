"""Batch recommendations on Apache Spark: the rows of ``recsys-ebm recommend``, as Parquet parts.

Run it with a local master::

    python pipelines/spark_recommend.py --model runs/ease --data runs/data --users test \\
        --n 20 --out runs/recs-spark --master "local[2]"

or on a cluster (recsys-ebm and its dependencies installed on every node; paths that every node
reads, or ``hdfs://`` / ``s3a://`` URIs for ``--out``)::

    spark-submit --master yarn --deploy-mode client pipelines/spark_recommend.py \\
        --model models:/ranker@champion --data /shared/data --users all --n 100 \\
        --out hdfs:///recs/2026-11-27

``--out`` is a directory of Parquet part files (``user_id, rank, item_id, energy,
model_version, fallback``), written to a temporary sibling and renamed when every task has
finished. Bad input (a missing model or dataset, bad ``--n``, an existing non-Spark ``--out``)
exits with status 2 and one ``error:`` line. See :mod:`recsys_ebm.jobs.spark`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="spark_recommend.py",
        description="Top-N recommendations for many users on Spark (recsys-ebm recommend's rows).",
    )
    p.add_argument(
        "--model",
        required=True,
        help="saved model directory, or a registered model models:/NAME@ALIAS (or /VERSION)",
    )
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument(
        "--users",
        default="all",
        help="'all', 'test' (users with test interactions) or a csv/parquet file of raw user ids",
    )
    p.add_argument("--n", type=int, default=100, help="list length per user, > 0 (default 100)")
    p.add_argument("--out", required=True, help="output directory of Parquet part files")
    p.add_argument(
        "--master",
        default=None,
        help="Spark master, e.g. local[2] (default: spark-submit's, or local[*] under python)",
    )
    p.add_argument("--chunk-size", type=int, default=2048, help="users per model call")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI for a models:/ --model"
    )
    return p.parse_args(argv)


def _bad_input() -> tuple[type[BaseException], ...]:
    from pyspark.errors import AnalysisException

    from recsys_ebm.jobs import BAD_INPUT

    return (*BAD_INPUT, AnalysisException)


def run(args: argparse.Namespace) -> str:
    """Score, write, and return the summary line."""
    from pyspark.sql import SparkSession

    from recsys_ebm.batch import model_version
    from recsys_ebm.jobs.spark import check_output, score_users, select_users, write_scores

    if args.n <= 0:
        raise ValueError(f"--n: expected a positive int (items per user), got {args.n}")
    if not (Path(args.data) / "manifest.json").is_file():
        raise FileNotFoundError(
            f"--data: {args.data} is not a prepared dataset (no manifest.json); "
            "run `recsys-ebm prepare --out DIR` first"
        )
    if "://" not in args.out or args.out.startswith("file:"):
        check_output(args.out)  # before Spark starts
    with tempfile.TemporaryDirectory(prefix="recsys-ebm-model-") as tmp:
        if args.model.startswith("models:/"):
            from recsys_ebm.registry import resolve_model_uri

            model_dir, version = resolve_model_uri(args.model, args.tracking_uri, tmp)
        else:
            model_dir = Path(args.model)
            if not (model_dir / "model.json").is_file():
                raise FileNotFoundError(
                    f"--model: no model.json in {model_dir} (not a saved model directory)"
                )
            version = model_version(model_dir)
        builder = SparkSession.builder.appName("recsys-ebm recommend")
        if args.master:
            builder = builder.master(args.master)
        spark = builder.getOrCreate()
        t0 = time.perf_counter()
        try:
            users = select_users(spark, args.data, args.users)
            scores = score_users(
                spark, users, model_dir, args.data, n=args.n, version=version,
                chunk_size=args.chunk_size,
            )  # fmt: skip
            out = write_scores(scores, args.out)
            rows = spark.read.parquet(out).count()
        finally:
            spark.stop()
    lines = [
        f"wrote {rows:,} recommendations for {scores.n_users:,} users to {out} "
        f"in {time.perf_counter() - t0:.1f}s"
    ]
    if scores.n < args.n:
        lines.insert(0, f"note: --n {args.n} capped at the catalogue size, {scores.n} items")
    if scores.unknown_users:
        lines.append(
            f"note: {scores.unknown_users} requested user ids are not in the dataset and were "
            "skipped (serve a ranker, whose popularity fallback answers users without history)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import importlib.util
    import os
    import shutil

    if importlib.util.find_spec("pyspark") is None:
        print("error: pyspark is not installed: pip install -e '.[spark]'", file=sys.stderr)
        return 2
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        print(
            "error: Spark needs a Java runtime (17 or 21): none on PATH and JAVA_HOME is unset "
            "(Debian/Ubuntu: apt-get install default-jre-headless)",
            file=sys.stderr,
        )
        return 2
    # pyspark warns about pandas 3 whenever mapInArrow is used; this job hands it no pandas
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    try:
        print(run(args))
    except _bad_input() as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        for python, flag in (
            ("model_dir: ", "--model: "),
            ("users: ", "--users: "),
            ("n: ", "--n: "),
            ("out: ", "--out: "),
            ("data: ", "--data: "),
        ):
            if text.startswith(python):
                text = flag + text[len(python) :]
        print(f"error: {text}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
