"""Typed, frozen model configs that round-trip to dicts, TOML files and ``--set key=value``.

Every model config subclasses :class:`Config`. Shared names across models: ``n_hidden``,
``embedding_size``, ``epochs``, ``learning_rate``, ``weight_decay``, ``batch_size``, ``seed``,
``device``. Cross-field rules go in ``validate`` and run at construction.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Self

from recsys_ebm.diagnostics import ConfigError

__all__ = ["Config", "parse_overrides"]


def _coerce(name: str, value: Any, annotation: Any, where: str) -> Any:
    """Coerce ``value`` to ``annotation`` (int/float/str/bool/tuple/Optional) or raise."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last: Exception | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg, where)
            except ConfigError as exc:
                last = exc
        raise last or ConfigError(f"{where}{name}: cannot be None")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}{name}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(name, v, inner, where) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}{name}: expected a bool, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}{name}: expected an int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}{name}: expected an int, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}{name}: expected a float, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}{name}: expected a float, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}{name}: expected a string, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class for frozen configs; subclasses add fields and override :meth:`validate`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(f.name, value, hints[f.name], f"{type(self).__name__}.")
            object.__setattr__(self, f.name, coerced)
            self._check_finite(f.name, coerced)
        self.validate()

    def _check_finite(self, name: str, value: Any) -> None:
        """Every float (and every float in a tuple) must be finite: NaN or inf would train a
        model of NaNs, or pass every range check unseen (NaN compares False)."""
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(
                    f"{type(self).__name__}.{name}: expected a finite number, got {value!r}"
                )

    def validate(self) -> None:
        """Check cross-field rules; raise :class:`ConfigError` naming the field."""

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{type(self).__name__}.{name}: expected > 0, got {value!r}")

    def _check_nonnegative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{type(self).__name__}.{name}: expected >= 0, got {value!r}")

    def _check_nonempty(self, *names: str) -> None:
        for name in names:
            if not getattr(self, name):
                raise ConfigError(
                    f"{type(self).__name__}.{name}: expected at least one value, got an empty list"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "") -> Self:
        """Build from a dict, rejecting unknown keys with the list of known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}{cls.__name__}: unknown key(s) {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> Self:
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_sources(
        cls, config_file: str | Path | None = None, overrides: list[str] | None = None
    ) -> Self:
        """Defaults, then a TOML file's keys, then ``key=value`` overrides (CLI ``--set``)."""
        data: dict[str, Any] = {}
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config_file: file not found: {path}")
            try:
                loaded = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config_file: {path} is not valid TOML: {exc}") from exc
            data.update(loaded.get("model", loaded))
        data.update(parse_overrides(overrides or []))
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``["k=v", ...]``; values are parsed as TOML scalars when possible, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"overrides: expected key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"overrides: empty key in {pair!r}")
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out
