"""Bad inputs of ``register`` and of registry URIs (``recommend --model models:/...``), and of the
tracking store. Builders train into the case's own store (``sqlite:///<tmp>/mlflow.db``, the
store the subprocess uses)."""

from __future__ import annotations

from pathlib import Path

from tests.cli_cases import Case, World
from tests.cli_cases._world import dataset


def _store(t: Path) -> str:
    return f"sqlite:///{t / 'mlflow.db'}"


def _train_ease(w: World, t: Path, out: Path, l2: float, *extra: str) -> str:
    """Train EASE into ``out`` (in process) logged to the case's store; returns the run id."""
    from mlflow import MlflowClient

    from recsys_ebm.cli import main

    argv = ["train", "--data", str(dataset(w)), "--model", "ease", "--out", str(out)]
    argv += ["--overwrite", "--set", "l2_grid=[]", "--set", f"l2={l2}"]
    assert main([*argv, "--tracking-uri", _store(t), *extra]) == 0
    client = MlflowClient(_store(t))
    exp = client.get_experiment_by_name("recsys-ebm")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id


def _register_retrained_run(w: World, t: Path) -> list[str]:
    first = _train_ease(w, t, t / "ease", 10.0)
    _train_ease(w, t, t / "ease", 500.0)  # retrained into the same directory
    return ["register", "--run", first, "--name", "recs"]


def _register_dir_changed_without_mlflow(w: World, t: Path) -> list[str]:
    _train_ease(w, t, t / "ease", 10.0)
    _train_ease(w, t, t / "ease", 500.0, "--no-mlflow")
    return ["register", "--model-dir", str(t / "ease"), "--name", "recs"]


def _register_evaluate_run(w: World, t: Path) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(_store(t))
    exp = client.create_experiment("recsys-ebm")
    run = client.create_run(exp, tags={"stage": "evaluate"})
    return ["register", "--run", run.info.run_id, "--name", "recs"]


CASES = [
    Case(
        id="registry-register-run-of-a-retrained-dir",
        argv=_register_retrained_run,
        expect=("--run: run", "now holds", "register that one"),
    ),
    Case(
        id="registry-register-dir-changed-without-mlflow",
        argv=_register_dir_changed_without_mlflow,
        expect=("--model-dir:", "none of its 1 train run", "--no-mlflow"),
    ),
    Case(
        id="registry-register-no-such-run",
        argv=lambda w, t: ["register", "--run", "0" * 32, "--name", "recs"],
        expect=("--run: no run '" + "0" * 32 + "'",),
    ),
    Case(
        id="registry-register-not-a-train-run",
        argv=_register_evaluate_run,
        expect=("--run: run", "is not a `recsys-ebm train` run (its stage tag is 'evaluate'"),
    ),
    Case(
        id="registry-recommend-no-such-registered-model",
        argv=lambda w, t: [
            "recommend",
            "--model",
            "models:/no-such-model@champion",
            "--data",
            str(dataset(w)),
            "--out",
            str(t / "recs.parquet"),
        ],
        expect=("models:/no-such-model@champion", "no registered model 'no-such-model'"),
        absent=lambda w, t: [t / "recs.parquet"],
    ),
    Case(
        id="registry-train-sqlite-store-in-a-missing-dir",
        argv=lambda w, t: [
            "train",
            "--data",
            str(dataset(w)),
            "--model",
            "popularity",
            "--out",
            str(t / "pop"),
            "--tracking-uri",
            f"sqlite:///{t / 'no-such-dir' / 'mlflow.db'}",
        ],
        expect=("--tracking-uri", "does not exist"),
        absent=lambda w, t: [t / "pop"],
    ),
]
