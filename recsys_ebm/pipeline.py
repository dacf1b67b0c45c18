"""Pipelines: TOML files that chain ``prepare -> train -> evaluate -> register -> recommend``.

A pipeline file declares stages; each stage's table is loaded straight into the job config of
the same name (:mod:`recsys_ebm.jobs`: ``[prepare]`` -> ``PrepareJob``), whose fields are also
the CLI subcommand's options (``test_fraction`` = ``--test-fraction``), so anything a user can
type, a pipeline can declare. The stage graph comes from each job's declared input and output
paths (a stage runs after the stage whose output it reads). Example
(``pipelines/quickstart.toml``)::

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

import dataclasses
import hashlib
import json
import os
import re
import shlex
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
from recsys_ebm.jobs import BAD_INPUT, JobConfig, error_message, job_config, run_job

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
# fields the runner fills in itself (outputs and inputs wired between stages)
_MANAGED = {
    "prepare": {"out", "overwrite"},
    "train": {"data", "out", "overwrite", "overrides"},
    "evaluate": {"data", "report", "overwrite", "models"},
    "register": {"run_id", "model_dir"},
    "recommend": {"data", "out", "model"},
}
_TRACKING = {"tracking_uri", "experiment", "no_mlflow"}


@dataclass
class Stage:
    """One resolved stage: its job config, its output path and its content hash."""

    kind: str
    name: str
    config: JobConfig
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


def _job(where: str, kind: str, table: dict[str, Any], wired: dict[str, Any]) -> JobConfig:
    """A stage table (its keys: the job's fields) plus the runner's wiring -> the job config."""
    cls = job_config(kind)
    fields = [f.name for f in dataclasses.fields(cls)]
    managed = _MANAGED.get(kind, set())
    for key in table:
        if key not in fields or key in managed or key in _TRACKING:
            known = sorted(k for k in fields if k not in managed and k not in _TRACKING)
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {known}")
    try:
        return cls.from_dict({**table, **wired})
    except (ValueError, TypeError) as exc:
        # "PrepareJob.seed: expected an int, got 'x'" -> "key 'seed' expects int, got 'x'"
        m = re.match(r"^(?:[A-Z]\w*\.)?([a-z_]\w*): expected (?:an? )?", str(exc))
        if m and m.group(1) in table:
            msg = f"key {m.group(1)!r} expects {str(exc)[m.end() :]}"
            raise ConfigError(f"{where}: {msg}") from exc
        raise ConfigError(f"{where}: {exc}") from exc


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
        job = _job(where, "prepare", data["prepare"], {"out": str(data_dir), "overwrite": True})
        stages.append(Stage("prepare", "prepare", job, data_dir))

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
        overrides: list[str] = []
        if parts:
            overrides.append(f"components={json.dumps([str(trained[p]) for p in parts])}")
        overrides += [f"{k}={toml_value(v)}" for k, v in sets.items()]
        out = base / "models" / mname
        wired = {"data": str(data_dir), "out": str(out), "overwrite": True, "overrides": overrides}
        job = _job(where, "train", table, wired)
        # the model config the stage will build, built now: a bad key fails before any stage
        part_models = [str(train_tables[p].get("model", p)) for p in parts] if parts else None
        check_train_config(where, str(table["model"]), table.get("config"), overrides, part_models)
        _needs(stages, "prepare", where, path)
        stages.append(Stage("train", f"train.{mname}", job, out))
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
        out = base / "report"
        refs = [model_ref(where, str(m)) for m in models]
        wired = {"data": str(data_dir), "report": str(out), "models": refs, "overwrite": True}
        stages.append(Stage("evaluate", "evaluate", _job(where, "evaluate", table, wired), out))
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
        job = _job(where, "register", table, {"model_dir": str(trained[ref])})
        # the metric it promotes on is the evaluate stage's (read from MLflow, not a path)
        stages.append(Stage("register", "register", job, None, ["evaluate"] if evaluated else []))

    if "recommend" in data:
        where = f"{path}: [recommend]"
        table = dict(data["recommend"])
        ref = table.pop("model", None)
        if ref is None:
            raise ConfigError(f"{where}: missing key 'model'")
        _needs(stages, "prepare", where, path)
        out = base / "recommendations.parquet"
        wired = {"model": model_ref(where, str(ref)), "data": str(data_dir), "out": str(out)}
        ups = []
        if registered is not None and _registry_name(str(ref)) == registered:
            ups.append("register")  # serve the champion as this run's register stage left it
        stages.append(
            Stage("recommend", "recommend", _job(where, "recommend", table, wired), out, ups)
        )

    _wire(stages)
    from recsys_ebm import __version__

    for st in stages:
        options = {
            k: v
            for k, v in st.config.to_dict().items()
            if k not in getattr(st.config, "TRACKING", ())
        }
        state = [__version__, st.kind, options, _input_state(st, base)]
        h = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
        for up in st.upstream:
            h.update(next(s.digest for s in stages if s.name == up).encode())
        st.digest = h.hexdigest()[:16]
    return Pipeline(
        path, name, base, head.get("tracking_uri"), head.get("experiment", "recsys-ebm"), stages
    )


def _wire(stages: list[Stage]) -> None:
    """Add to each stage's upstream the earlier stages whose declared outputs it reads (its
    job's input paths): the dataset of ``prepare``, the model directories of ``train``."""
    for i, st in enumerate(stages):
        for path in st.config.input_paths():
            for up in stages[:i]:
                made = up.config.output_paths()
                if up.name not in st.upstream and any(_within(path, o) for o in made):
                    st.upstream.append(up.name)


def _within(path: Path, parent: Path) -> bool:
    return path == parent or path.is_relative_to(parent)


def _input_state(stage: Stage, base: Path) -> list[Any]:
    """Size and mtime of the files a stage reads from outside the run (the raw input of
    ``prepare``, model directories given by path, a config file), so edited inputs invalidate
    the stage."""
    state = []
    for p in stage.config.input_paths():
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
    from recsys_ebm.tracking import (
        default_tracking_uri,
        log_params_flat,
        mlflow_run,
        set_mlflow_verbosity,
    )

    # as the CLI: no per-file artifact progress bars, no MLflow INFO lines unless asked for
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    set_mlflow_verbosity()
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
                st.kind == "recommend" and _registry_name(st.config.model) is not None
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
            job = st.config
            if "no_mlflow" in getattr(job, "TRACKING", ()):
                job = job.replace(
                    experiment=pipe.experiment, tracking_uri=uri, no_mlflow=not mlflow
                )
            print(f"[run] {st.name}: recsys-ebm {shlex.join(job.command_line())}", flush=True)
            t0 = time.perf_counter()
            _run_stage(pipe, st, job)
            write_stamp(
                stamp, {"digest": st.digest, "config": st.config.to_dict(), "tracking": store}
            )
            status[st.name] = "ran"
            print(f"[run] {st.name}: done in {time.perf_counter() - t0:.1f}s", flush=True)
    return status


def _run_stage(pipe: Pipeline, st: Stage, job: JobConfig) -> None:
    """Run one stage's job and print its summary; bad input is exit 2, anything else exit 1.

    Raises:
        StageFailed: the job raised (the stage's own message printed first, as the CLI's).
    """
    from recsys_ebm.batch import BatchIntegrityError

    failed = f"pipeline {pipe.path}: stage {st.name} failed"
    try:
        result = run_job(job)
    except BatchIntegrityError as exc:  # not bad input: exit 1, but no traceback
        print(f"recsys-ebm {st.kind}: error: {exc}", file=sys.stderr, flush=True)
        raise StageFailed(f"{failed} (exit 1)", 1) from exc
    except BAD_INPUT as exc:  # the message names the stage's keys, as in the pipeline file
        print(f"recsys-ebm {st.kind}: error: {error_message(exc)}", file=sys.stderr, flush=True)
        raise StageFailed(f"{failed} (exit 2)", 2) from exc
    except Exception as exc:  # not bad input: a bug, a diverged fit
        traceback.print_exc()
        raise StageFailed(f"{failed} (exit 1): {type(exc).__name__}: {exc}", 1) from exc
    print(result.summary(), flush=True)


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
        model = rec.config.model
        print(f"  recommendations:  {rec.output}  (model {model})", file=out)
    if "register" in kinds and mlflow:
        name = kinds["register"].config.name
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
