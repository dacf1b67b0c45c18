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
    # threads = 2                        # CPU threads; default: the CPUs this process may use

    [prepare]
    split = "random"

    [train.ease]                         # one table per model; the table name is the model id
    model = "ease"
    set = { l2 = 200.0 }                 # config overrides, as --set key=value

    [train.rbm]
    search = { n_hidden = [100, 400] }   # validation grid search, as --search key=[...]

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
under it). A stage whose resolved options, upstream stages and input files are unchanged is
skipped by content hash: files it reads from outside the run directory count by their content
(sha256; a touched file is unchanged, edited bytes are not, whatever the mtime says), cached in
``RUN_DIR/.stages/input-hashes.json`` so an unchanged big input is not re-read (see
:mod:`recsys_ebm._pipeline_hash`); ``--force`` reruns everything. A stage that logs to MLflow
also reruns when the tracking store differs from the one it last logged to; ``register`` is
skipped when MLflow is off.

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

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from recsys_ebm._pipeline_checks import (
    check_pipeline_name,
    check_stage_name,
    check_train_config,
    toml_value,
)
from recsys_ebm._pipeline_exec import print_outputs, run_locked
from recsys_ebm._pipeline_graph import (
    components,
    needs,
    registry_name,
    set_path,
    stage_job,
    wire,
)
from recsys_ebm._pipeline_hash import CACHE_NAME, HashCache, input_state, stage_digest
from recsys_ebm._pipeline_run import (
    RunDirLocked,
    StageFailed,
    clean_stale,
    lock_run_dir,
    stamp_path,
)
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs import JobConfig

__all__ = [
    "STAGES",
    "Pipeline",
    "RunDirLocked",
    "Stage",
    "StageFailed",
    "load_pipeline",
    "print_outputs",
    "run_pipeline",
]

