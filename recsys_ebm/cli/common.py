"""Argument wiring shared by the subcommands: flags built from a job config's fields."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from recsys_ebm.jobs._base import JobConfig, TrackedJob, flag_of, to_flags

__all__ = [
    "add_job_options",
    "add_threads_option",
    "add_tracking_options",
    "apply_threads",
    "config_from_args",
    "run_job_command",
]


class _Verbose(argparse.Action):
    """``--verbose``: keep MLflow's INFO lines (for this process and the stages it runs)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        from recsys_ebm.tracking import VERBOSE_ENV, set_mlflow_verbosity

        setattr(namespace, self.dest, True)
        os.environ[VERBOSE_ENV] = "1"
        set_mlflow_verbosity(True)


def _scalar_type(annotation: Any) -> Any:
    """``int`` / ``float`` (also inside ``X | None``) -> that type; anything else -> None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if annotation in (int, float) else None


def _add_field(
    target: Any, f: dataclasses.Field, annotation: Any, parse: Callable[[str], Any] | None
) -> None:
    meta = f.metadata
    kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"].replace("%", "%%")}
    required = f.default is dataclasses.MISSING
    if annotation is bool or annotation == "bool":
        kwargs["action"] = "store_true"
    else:
        if meta.get("repeat"):
            kwargs["action"] = "append"
            if not required:
                kwargs["default"] = list(f.default)
        elif not required:
            kwargs["default"] = f.default
        kind = parse or _scalar_type(annotation)
        if kind is not None:
            kwargs["type"] = kind
        if meta.get("choices") is not None:
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if required and not meta.get("exclusive"):
            kwargs["required"] = True
    target.add_argument(flag_of(f), **kwargs)


def add_job_options(
    p: argparse.ArgumentParser,
    cls: type[JobConfig],
    *,
    order: Sequence[str] | None = None,
    parse: dict[str, Callable[[str], Any]] | None = None,
) -> None:
    """One option per field of ``cls`` (help, default, choices and flag from the field), in
    ``order`` (default: field order, the MLflow tracking options last, as their own group).

    Args:
        parse: command-line parsers of fields whose text needs more than ``int``/``float``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    tracking = set(getattr(cls, "TRACKING", ()))
    names = list(order) if order is not None else [n for n in fields if n not in tracking]
    groups: dict[str, Any] = {}
    for name in names:
        f = fields[name]
        target: Any = p
        if f.metadata.get("exclusive"):
            key = "exclusive:" + f.metadata["exclusive"]
            if key not in groups:
                groups[key] = p.add_mutually_exclusive_group(required=True)
            target = groups[key]
        elif f.metadata.get("group"):
            key = f.metadata["group"]
            if key not in groups:
                groups[key] = p.add_argument_group(key)
            target = groups[key]
        _add_field(target, f, hints[name], (parse or {}).get(name))
    if tracking:
        add_tracking_options(p, cls)
    p.set_defaults(job_class=cls, flags=cls.message_flags())


def add_tracking_options(p: argparse.ArgumentParser, cls: type[Any] = TrackedJob) -> None:
    """The MLflow tracking group (the tracking fields of a job config) and ``--verbose``."""
    from recsys_ebm.tracking import set_mlflow_verbosity

    # MLflow's INFO lines ("Created version '1' ...") are noise in command output; --verbose (or
    # RECSYS_EBM_VERBOSE=1) keeps them
    set_mlflow_verbosity()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    g = p.add_argument_group("MLflow tracking")
    for name in TrackedJob.TRACKING:
        _add_field(g, fields[name], hints[name], None)
    g.add_argument(
        "--verbose",
        action=_Verbose,
        help="show MLflow's own INFO log lines (hidden by default; also RECSYS_EBM_VERBOSE=1)",
    )


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The job config of a parsed command line (every field is an option)."""
    cls = args.job_class
    return cls.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def run_job_command(args: argparse.Namespace) -> int:
    """Build the job from the flags, run it, print its summary."""
    from recsys_ebm.jobs import run_job

    print(run_job(config_from_args(args)).summary())
    return 0


def _threads_arg(text: str) -> int:
    """``--threads`` text -> a count >= 1 (argparse reports the error: exit 2)."""
    from recsys_ebm.device import check_threads

    try:
        return check_threads(text, "--threads")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--threads: ")) from exc


def add_threads_option(p: argparse.ArgumentParser, default: Any) -> None:
    """``--threads N``: CPU threads for torch, implicit and BLAS (every subcommand has it)."""
    from recsys_ebm.device import THREADS_ENV

    p.add_argument(
        "--threads",
        type=_threads_arg,
        default=default,
        metavar="N",
        help=f"CPU threads for torch, implicit's ALS/BPR and BLAS (default: ${THREADS_ENV}, "
        "else `run`'s [pipeline] threads, else $OMP_NUM_THREADS, else the CPUs this process "
        "may use: its affinity mask and cgroup CPU quota; never more than those)",
    )


def apply_threads(args: argparse.Namespace, default: int | None = None) -> int:
    """Resolve ``--threads`` (then the variables, then ``default``) and apply it to this
    process; a request above the CPUs available is lowered, with a warning on stderr."""
    import sys
    import warnings

    from recsys_ebm.device import configure_threads, resolve_threads

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        n = resolve_threads(getattr(args, "threads", None), default=default)
    for w in caught:
        print(f"recsys-ebm {args.command}: warning: {w.message}", file=sys.stderr)
    return configure_threads(n)


def translate(message: str, args: argparse.Namespace) -> str:
    """A library message naming config fields -> the same naming this command's flags."""
    return to_flags(message, getattr(args, "flags", {}))
