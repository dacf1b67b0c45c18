"""Batch scoring on Spark (local[2]) gives the batch job's rows: same users, ranks and items,
energies within float tolerance; histories joined inside the job; the batch job's fallback."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

if importlib.util.find_spec("pyspark") is None:
    pytest.skip("pyspark is not installed (pip install -e '.[spark]')", allow_module_level=True)
if shutil.which("java") is None:
    pytest.skip(
        "no Java runtime on PATH (Spark needs one: apt-get install default-jre-headless)",
        allow_module_level=True,
    )

from recsys_ebm.batch import model_version, run_batch  # noqa: E402
from recsys_ebm.data.prepare import prepare_dataset  # noqa: E402
from recsys_ebm.data.synthetic import planted_communities  # noqa: E402
from recsys_ebm.jobs.spark import OUTPUT_COLUMNS, score_users, select_users  # noqa: E402
from recsys_ebm.models.ease import EASE  # noqa: E402
from recsys_ebm.models.implicit_adapter import ALS  # noqa: E402

# pyspark's mapInArrow checks the pandas version even though no pandas is involved
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)

ROOT = Path(__file__).resolve().parents[1]
KEY = ["user_id", "rank"]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("recsys-ebm tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    log = planted_communities(n_users=150, n_items=60, n_interactions=3_000, seed=5)
    root = tmp_path_factory.mktemp("spark")
    log.drop("community").write_parquet(root / "log.parquet")
    ds = prepare_dataset(root / "log.parquet", seed=0)
    ds.save(root / "data")
    ease = EASE(l2=20.0, l2_grid=(), device="cpu").fit_dataset(ds)
    ease.save(root / "ease")
    als = ALS(factors=8, epochs=3, num_threads=1).fit_dataset(ds)
    als.save(root / "als")
    return ds, root


def batch_rows(model_dir: Path, ds, out: Path, users: str, n: int) -> pl.DataFrame:
    from recsys_ebm.models import load_model

    run_batch(
        load_model(model_dir), ds, out, users=users, n=n, chunk_size=32,
        version=model_version(model_dir), progress=False,
    )  # fmt: skip
    return pl.read_parquet(out)


def spark_rows(spark, model_dir: Path, data: Path, users, n: int, tmp: Path, ship=None):
    scores = score_users(
        spark, users, model_dir, data, n=n, version=model_version(model_dir), ship_model=ship
    )
    scores.frame.write.parquet(str(tmp / "spark-out"))
    return pl.read_parquet(tmp / "spark-out" / "*.parquet"), scores


def assert_same_rows(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == list(OUTPUT_COLUMNS)
    assert got.schema == want.schema  # same dtypes: Int64/String ids, Int32 rank, Float32
    got, want = got.sort(KEY), want.sort(KEY)
    assert got.height == want.height
    assert got.drop("energy").equals(want.drop("energy"))
    np.testing.assert_allclose(got["energy"], want["energy"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "users", "ship"), [("ease", "all", False), ("als", "test", True)]
)
def test_spark_rows_equal_the_batch_jobs(spark, setup, tmp_path, model, users, ship):
    """EASE scores from the history joined in Spark; ALS serves known users from its factors
    (its model files broadcast to the workers, as on a cluster)."""
    ds, root = setup
    want = batch_rows(root / model, ds, tmp_path / "batch.parquet", users, n=7)
    users_df = select_users(spark, root / "data", users)
    got, scores = spark_rows(spark, root / model, root / "data", users_df, 7, tmp_path, ship)
    assert scores.n_users == want["user_id"].n_unique() and scores.unknown_users == 0
    assert_same_rows(got, want)
    # the histories really reached the workers: nothing a user has seen is recommended
    hist = ds.history("test")
    seen = {(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(*hist.nonzero(), strict=True)}
    assert not seen & set(zip(got["user_id"], got["item_id"], strict=True))
    assert not got["fallback"].any()


def test_users_without_history_get_the_batch_jobs_fallback(spark, setup, tmp_path):
    from recsys_ebm.models import load_model
    from recsys_ebm.ranking import Ranker

    ds, root = setup
    ranker = Ranker.from_fitted([load_model(root / "ease")], ds.train, device="cpu")
    ranker.item_ids, ranker.user_ids = ds.item_ids, ds.user_ids
    ranker.save(root / "ranker")
    ids = tmp_path / "users.csv"
    ids.write_text(f"user_id\n{ds.user_ids[3]}\nghost\n{ds.user_ids[9]}\nghost\n")
    users = select_users(spark, root / "data", str(ids))
    want = batch_rows(root / "ranker", ds, tmp_path / "batch.parquet", str(ids), n=5)
    got, scores = spark_rows(spark, root / "ranker", root / "data", users, 5, tmp_path)
    assert scores.n_users == 3 and scores.unknown_users == 0
    assert_same_rows(got, want)
    ghost = got.filter(pl.col("user_id") == "ghost")
    assert ghost.height == 5 and ghost["fallback"].all()
    assert not got.filter(pl.col("user_id") != "ghost")["fallback"].any()

    # a model without a fallback: the unknown id is left out and counted, not dropped silently
    want = batch_rows(root / "ease", ds, tmp_path / "batch-ease.parquet", str(ids), n=5)
    shutil.rmtree(tmp_path / "spark-out")
    got, scores = spark_rows(spark, root / "ease", root / "data", users, 5, tmp_path)
    assert scores.unknown_users == 1 and scores.n_users == 2
    assert_same_rows(got, want)
    assert set(got["user_id"]) == {ds.user_ids[3], ds.user_ids[9]}


def test_bad_users_are_refused(spark, setup):
    ds, root = setup
    blank = spark.createDataFrame([(str(ds.user_ids[0]),), ("  ",)], "user_id string")
    with pytest.raises(ValueError, match="users: 1 distinct empty user_id"):
        score_users(spark, blank, root / "ease", root / "data", n=3)
    flags = spark.createDataFrame([(True,)], "user_id boolean")
    with pytest.raises(TypeError, match="users: expected a user_id column of integers or str"):
        score_users(spark, flags, root / "ease", root / "data", n=3)
    with pytest.raises(ValueError, match="n: expected a positive int"):
        score_users(
            spark, select_users(spark, root / "data", "all"), root / "ease", root / "data", n=0
        )


def test_example_job_runs_as_a_subprocess(setup, tmp_path):
    ds, root = setup
    script = ROOT / "pipelines" / "spark_recommend.py"
    out = tmp_path / "recs"
    cmd = [sys.executable, str(script), "--model", str(root / "ease"), "--data",
           str(root / "data"), "--users", "test", "--n", "4", "--master", "local[2]"]  # fmt: skip
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "recommendations for" in r.stdout
    parts = sorted(out.glob("part-*.parquet"))
    assert parts and (out / "_SUCCESS").is_file()
    assert not list(tmp_path.glob(".recs.tmp-*"))  # the temporary directory was renamed
    want = batch_rows(root / "ease", ds, tmp_path / "batch.parquet", "test", n=4)
    assert_same_rows(pl.read_parquet(parts), want)

    # bad input: one error line and exit 2, before any Spark work
    bad = subprocess.run(
        [*cmd[:-2], "--out", str(tmp_path / "x"), "--data", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "error: --data:" in bad.stderr
    (tmp_path / "file").write_text("not a Spark output")
    bad = subprocess.run([*cmd, "--out", str(tmp_path / "file")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "error: --out:" in bad.stderr and "_SUCCESS" in bad.stderr