STAGES = ("prepare", "train", "evaluate", "register", "recommend")
_PIPELINE_KEYS = {"name", "run_dir", "tracking_uri", "experiment", "threads"}


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
    #: input-file content hashes, saved for the next run by :func:`run_pipeline`
    hashes: HashCache | None = field(default=None, repr=False, compare=False)
    #: ``[pipeline] threads``: CPU threads unless ``--threads`` / ``RECSYS_EBM_THREADS`` say
    #: otherwise (not part of any stage's hash: results do not depend on it, BPR's aside)
    threads: int | None = None


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
        set_path(data, dotted, value, str(path))
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
    threads = head.get("threads")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(
            f"{path}: [pipeline]: key 'threads' expects a whole number >= 1 (CPU threads), "
            f"got {threads!r}"
        )
    if run_dir is None and "run_dir" not in head:
        check_pipeline_name(path, name)
    base = Path(run_dir or head.get("run_dir", Path("runs") / name))
    stages: list[Stage] = []

    data_dir = base / "data"
    if "prepare" in data:
        where = f"{path}: [prepare]"
        wired = {"out": str(data_dir), "overwrite": True}
        job = stage_job(where, "prepare", data["prepare"], wired)
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
        parts = components(where, table, sets, train_tables)
        overrides: list[str] = []
        if parts:
            overrides.append(f"components={json.dumps([str(trained[p]) for p in parts])}")
        overrides += [f"{k}={toml_value(v)}" for k, v in sets.items()]
        grid = table.pop("search", {})
        if not isinstance(grid, dict):
            raise ConfigError(
                f"{where}: key 'search' expects a table of config keys to lists of values, "
                f"e.g. search = {{ n_hidden = [100, 400] }}, got {grid!r}"
            )
        search = [f"{k}={toml_value(v)}" for k, v in grid.items()]
        out = base / "models" / mname
        wired = {"data": str(data_dir), "out": str(out), "overwrite": True, "overrides": overrides}
        if search:
            wired["search"] = search
        job = stage_job(where, "train", table, wired)
        # the model config the stage will build, built now: a bad key fails before any stage
        part_models = [str(train_tables[p].get("model", p)) for p in parts] if parts else None
        check_train_config(
            where,
            str(table["model"]),
            table.get("config"),
            overrides,
            part_models,
            search,
            table.get("search_seeds"),
        )
        needs(stages, "prepare", where, path)
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
        needs(stages, "prepare", where, path)
        table.pop("model", None)
        out = base / "report"
        refs = [model_ref(where, str(m)) for m in models]
        wired = {"data": str(data_dir), "report": str(out), "models": refs, "overwrite": True}
        job = stage_job(where, "evaluate", table, wired)
        stages.append(Stage("evaluate", "evaluate", job, out))
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
        job = stage_job(where, "register", table, {"model_dir": str(trained[ref])})
        # the metric it promotes on is the evaluate stage's (read from MLflow, not a path)
        stages.append(Stage("register", "register", job, None, ["evaluate"] if evaluated else []))

    if "recommend" in data:
        where = f"{path}: [recommend]"
        table = dict(data["recommend"])
        ref = table.pop("model", None)
        if ref is None:
            raise ConfigError(f"{where}: missing key 'model'")
        needs(stages, "prepare", where, path)
        out = base / "recommendations.parquet"
        wired = {"model": model_ref(where, str(ref)), "data": str(data_dir), "out": str(out)}
        ups = []
        if registered is not None and registry_name(str(ref)) == registered:
            ups.append("register")  # serve the champion as this run's register stage left it
        stages.append(
            Stage("recommend", "recommend", stage_job(where, "recommend", table, wired), out, ups)
        )

    wire(stages)
    hashes = HashCache(base / ".stages" / CACHE_NAME)
    for st in stages:
        tracking = getattr(st.config, "TRACKING", ())
        options = {k: v for k, v in st.config.to_dict().items() if k not in tracking}
        try:  # the content of what it reads: a stage is skipped only while it is unchanged
            inputs = input_state(st.config.input_paths(), base, hashes)
        except OSError as exc:
            raise ConfigError(f"{path}: [{st.name}]: cannot read an input: {exc}") from exc
        ups = [next(s.digest for s in stages if s.name == up) for up in st.upstream]
        st.digest = stage_digest(st.kind, options, inputs, ups)
    return Pipeline(
        path,
        name,
        base,
        head.get("tracking_uri"),
        head.get("experiment", "recsys-ebm"),
        stages,
        hashes,
        threads,
    )


def run_pipeline(
    pipe: Pipeline,
    *,
    force: bool = False,
    tracking_uri: str | None = None,
    mlflow: bool = True,
    threads: int | None = None,
) -> dict[str, str]:
    """Run every stage in order; returns ``{stage: "ran" | "skipped"}``.

    The run directory is locked for the whole run (``RUN_DIR/.lock``); temporaries left in it
    by a killed run are removed first. The process's CPU threads are set first, for every
    stage: ``threads``, else ``$RECSYS_EBM_THREADS``, else ``[pipeline] threads``, else the
    CPUs it may use (:func:`recsys_ebm.device.resolve_threads`).

    Raises:
        RunDirLocked: another run holds the run directory.
        StageFailed: a stage exited non-zero (``returncode``: 2 for bad input, else 1).
    """
    from recsys_ebm.device import configure_threads, resolve_threads

    configure_threads(resolve_threads(threads, default=pipe.threads))
    with lock_run_dir(pipe.run_dir):
        outputs = [st.output for st in pipe.stages if st.output is not None]
        stamps = [stamp_path(pipe.run_dir, st.name) for st in pipe.stages]
        cache = pipe.run_dir / ".stages" / CACHE_NAME
        clean_stale([*outputs, *stamps, cache])
        if pipe.hashes is not None:
            pipe.hashes.save()  # input-file hashes, for the next run's load_pipeline
        return run_locked(pipe, force=force, tracking_uri=tracking_uri, mlflow=mlflow)
