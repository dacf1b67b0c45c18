"""Pipelines: TOML files that chain ``prepare -> train -> evaluate -> register -> recommend``.

A pipeline file declares stages; each stage's keys are the options of the CLI subcommand of the
same name (``test_fraction`` = ``--test-fraction``), so anything a user can type, a pipeline can
declare. Example (``pipelines/quickstart.toml``)::

    [pipeline]
    name = "quickstart"
    run_dir = "runs/quickstart"          # stage outputs live here

    [prepare]
    split = "random"

    [train.ease]                         # one table per model; the table name is the model id
    model = "ease"
    set = { l2 = 200.0 }                 # config overrides, as --set key=value

    [train.ranker]                       # a blend of models trained above:
    model = "ranker"
    components = ["ease", "rbm"]         # names of [train.NAME] stages (their model directories)

    [evaluate]
    k = "10,20,50"                       # models default to every trained model

    [register]                           # MLflow registry; needs evaluate for the metric
    model = "ranker"
    name = "quickstart-ranker"
    promote_if_better = "ndcg@10"

    [recommend]
    model = "models:/quickstart-ranker@champion"   # or a [train.NAME], or a model directory
    n = 100

``components`` (pipeline key, train tables only) makes a composite model, the ranker, out of
other train stages: each name must be a ``[train.NAME]`` table of the same file; its model
directory is passed as ``--set components=[...]``, and the stage depends on those stages (it
runs after them, and reruns when they do). Registry names under ``set.components`` are still
trained by the ranker itself.

``recsys-ebm run FILE`` runs the stages in order inside one MLflow parent run (stage runs nest
under it). A stage whose resolved options and upstream outputs are unchanged is skipped by
content hash; ``--force`` reruns everything. A stage that logs to MLflow also reruns when the
tracking store differs from the one it last logged to; ``register`` is skipped when MLflow is
off.

``recommend`` serves a ``[train.NAME]`` of the pipeline, a model directory, or a registered model
``models:/NAME@ALIAS``. When NAME is the model this pipeline's ``register`` stage registers, the
recommend stage runs after it and reruns whenever it does, so the list comes from the champion
as it stands after this run's promotion decision. A registry reference needs MLflow: with MLflow
off the stage is skipped and says why. (An alias moved by someone else, outside this pipeline, is
not seen by the content hash: ``--force`` reruns the stage.)

Safety. The whole file is checked before any stage runs: stage keys and option types, stage
names (plain identifiers: ``[train.NAME]`` becomes ``RUN_DIR/models/NAME``), and each train
stage's model config, built from its ``config`` file and ``set`` keys as ``train`` will build it
(a ranker's components and ``component_config`` included). One run at a time per run directory:
``RUN_DIR/.lock`` is held for the whole run, and a second run fails at once (exit 2). Stage
stamps (``RUN_DIR/.stages/STAGE.json``) are written atomically; an unreadable one means "not
done". A run starts by removing the temporaries a killed run left beside its outputs. A stage
that fails on bad input makes ``run`` exit 2 (after the stage's own message); any other failure
exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_ebm._pipeline_checks import (
    check_pipeline_name,
    check_stage_name,
    check_train_config,
    toml_value,
)
from recsys_ebm._pipeline_run import (
    RunDirLocked,
    StageFailed,
    clean_stale,
    lock_run_dir,
    read_stamp,
    write_stamp,
)
from recsys_ebm.diagnostics import ConfigError

__all__ = [
    "STAGES",
    "Pipeline",
    "RunDirLocked",
    "Stage",
    "StageFailed",
    "load_pipeline",
    "run_pipeline",
]

STAGES = ("prepare", "train", "evaluate", "register", "recommend")
_PIPELINE_KEYS = {"name", "run_dir", "tracking_uri", "experiment"}
# options the runner fills in itself (outputs and inputs wired between stages)
_MANAGED = {
    "prepare": {"out", "overwrite", "func"},
    "train": {"data", "out", "overwrite", "func", "overrides"},
    "evaluate": {"data", "report", "overwrite", "func"},
    "register": {"func", "run_id", "model_dir"},
    "recommend": {"data", "out", "func"},
}
_TRACKING = {"tracking_uri", "experiment", "no_mlflow"}


@dataclass
class Stage:
    """One resolved stage: the CLI argv it runs, its output path and its content hash."""

    kind: str
    name: str
    argv: list[str]
    output: Path | None
    upstream: list[str] = field(default_factory=list)
    digest: str = ""


@dataclass
class Pipeline:
    path: Path
    name: str
    run_dir: Path
    tracking_uri: str | None
    experiment: str
    stages: list[Stage]


def _subparser(kind: str) -> argparse.ArgumentParser:
    from recsys_ebm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[kind]


def _options(kind: str) -> dict[str, argparse.Action]:
    return {
        a.dest: a for a in _subparser(kind)._actions if a.dest not in ("help",) and a.option_strings
    }


def _to_argv(where: str, kind: str, values: dict[str, Any]) -> list[str]:
    """Turn a stage table into CLI arguments, validating keys and types against the parser."""
    opts = _options(kind)
    managed = _MANAGED.get(kind, set())
    argv: list[str] = []
    for key, value in values.items():
        action = opts.get(key)
        if action is None or key in managed or key in _TRACKING:
            known = sorted(k for k in opts if k not in managed and k not in _TRACKING)
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {known}")
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: key {key!r} expects true/false, got {value!r}")
            if value:
                argv.append(flag)
            continue
        items = value if isinstance(action, argparse._AppendAction) else [value]
        if isinstance(action, argparse._AppendAction) and not isinstance(value, list):
            raise ConfigError(f"{where}: key {key!r} expects a list, got {value!r}")
        for item in items:
            if isinstance(item, dict | list):
                raise ConfigError(f"{where}: key {key!r} expects a scalar, got {item!r}")
            text = str(item).lower() if isinstance(item, bool) else str(item)
            if action.type is not None:
                try:
                    action.type(text)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(
                        f"{where}: key {key!r} expects {action.type.__name__}, got {item!r}"
                    ) from exc
            if action.choices is not None and text not in action.choices:
                raise ConfigError(
                    f"{where}: key {key!r} expects one of {sorted(action.choices)}, got {item!r}"
                )
            argv += [flag, text]
    return argv


def _set_path(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set: expected stage.key=value, got {dotted!r}")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: --set {dotted}: {p!r} is not a table")
    node[parts[-1]] = value


def load_pipeline(
    path: str | Path, overrides: list[str] | None = None, *, run_dir: str | Path | None = None
) -> Pipeline:
    """Parse and validate a pipeline file; errors name the file, the stage and the key."""
    from recsys_ebm.config import parse_overrides

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline: file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for dotted, value in parse_overrides(overrides or []).items():
        _set_path(data, dotted, value, str(path))
    unknown = sorted(set(data) - set(STAGES) - {"pipeline"})
    if unknown:
        raise ConfigError(f"{path}: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    head = data.get("pipeline", {})
    bad = sorted(set(head) - _PIPELINE_KEYS)
    if bad:
        raise ConfigError(
            f"{path}: [pipeline]: unknown key(s) {bad}; known: {sorted(_PIPELINE_KEYS)}"
        )
    name = str(head.get("name", path.stem))
    if run_dir is None and "run_dir" not in head:
        check_pipeline_name(path, name)
    base = Path(run_dir or head.get("run_dir", Path("runs") / name))
    stages: list[Stage] = []

    data_dir = base / "data"
    if "prepare" in data:
        where = f"{path}: [prepare]"
        argv = ["prepare", *_to_argv(where, "prepare", data["prepare"])]
        stages.append(Stage("prepare", "prepare", argv + ["--out", str(data_dir)], data_dir))

    trained: dict[str, Path] = {}
    train_tables = data.get("train", {})
    if not isinstance(train_tables, dict):
        raise ConfigError(f"{path}: [train] must hold one table per model, e.g. [train.rbm]")
    for mname, table in train_tables.items():
        check_stage_name(path, mname)  # it becomes RUN_DIR/models/NAME: no '..', no '/'
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: [train.{mname}]: expected a table with a 'model' key, got {table!r}"
            )
    # composite models (a ranker over other train stages) run after the stages they name
    order = sorted(train_tables, key=lambda m: "components" in train_tables[m])
    for mname in order:
        where = f"{path}: [train.{mname}]"
        table = dict(train_tables[mname])
        sets = table.pop("set", {})
        if not isinstance(sets, dict):
            raise ConfigError(f"{where}: key 'set' expects a table of config keys, got {sets!r}")
        table.setdefault("model", mname)
        parts = _components(where, table, sets, train_tables)
        argv = ["train", *_to_argv(where, "train", table)]
        overrides: list[str] = []
        if parts:
            overrides.append(f"components={json.dumps([str(trained[p]) for p in parts])}")
        overrides += [f"{k}={toml_value(v)}" for k, v in sets.items()]
        # the model config the stage will build, built now: a bad key fails before any stage
        part_models = [str(train_tables[p].get("model", p)) for p in parts] if parts else None
        check_train_config(where, str(table["model"]), table.get("config"), overrides, part_models)
        for o in overrides:
            argv += ["--set", o]
        _needs(stages, "prepare", where, path)
        out = base / "models" / mname
        argv += ["--data", str(data_dir), "--out", str(out), "--overwrite"]
        ups = ["prepare", *(f"train.{p}" for p in parts)]
        stages.append(Stage("train", f"train.{mname}", argv, out, ups))
        trained[mname] = out

    def model_ref(where: str, ref: str) -> str:
        if ref in trained:
            return str(trained[ref])
        if ref.startswith("models:/") or Path(ref).is_dir():
            return ref
        raise ConfigError(
            f"{where}: model {ref!r} is neither a [train.{ref}] stage of this pipeline "
            f"(trained: {sorted(trained)}) nor an existing model directory"
        )

    evaluated: list[str] = []
    if "evaluate" in data:
        where = f"{path}: [evaluate]"
        table = dict(data["evaluate"])
        models = table.pop("models", sorted(trained))
        if isinstance(models, str) or not isinstance(models, list) or not models:
            raise ConfigError(f"{where}: key 'models' expects a non-empty list, got {models!r}")
        _needs(stages, "prepare", where, path)
        table.pop("model", None)
        argv = ["evaluate", *_to_argv(where, "evaluate", table)]
        for m in models:
            argv += ["--model", model_ref(where, str(m))]
        out = base / "report"
        argv += ["--data", str(data_dir), "--report", str(out)]
        ups = ["prepare"] + [f"train.{m}" for m in models if m in trained]
        stages.append(Stage("evaluate", "evaluate", argv, out, ups))
        evaluated = [str(m) for m in models]

    registered: str | None = None  # the name the register stage registers
    if "register" in data:
        where = f"{path}: [register]"
        table = dict(data["register"])
        ref = table.pop("model", None)
        if ref is None:
            raise ConfigError(f"{where}: missing key 'model' (a [train.NAME] of this pipeline)")
        if ref not in trained:
            raise ConfigError(
                f"{where}: model {ref!r} needs a [train.{ref}] stage, which is not there "
                f"(trained: {sorted(trained)})"
            )
        if "name" not in table:
            raise ConfigError(f"{where}: missing key 'name' (the registered model name)")
        if "promote_if_better" in table and ref not in evaluated:
            raise ConfigError(
                f"{where}: key 'promote_if_better' compares the metric of an [evaluate] stage "
                f"that scores {ref!r}; this pipeline's evaluate stage "
                + (f"scores only {evaluated}" if evaluated else "is not there")
            )
        registered = str(table["name"])
        argv = ["register", *_to_argv(where, "register", table), "--model-dir", str(trained[ref])]
        ups = [f"train.{ref}"] + (["evaluate"] if evaluated else [])
        stages.append(Stage("register", "register", argv, None, ups))

    if "recommend" in data:
        where = f"{path}: [recommend]"
        table = dict(data["recommend"])
        ref = table.pop("model", None)
        if ref is None:
            raise ConfigError(f"{where}: missing key 'model'")
        _needs(stages, "prepare", where, path)
        out = base / "recommendations.parquet"
        argv = ["recommend", *_to_argv(where, "recommend", table)]
        argv += ["--model", model_ref(where, str(ref)), "--data", str(data_dir), "--out", str(out)]
        ups = ["prepare"] + ([f"train.{ref}"] if ref in trained else [])
        if registered is not None and _registry_name(str(ref)) == registered:
            ups.append("register")  # serve the champion as this run's register stage left it
        stages.append(Stage("recommend", "recommend", argv, out, ups))

    from recsys_ebm import __version__

    for st in stages:
        h = hashlib.sha256(json.dumps([__version__, st.argv, _input_state(st, base)]).encode())
        for up in st.upstream:
            h.update(next(s.digest for s in stages if s.name == up).encode())
        st.digest = h.hexdigest()[:16]
    return Pipeline(
        path, name, base, head.get("tracking_uri"), head.get("experiment", "recsys-ebm"), stages
    )


def _input_state(stage: Stage, base: Path) -> list[Any]:
    """Size and mtime of the files a stage reads from outside the run (the raw input of
    ``prepare``, model directories given by path), so edited inputs invalidate the stage."""
    from recsys_ebm.data.prepare import DEFAULT_INPUT

    paths: list[Path] = []
    argv = stage.argv
    for flag in ("--input", "--test", "--valid", "--model"):
        if flag in argv:
            paths += [Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == flag]
    if stage.kind == "prepare" and "--input" not in argv:
        paths.append(DEFAULT_INPUT)
    state = []
    for p in paths:
        if p.resolve().is_relative_to(base.resolve()):
            continue  # produced by this pipeline: covered by the upstream stage's digest
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        state += [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]
    return state


def _components(
    where: str, table: dict[str, Any], sets: dict[str, Any], tables: dict[str, Any]
) -> list[str]:
    """Validate and pop a train table's ``components`` (names of other train stages)."""
    if "components" not in table:
        return []
    parts = table.pop("components")
    if table.get("model") != "ranker":
        raise ConfigError(
            f"{where}: key 'components' is for model = 'ranker' (a blend of other train "
            f"stages), got model = {table.get('model')!r}"
        )
    if "components" in sets:
        raise ConfigError(
            f"{where}: give either key 'components' (train stages of this pipeline) or "
            "'set.components' (registry names the ranker trains itself), not both"
        )
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise ConfigError(
            f"{where}: key 'components' expects a non-empty list of [train.NAME] stage names, "
            f"got {parts!r}"
        )
    for p in parts:
        if p not in tables:
            raise ConfigError(
                f"{where}: key 'components': {p!r} needs a [train.{p}] stage, which is not "
                f"there (train stages: {sorted(tables)})"
            )
        if "components" in tables[p]:
            raise ConfigError(
                f"{where}: key 'components': [train.{p}] is itself a composite model; a ranker "
                "blends single models"
            )
    return parts


