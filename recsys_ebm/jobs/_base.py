"""What every job config shares: field metadata (help, flag), declared inputs and outputs, the
MLflow tracking fields, and the one rule for which exceptions are bad input (exit 2).

Cheap to import (no numpy, torch, polars or mlflow): the CLI builds its ``--help`` from these
configs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from recsys_ebm.config import Config
from recsys_ebm.diagnostics import ConfigError

__all__ = [
    "BAD_INPUT",
    "JobConfig",
    "JobResult",
    "TrackedJob",
    "error_message",
    "flag_of",
    "opt",
]

#: exceptions that mean bad input or configuration (the CLI's and a pipeline stage's exit 2)
BAD_INPUT: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    OSError,
)


def opt(
    default: Any = MISSING,
    *,
    help: str,  # noqa: A002 - the argparse word, read by the CLI
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    group: str | None = None,
    repeat: bool = False,
    exclusive: str | None = None,
) -> Any:
    """A job config field with its help text and command-line spelling.

    Args:
        default: the default; none makes the field required.
        help: one line for ``--help`` (also the field's documentation).
        flag: the command-line option, when not ``--`` + the name with ``-`` for ``_``.
        choices: the allowed values (checked at construction).
        metavar: the placeholder shown by ``--help``.
        group: the ``--help`` section.
        repeat: a list given by repeating the option (``--model A --model B``).
        exclusive: name of a required one-of group (exactly one of its fields is given).
    """
    meta = {
        "help": help,
        "flag": flag,
        "choices": tuple(choices) if choices is not None else None,
        "metavar": metavar,
        "group": group,
        "repeat": repeat,
        "exclusive": exclusive,
    }
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line option of a config field (``test_fraction`` -> ``--test-fraction``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class JobConfig(Config):
    """A stage's typed options. Subclasses declare which fields name the paths they read
    (``INPUTS``) and write (``OUTPUTS``); pipelines wire and hash stages by them."""

    #: the stage name (``prepare``, ``train``, ...), also the CLI subcommand
    KIND: ClassVar[str] = ""
    #: fields holding paths the job reads (a list field: every element)
    INPUTS: ClassVar[tuple[str, ...]] = ()
    #: fields holding paths the job writes
    OUTPUTS: ClassVar[tuple[str, ...]] = ()
    #: Python arguments of the library functions the job calls whose names differ from the
    #: fields they come from (argument -> field): their messages name the argument, the CLI
    #: shows the field's flag
    ARGUMENTS: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices is not None and value is not None and value not in choices:
                raise ConfigError(f"{f.name}: expected one of {list(choices)}, got {value!r}")
        groups: dict[str, list[str]] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("exclusive"):
                groups.setdefault(f.metadata["exclusive"], []).append(f.name)
        for names in groups.values():
            given = [n for n in names if getattr(self, n) is not None]
            if len(given) != 1:
                raise ConfigError(f"{names[0]}: give exactly one of {names}, got {given or 'none'}")

    def input_paths(self) -> list[Path]:
        """Every path the job reads (from ``INPUTS``), in field order."""
        paths: list[Path] = []
        for name in self.INPUTS:
            value = getattr(self, name)
            for v in value if isinstance(value, tuple) else (value,):
                if v is not None and not str(v).startswith("models:/"):
                    paths.append(Path(v))
        return paths

    def output_paths(self) -> list[Path]:
        """Every path the job writes (from ``OUTPUTS``)."""
        return [Path(getattr(self, n)) for n in self.OUTPUTS if getattr(self, n) is not None]

    def command_line(self) -> list[str]:
        """The ``recsys-ebm`` arguments that run this job (for logs; defaults left out)."""
        argv = [self.KIND]
        tracking = getattr(self, "TRACKING", ())
        fields = sorted(dataclasses.fields(self), key=lambda f: f.name in tracking)
        for f in fields:  # where to log last, as in --help
            value = getattr(self, f.name)
            if f.default is not MISSING and value == f.default:
                continue
            flag = flag_of(f)
            if isinstance(value, bool):
                argv += [flag] if value else []
            elif isinstance(value, tuple) and f.metadata.get("repeat"):
                for v in value:
                    argv += [flag, str(v)]
            elif isinstance(value, tuple):
                argv += [flag, ",".join(str(v) for v in value)]
            elif value is not None:
                argv += [flag, str(value)]
        return argv

    def to_toml(self) -> str:
        """The config as a TOML table body (``key = value`` lines), e.g. a pipeline stage.

        ``None`` is left out (TOML has no null), so it reads back as the default.

        Raises:
            ValueError: a field is None where its default is not (it would not read back).
        """
        import json

        lines = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                if f.default is not None:
                    raise ValueError(
                        f"{f.name}: None cannot be written to TOML (no null) and its default "
                        f"is {f.default!r}"
                    )
                continue
            if isinstance(value, tuple):
                value = list(value)
            # JSON's strings, numbers, booleans and lists are valid TOML values
            lines.append(f"{f.name} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str) -> Self:
        """Read :meth:`to_toml`'s text (or any TOML table of the fields) back."""
        import tomllib

        return cls.from_dict(tomllib.loads(text))

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Field name -> command-line option."""
        return {f.name: flag_of(f) for f in dataclasses.fields(cls)}

    @classmethod
    def message_flags(cls) -> dict[str, str]:
        """Every name a message of this job may give an option (its fields, and the Python
        arguments of :attr:`ARGUMENTS`) -> the command-line option (what :func:`to_flags`
        reads)."""
        flags = cls.flags()
        return {**{a: flags[f] for a, f in cls.ARGUMENTS.items()}, **flags}


_TRACKING_GROUP = "MLflow tracking"


@dataclass(frozen=True, kw_only=True)
class TrackedJob(JobConfig):
    """A job that logs an MLflow run (nested under the active one, e.g. a pipeline's)."""

    #: fields that say where to log, not what to compute (left out of a pipeline stage's hash)
    TRACKING: ClassVar[tuple[str, ...]] = ("tracking_uri", "experiment", "no_mlflow")

    tracking_uri: str | None = opt(
        None,
        group=_TRACKING_GROUP,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db); "
        "an http://127.0.0.1:PORT server works the same way",
    )
    experiment: str = opt(
        "recsys-ebm", group=_TRACKING_GROUP, help="MLflow experiment name (default: recsys-ebm)"
    )
    no_mlflow: bool = opt(False, group=_TRACKING_GROUP, help="do not log this run to MLflow")


class JobResult:
    """Mixin of job results: ``summary()`` is what the CLI (and a pipeline stage) prints."""

    def summary(self) -> str:  # pragma: no cover - every result overrides it
        raise NotImplementedError


def error_message(exc: BaseException) -> str:
    """One line for a bad-input exception (an OSError names its path and cause)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | FileExistsError):
        return os_error_message(exc)
    return str(exc)


def os_error_message(exc: OSError) -> str:
    """One line naming the path and the cause: 'cannot write /x/y: No space left on device'."""
    import errno

    hint = {
        errno.ENOSPC: " (free some space or choose another --out)",
        errno.EDQUOT: " (disk quota exceeded: free some space or choose another --out)",
        errno.EROFS: " (read-only file system: choose another --out)",
        errno.EACCES: " (permission denied: choose a writable --out)",
        errno.EPERM: " (not permitted: choose a writable --out)",
    }.get(exc.errno or 0, "")
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}{hint}" if where else f"{reason}{hint}"


_LEADING_NAME = re.compile(r"^(?:[A-Z]\w*\.)?([a-z_][a-z0-9_]*):")
_SWITCH = re.compile(r"\b([a-z_][a-z0-9_]*)=True\b")
_QUOTED = re.compile(r"`([a-z_][a-z0-9_]*)`")


def to_flags(message: str, flags: dict[str, str]) -> str:
    """Translate Python argument names in a message to command-line options: the argument it
    starts with (``out: ...`` or ``TrainJob.out: ...`` -> ``--out: ...``), a switch it
    suggests (``overwrite=True`` -> ``--overwrite``) and an argument it names in backquotes
    (```out``` -> ``--out``). Names that are not keys of ``flags`` and other text are left
    as they are."""
    m = _LEADING_NAME.match(message)
    if m and m.group(1) in flags:
        message = flags[m.group(1)] + ":" + message[m.end() :]
    message = _SWITCH.sub(lambda s: flags.get(s.group(1), s.group(0)), message)
    return _QUOTED.sub(lambda s: flags.get(s.group(1), s.group(0)), message)
