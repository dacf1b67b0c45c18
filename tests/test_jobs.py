"""The typed job layer: configs round-trip through TOML, the CLI's flags are the configs' fields,
Python callers read Python argument names while the CLI shows flags, and pipelines wire their
stages from the jobs' declared inputs and outputs."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs import JOBS, job_config
from recsys_ebm.jobs._base import to_flags
from recsys_ebm.jobs.anomalies import AnomaliesJob
from recsys_ebm.jobs.evaluate import EvaluateJob
from recsys_ebm.jobs.prepare import PrepareJob
from recsys_ebm.jobs.recommend import RecommendJob
from recsys_ebm.jobs.train import TrainJob, train
from recsys_ebm.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted((ROOT / "pipelines").glob("*.toml"))


def _stage_configs() -> list:
    configs = []
    for path in PIPELINES:
        configs += [st.config for st in load_pipeline(path).stages]
    # anomalies is no pipeline stage; one config with every field away from its default
    configs.append(AnomaliesJob(model="m", data="d", split="history", out="a.csv", top=3))
    return configs


def test_pipelines_cover_every_pipeline_job_type():
    kinds = {c.KIND for c in _stage_configs()}
    assert kinds == set(JOBS), f"no pipeline here builds {set(JOBS) - kinds}"


@pytest.mark.parametrize("config", _stage_configs(), ids=lambda c: c.KIND)
def test_every_stage_config_round_trips_through_toml(config):
    text = config.to_toml()
    back = type(config).from_toml(text)
    assert back == config
    assert back.to_toml() == text


def test_toml_refuses_a_none_that_would_read_back_as_the_default():
    job = PrepareJob(out="d", rating_col=None)
    with pytest.raises(ValueError, match="rating_col: None cannot be written to TOML"):
        job.to_toml()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from recsys_ebm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_cli_flags_are_the_config_fields(kind):
    cls = job_config(kind)
    actions = {
        a.dest: a
        for a in _subparsers()[kind]._actions
        # --help, --verbose and --threads are the command line's own, on every subcommand
        if a.option_strings and a.dest not in ("help", "verbose", "threads")
    }
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(actions) == set(fields)
    for name, f in fields.items():
        action = actions[name]
        assert action.option_strings == [cls.flags()[name]], name
        required = f.default is dataclasses.MISSING
        in_group = f.metadata.get("exclusive") is not None  # one of a required group
        assert action.required == (required and not in_group), name
        if not required:
            default = tuple(action.default) if isinstance(action.default, list) else action.default
            assert default == f.default, name
        assert action.help.replace("%%", "%") == f.metadata["help"], name
        if f.metadata.get("choices") is not None:
            assert tuple(action.choices) == f.metadata["choices"], name


def test_messages_translate_leading_argument_and_switches():
    flags = EvaluateJob.flags()
    assert (
        to_flags("models: x was trained on 3 items", flags) == "--model: x was trained on 3 items"
    )
    assert to_flags("EvaluateJob.k: expected an int", flags) == "--k: expected an int"
    assert (
        to_flags("report: r exists (pass overwrite=True to replace it)", flags)
        == "--report: r exists (pass --overwrite to replace it)"
    )
    # not a field of this job, or not at the start: unchanged
    assert to_flags("ratings.csv: empty input", flags) == "ratings.csv: empty input"
    assert to_flags("the out: x", flags) == "the out: x"


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_distributed_takes_the_data_parallel_models_and_refuses_the_others():
    for model in ("rbm", "softmax-rbm", "retriever"):
        TrainJob(data="d", model=model, out="o", distributed=True)  # validates
    with pytest.raises(ConfigError, match=r"^distributed: expected a model with data-parallel"):
        TrainJob(data="d", model="ease", out="o", distributed=True)


def test_python_errors_name_arguments_and_the_cli_names_flags(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    job = TrainJob(data=str(tmp_path / "data"), model="popularity", out=str(out), no_mlflow=True)
    with pytest.raises(FileExistsError, match=r"^out: .* exists \(pass overwrite=True"):
        train(job)
    with pytest.raises(ConfigError, match=r"^n: expected a positive int"):
        RecommendJob(model="m", data="d", out="o.parquet", n=0)
    with pytest.raises(ConfigError, match=r"^out: expected a .parquet or .csv file"):
        AnomaliesJob(model="m", data="d", out="scores.txt")

    r = _cli("train", "--data", "data", "--model", "popularity", "--out", "model", "--no-mlflow",
             cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "recsys-ebm train: error: --out: model exists (pass --overwrite to replace it)" in (
        r.stderr
    )
    r = _cli("anomalies", "--model", "m", "--data", "d", "--out", "scores.txt", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "recsys-ebm anomalies: error: --out: expected a .parquet or .csv file" in r.stderr
    assert "Traceback" not in r.stderr


def test_pipeline_stage_graph_comes_from_declared_inputs_and_outputs():
    pipe = load_pipeline(ROOT / "pipelines" / "quickstart.toml", run_dir="runs/x")
    st = {s.name: s for s in pipe.stages}
    assert st["train.ease"].upstream == ["prepare"]
    # the ranker reads its components' directories: it runs after (and reruns with) them
    assert set(st["train.ranker"].upstream) == {
        "prepare", "train.ease", "train.als", "train.rbm", "train.retriever"
    }  # fmt: skip
    assert set(st["evaluate"].upstream) == {"prepare", *(n for n in st if n.startswith("train."))}
    # registry edges: the metric of evaluate, the champion that register leaves
    assert set(st["register"].upstream) == {"evaluate", "train.ranker"}
    assert "register" in st["recommend"].upstream
    assert st["train.ease"].config.input_paths() == [Path("runs/x/data")]
    assert st["prepare"].config.output_paths() == [Path("runs/x/data")]


def test_stage_hash_follows_config_and_input_content(tmp_path):
    model_toml = tmp_path / "ease.toml"
    model_toml.write_text("l2 = 100.0\n")
    pipe_file = tmp_path / "p.toml"
    pipe_file.write_text(
        "[pipeline]\nname = 'p'\n[prepare]\n"
        f"[train.ease]\nmodel = 'ease'\nconfig = '{model_toml}'\n"
    )

    def digests(*sets: str) -> dict[str, str]:
        pipe = load_pipeline(pipe_file, list(sets), run_dir=tmp_path / "run")
        return {s.name: s.digest for s in pipe.stages}

    first = digests()
    assert digests() == first  # deterministic
    changed = digests("prepare.seed=1")
    assert changed["prepare"] != first["prepare"]
    assert changed["train.ease"] != first["train.ease"]  # downstream of a changed stage
    model_toml.write_text("l2 = 2500.0\n")  # the config file is an input (its content)
    after = digests()
    assert after["prepare"] == first["prepare"]
    assert after["train.ease"] != first["train.ease"]