def _arg(argv: list[str], flag: str) -> str:
    """The value after ``flag`` in a stage's argv."""
    return argv[argv.index(flag) + 1]


def _registry_name(ref: str) -> str | None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> NAME; anything else -> None."""
    from recsys_ebm.registry import parse_model_uri

    try:
        return parse_model_uri(ref)[0]
    except ValueError:
        return None


def _needs(stages: list[Stage], kind: str, where: str, path: Path) -> None:
    if not any(s.kind == kind for s in stages):
        raise ConfigError(f"{where}: needs the output of a [{kind}] stage, which {path} lacks")


def _stamp(run_dir: Path, stage: Stage) -> Path:
    return run_dir / ".stages" / f"{stage.name}.json"


def run_pipeline(
    pipe: Pipeline, *, force: bool = False, tracking_uri: str | None = None, mlflow: bool = True
) -> dict[str, str]:
    """Run every stage in order; returns ``{stage: "ran" | "skipped"}``.

    The run directory is locked for the whole run (``RUN_DIR/.lock``); temporaries left in it
    by a killed run are removed first.

    Raises:
        RunDirLocked: another run holds the run directory.
        StageFailed: a stage exited non-zero (``returncode``: 2 for bad input, else 1).
    """
    with lock_run_dir(pipe.run_dir):
        outputs = [st.output for st in pipe.stages if st.output is not None]
        clean_stale([*outputs, *(_stamp(pipe.run_dir, st) for st in pipe.stages)])
        return _run_locked(pipe, force=force, tracking_uri=tracking_uri, mlflow=mlflow)


def _run_locked(
    pipe: Pipeline, *, force: bool, tracking_uri: str | None, mlflow: bool
) -> dict[str, str]:
    from recsys_ebm.cli import main as cli_main
    from recsys_ebm.tracking import default_tracking_uri, log_params_flat, mlflow_run

    uri = tracking_uri or pipe.tracking_uri
    # where stage runs are logged: a stage last logged elsewhere (or with MLflow off) reruns
    store = default_tracking_uri(uri) if mlflow else None
    status: dict[str, str] = {}
    with mlflow_run(
        f"pipeline-{pipe.name}",
        tracking_uri=uri,
        experiment=pipe.experiment,
        tags={"stage": "pipeline", "pipeline": str(pipe.path)},
        enabled=mlflow,
    ) as parent:
        if parent is not None:
            log_params_flat(
                {"pipeline.file": str(pipe.path), "pipeline.run_dir": str(pipe.run_dir)}
            )
        for st in pipe.stages:
            needs_registry = st.kind == "register" or (
                st.kind == "recommend" and _registry_name(_arg(st.argv, "--model")) is not None
            )
            if needs_registry and not mlflow:
                print(
                    f"[run] {st.name}: skipped (MLflow is off; the registry needs it)", flush=True
                )
                status[st.name] = "skipped"
                continue
            stamp = _stamp(pipe.run_dir, st)
            last = read_stamp(stamp)  # truncated or garbage: {} (not done, rerun)
            done = last.get("digest") == st.digest
            if st.kind != "prepare":
                done = done and last.get("tracking") == store
            present = st.output is None or st.output.exists()
            if done and present and not force:
                print(f"[run] {st.name}: skipped (unchanged, hash {st.digest})", flush=True)
                status[st.name] = "skipped"
                continue
            print(f"[run] {st.name}: recsys-ebm {' '.join(st.argv)}", flush=True)
            t0 = time.perf_counter()
            argv = list(st.argv)
            if st.kind in ("prepare", "evaluate"):  # a rerun replaces the stage's output
                argv.append("--overwrite")
            if st.kind != "prepare":
                argv += ["--experiment", pipe.experiment]
                if uri:
                    argv += ["--tracking-uri", uri]
                if not mlflow:
                    argv.append("--no-mlflow")
            failed = f"pipeline {pipe.path}: stage {st.name} failed"
            try:
                rc = cli_main(argv)
            except SystemExit as exc:  # argparse rejected an option the checks above let by
                rc = exc.code if isinstance(exc.code, int) else 1
            except Exception as exc:  # not bad input (that is exit 2): a bug, a diverged fit
                traceback.print_exc()
                raise StageFailed(f"{failed} (exit 1): {type(exc).__name__}: {exc}", 1) from exc
            if rc != 0:
                raise StageFailed(f"{failed} (exit {rc})", rc)
            write_stamp(stamp, {"digest": st.digest, "argv": st.argv, "tracking": store})
            status[st.name] = "ran"
            print(f"[run] {st.name}: done in {time.perf_counter() - t0:.1f}s", flush=True)
    return status


def print_outputs(pipe: Pipeline, tracking_uri: str | None, *, mlflow: bool = True) -> None:
    """Print where the dataset, report, recommendations, registered model and runs are."""
    from recsys_ebm.tracking import default_tracking_uri, ui_hint

    uri = default_tracking_uri(tracking_uri or pipe.tracking_uri)
    out = sys.stdout
    kinds = {st.kind: st for st in pipe.stages}
    print("\nWhere things are:", file=out)
    if "prepare" in kinds:
        print(f"  dataset:          {kinds['prepare'].output}", file=out)
    if "evaluate" in kinds:
        print(f"  report:           {kinds['evaluate'].output / 'report.html'}", file=out)
    if "recommend" in kinds:
        rec = kinds["recommend"]
        model = _arg(rec.argv, "--model")
        print(f"  recommendations:  {rec.output}  (model {model})", file=out)
    if "register" in kinds and mlflow:
        name = _arg(kinds["register"].argv, "--name")
        desc, champion = _champion(name, uri)
        print(f"  registered model: {desc}", file=out)
        if champion:
            print(
                f"  serve champion:   MLFLOW_TRACKING_URI={uri} mlflow models serve "
                f"-m models:/{name}@champion --env-manager local -p 5001",
                file=out,
            )
    if mlflow:
        print(f"  {ui_hint(uri, pipe.experiment)}", file=out)


def _champion(name: str, uri: str) -> tuple[str, bool]:
    """A line on the latest version and the champion of ``name``; whether there is one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from recsys_ebm.registry import CHAMPION

    client = MlflowClient(uri, registry_uri=uri)
    try:
        latest = max(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    except (MlflowException, ValueError):
        return f"{name}: not registered in {uri}", False
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        return f"{name} version {latest} (no champion alias)", False
    return f"{name} version {latest}; champion models:/{name}@{CHAMPION} = version {champ}", True
