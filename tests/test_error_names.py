"""Python errors name Python arguments; the CLI translates them to its flags.

The library (batch, registry, tracking, data layer, config) raises messages that start with the
argument of the function the caller called (``n: ...``, ``run_id: ...``, ``input: ...``) and
name other arguments in backquotes or as ``name=True``; the CLI (:func:`recsys_ebm.jobs._base.
to_flags`, with each job's fields and its :attr:`~recsys_ebm.jobs._base.JobConfig.ARGUMENTS`)
shows the same message with the flags the user typed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from recsys_ebm.jobs import JOBS, job_config
from recsys_ebm.jobs._base import to_flags
from recsys_ebm.jobs.prepare import PrepareJob
from recsys_ebm.jobs.recommend import RecommendJob
from recsys_ebm.jobs.register import RegisterJob
from recsys_ebm.jobs.train import TrainJob

ROOT = Path(__file__).resolve().parents[1]


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error(r: subprocess.CompletedProcess, command: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith(f"recsys-ebm {command}: error:"))
    return line.removeprefix(f"recsys-ebm {command}: error: ")


# ------------------------------------------------------------------------- the translation rule
@pytest.mark.parametrize("kind", sorted(JOBS))
def test_every_argument_alias_names_a_field(kind):
    cls = job_config(kind)
    fields = {f.name for f in dataclasses.fields(cls)}
    for argument, field in cls.ARGUMENTS.items():
        assert field in fields, f"{kind}: {argument} -> {field}, not a field"
        assert argument not in fields, f"{kind}: {argument} is a field already"
    flags = cls.message_flags()
    assert {k: flags[k] for k in fields} == cls.flags()


def test_translation_of_leading_names_switches_and_quoted_names():
    rec = RecommendJob.message_flags()
    # a field whose flag differs from its name, and Python arguments that are no field
    assert (
        to_flags("history_file: h.csv lacks column(s)", rec) == "--history: h.csv lacks column(s)"
    )
    assert (
        to_flags("uri: expected models:/NAME@ALIAS", rec) == "--model: expected models:/NAME@ALIAS"
    )
    assert (
        to_flags("resume: x holds chunks: the `dataset` changed; rerun without resume=True", rec)
        == "--resume: x holds chunks: the --data changed; rerun without --resume"
    )
    assert (
        to_flags("out: busy; wait for it to finish, or choose another `out`", rec)
        == "--out: busy; wait for it to finish, or choose another --out"
    )
    assert (
        to_flags("chunk_size: expected a positive int", rec)
        == "--chunk-size: expected a positive int"
    )
    reg = RegisterJob.message_flags()
    assert (
        to_flags("model_dir: changed without MLflow (no_mlflow=True); pass `run_id`", reg)
        == "--model-dir: changed without MLflow (--no-mlflow); pass --run"
    )
    assert to_flags("run_id: no run 'x'", reg) == "--run: no run 'x'"
    train = TrainJob.message_flags()
    assert (
        to_flags("config_file: file not found: c.toml", train) == "--config: file not found: c.toml"
    )
    assert to_flags("overrides: empty key in '=3'", train) == "--set: empty key in '=3'"
    prep = PrepareJob.message_flags()
    assert (
        to_flags("path: d contains the `test_file` path t; choose an `path` outside it", prep)
        == "--out: d contains the --test path t; choose an --out outside it"
    )
    assert (
        to_flags("x.csv: pass `format` csv with `user_col` / `item_col`", prep)
        == "x.csv: pass --format csv with --user-col / --item-col"
    )
    # not a name of this command, not a bare identifier, or not quoted: unchanged
    assert to_flags("`history_file` of `recsys-ebm train`", prep) == (
        "`history_file` of `recsys-ebm train`"
    )
    assert to_flags("the out path", prep) == "the out path"


# ------------------------------------------------ the same bad input: Python names, CLI flags
def test_run_batch_names_n_and_the_cli_names_flag_n(tmp_path):
    from recsys_ebm.batch import parse_shard, run_batch

    dataset = SimpleNamespace(n_items=5)  # check_n runs before anything reads the model
    with pytest.raises(ValueError, match=r"^n: expected a positive int \(items per user\), got 0"):
        run_batch(None, dataset, tmp_path / "recs.parquet", n=0)
    with pytest.raises(ValueError, match=r"^chunk_size: expected a positive int"):
        run_batch(None, dataset, tmp_path / "recs.parquet", chunk_size=0)
    with pytest.raises(ValueError, match=r"^shard: expected I/N"):
        parse_shard("x")

    r = _cli("recommend", "--model", "m", "--data", "d", "--out", "recs.parquet", "--n", "0",
             "--no-mlflow", cwd=tmp_path)  # fmt: skip
    assert _error(r, "recommend").startswith("--n: expected a positive int (items per user)")
    r = _cli("recommend", "--model", "m", "--data", "d", "--out", "recs.parquet", "--shard", "x",
             "--no-mlflow", cwd=tmp_path)  # fmt: skip
    assert _error(r, "recommend").startswith("--shard: expected I/N")


def test_prepare_dataset_names_its_arguments_and_the_cli_names_flags(tmp_path):
    from recsys_ebm.data.prepare import prepare_dataset

    train = tmp_path / "train.csv"
    train.write_text("user_id,item_id\n1,10\n1,11\n2,10\n")
    with pytest.raises(FileNotFoundError, match=r"^input: file not found: .*nope\.csv"):
        prepare_dataset(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match=r"^test_file: file not found: .*missing\.csv"):
        prepare_dataset(train, split="predefined", test_file=str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match=r"^separator: expected one single-byte character"):
        prepare_dataset(train, format="csv", separator=";;")

    r = _cli("prepare", "--input", "nope.csv", "--out", "ds", cwd=tmp_path)
    assert _error(r, "prepare").startswith("--input: file not found:")
    r = _cli("prepare", "--input", "train.csv", "--split", "predefined", "--test", "missing.csv",
             "--out", "ds", cwd=tmp_path)  # fmt: skip
    assert _error(r, "prepare").startswith("--test: file not found:")
    r = _cli("prepare", "--input", "train.csv", "--format", "csv", "--separator", ";;", "--out",
             "ds", cwd=tmp_path)  # fmt: skip
    assert _error(r, "prepare").startswith("--separator: expected one single-byte character")
    # an input inside the output: the other argument named in the message is translated too
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "ratings.csv").write_text(train.read_text())
    r = _cli("prepare", "--input", "logs/ratings.csv", "--out", "logs", "--overwrite",
             cwd=tmp_path)  # fmt: skip
    msg = _error(r, "prepare")
    assert msg.startswith("--out: logs contains the --input path"), msg
    assert "choose an --out outside it" in msg
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "x").write_text("")
    r = _cli("prepare", "--input", "train.csv", "--out", "ds", cwd=tmp_path)
    assert "(pass --overwrite to replace it)" in _error(r, "prepare")


def test_register_model_names_run_id_and_the_cli_names_flag_run(tmp_path):
    from recsys_ebm.registry import register_model

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = "0" * 32
    with pytest.raises(ValueError, match=rf"^run_id: no run '{run_id}' in the tracking store"):
        register_model("x", run_id=run_id, tracking_uri=store)
    with pytest.raises(ValueError, match=r"^run_id: give exactly one of `run_id` and `model_dir`"):
        register_model("x", tracking_uri=store)
    with pytest.raises(ValueError, match=r"^tracking_uri: the directory of the SQLite store"):
        register_model("x", run_id=run_id, tracking_uri=f"sqlite:///{tmp_path}/no/such/m.db")

    r = _cli("register", "--run", run_id, "--name", "x", "--tracking-uri", store, cwd=tmp_path)
    assert _error(r, "register").startswith(f"--run: no run '{run_id}' in the tracking store")
