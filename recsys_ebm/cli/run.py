"""``recsys-ebm run``: run a pipeline file (prepare, train, evaluate, register, recommend)."""

from __future__ import annotations

import argparse
import sys

from recsys_ebm.cli.common import add_tracking_options, apply_threads


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline declared in a TOML file",
        description="Run the stages of a pipeline file in order, in one MLflow parent run with "
        "nested stage runs. Stages whose options, inputs and package code are unchanged are "
        "skipped (content hash); --force reruns everything. The whole file (stage options, "
        "model configs) is checked before any stage runs; one run at a time holds the run "
        "directory (RUN_DIR/.lock). Exit 2: bad input (also from a stage); 1: a stage failed "
        "otherwise.",
    )
    p.add_argument("pipeline", help="pipeline file, e.g. pipelines/quickstart.toml")
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="STAGE.KEY=VALUE",
        action="append",
        default=[],
        help="override one stage option (repeatable), e.g. --set train.rbm.set.epochs=3 "
        "--set prepare.seed=1",
    )
    p.add_argument("--run-dir", default=None, help="override [pipeline] run_dir")
    p.add_argument("--force", action="store_true", help="rerun every stage")
    add_tracking_options(p)
    # the thread count waits for the pipeline file's [pipeline] threads (see run below)
    p.set_defaults(func=run, threads_later=True)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0; 2 for bad input (the file, an option, a stage that failed on bad input,
    a run directory another run holds); 1 for a stage's unexpected failure."""
    from recsys_ebm.pipeline import (
        RunDirLocked,
        StageFailed,
        load_pipeline,
        print_outputs,
        run_pipeline,
    )

    # every stage's options and model config are checked here, before any stage runs
    pipe = load_pipeline(args.pipeline, args.overrides, run_dir=args.run_dir)
    if args.experiment != "recsys-ebm":
        pipe.experiment = args.experiment
    threads = apply_threads(args, default=pipe.threads)  # --threads, $RECSYS_EBM_THREADS, file
    try:
        status = run_pipeline(
            pipe,
            force=args.force,
            tracking_uri=args.tracking_uri,
            mlflow=not args.no_mlflow,
            threads=threads,
        )
    except RunDirLocked as exc:
        print(f"recsys-ebm run: error: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:  # the stage has printed its own error above
        print(f"recsys-ebm run: error: {exc}", file=sys.stderr)
        return 2 if exc.returncode == 2 else 1
    ran = sum(v == "ran" for v in status.values())
    print(f"\npipeline {pipe.name}: {ran} stage(s) ran, {len(status) - ran} skipped")
    print_outputs(pipe, args.tracking_uri, mlflow=not args.no_mlflow)
    return 0
