"""Running the stages of a :class:`recsys_ebm.pipeline.Pipeline`, and what a run prints.

:func:`run_locked` runs (or skips) each stage in order inside one MLflow parent run, with the
run directory's lock already held; :func:`print_outputs` tells where the results are.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import traceback
from typing import TYPE_CHECKING

from recsys_ebm._pipeline_graph import registry_name
from recsys_ebm._pipeline_run import StageFailed, read_stamp, stamp_path, write_stamp
from recsys_ebm.jobs import BAD_INPUT, JobConfig, error_message, run_job

if TYPE_CHECKING:
    from recsys_ebm.pipeline import Pipeline, Stage

__all__ = ["print_outputs", "run_locked"]


def run_locked(
    pipe: Pipeline, *, force: bool, tracking_uri: str | None, mlflow: bool
) -> dict[str, str]:
    """Run every stage in order, skipping those whose stamp holds their digest; the run
    directory's lock is held by the caller. Returns ``{stage: "ran" | "skipped"}``."""
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
                st.kind == "recommend" and registry_name(st.config.model) is not None
            )
            if needs_registry and not mlflow:
                print(
                    f"[run] {st.name}: skipped (MLflow is off; the registry needs it)", flush=True
                )
                status[st.name] = "skipped"
                continue
            stamp = stamp_path(pipe.run_dir, st.name)
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
            run_stage(pipe, st, job)
            write_stamp(
                stamp, {"digest": st.digest, "config": st.config.to_dict(), "tracking": store}
            )
            status[st.name] = "ran"
            print(f"[run] {st.name}: done in {time.perf_counter() - t0:.1f}s", flush=True)
    return status


def run_stage(pipe: Pipeline, st: Stage, job: JobConfig) -> None:
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
