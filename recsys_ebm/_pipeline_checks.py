"""Checks a pipeline file passes before any of its stages runs (see :mod:`recsys_ebm.pipeline`).

A bad value caught here costs nothing; the same value caught when its stage starts costs every
stage before it. So the model config of each ``[train.NAME]`` table (its ``set`` keys and its
``config`` file) is built here exactly as ``recsys-ebm train`` will build it, and a ranker's
components are checked against the models they name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from recsys_ebm.diagnostics import ConfigError

__all__ = ["check_pipeline_name", "check_stage_name", "check_train_config", "toml_value"]

#: a stage name becomes a directory (``RUN_DIR/models/NAME``) and a file name (its stamp)
_STAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def check_stage_name(path: Path, name: str) -> None:
    """``[train.NAME]``: NAME must be a plain identifier, so it cannot leave the run directory.

    Raises:
        ConfigError: names the file and the stage.
    """
    if not _STAGE_NAME.fullmatch(name):
        raise ConfigError(
            f"{path}: [train.{json.dumps(name)}]: stage name {name!r} must be a plain identifier "
            "(letters, digits, '_' and '-', starting with a letter or '_')"
        )


def check_pipeline_name(path: Path, name: str) -> None:
    """The pipeline name is the default run directory ``runs/NAME``: one path component."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(
            f"{path}: [pipeline]: key 'name' is the default run directory runs/NAME and must be "
            f"a single path component (no '/', not '.' or '..'), got {name!r}"
        )


def toml_value(value: Any) -> str:
    """A ``set`` value as the text of a ``--set key=VALUE`` (parsed back as TOML by the CLI).

    Scalars keep their plain text (strings unquoted, as typed on a command line); lists and
    booleans are JSON (valid TOML); tables become TOML inline tables.
    """
    if isinstance(value, dict):
        pairs = (f"{json.dumps(str(k))} = {_inline(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, list | bool):
        return json.dumps(value)
    return str(value)


def _inline(value: Any) -> str:
    """A value nested in an inline table: strings quoted (TOML basic strings)."""
    if isinstance(value, dict):
        return toml_value(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, bool | str):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def check_train_config(
    where: str,
    model: str,
    config_file: str | None,
    overrides: list[str],
    stage_components: list[str] | None,
    search: list[str] | None = None,
    search_seeds: str | None = None,
) -> None:
    """Build the model config a train stage will build (``--config`` then ``--set``).

    Args:
        where: ``FILE: [train.NAME]``, prefixed to every message.
        model: the registry name of the stage's model.
        config_file: the stage's ``config`` key, if any.
        overrides: the stage's ``KEY=VALUE`` strings, as passed to ``--set``.
        stage_components: for a ranker built from train stages, their model names.
        search: the stage's ``search`` grid as ``KEY=[...]`` strings (``--search``); every
            point's config is built too.
        search_seeds: the stage's ``search_seeds`` (``--search-seeds``), checked with it.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or range, or a ranker component
            that cannot be blended; the message starts with ``where``.
    """
    from recsys_ebm.models import get_model_class

    cls = get_model_class(model)
    try:
        config = cls.config_class.from_sources(config_file, overrides)
    except (ValueError, TypeError) as exc:
        source = "keys 'config' and 'set'" if config_file else "key 'set'"
        raise ConfigError(f"{where}: {source}: {exc}") from exc
    if search:
        from recsys_ebm.models.search import grid_configs, parse_grid, parse_seeds

        try:
            grid = parse_grid(search, cls.config_class)
            grid_configs(config, grid)
            parse_seeds(search_seeds, config, grid)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: key 'search': {exc}") from exc
    if model == "ranker":
        _check_ranker(where, config, stage_components)


def _check_ranker(where: str, config: Any, stage_components: list[str] | None) -> None:
    """What ``Ranker`` checks only when it builds its components, checked up front."""
    from recsys_ebm.models import MODEL_PATHS, get_model_class

    models: list[str] = []
    if stage_components is not None:
        models = list(stage_components)
    else:
        for ref in config.components:
            if ref in MODEL_PATHS:
                models.append(ref)
                continue
            meta = Path(ref) / "model.json"
            if not meta.is_file():
                raise ConfigError(
                    f"{where}: key 'set.components': {ref!r} is neither a model name "
                    f"{sorted(MODEL_PATHS)} nor a saved model directory"
                )
            try:
                models.append(str(json.loads(meta.read_text())["model"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{where}: key 'set.components': {meta} is unreadable") from exc
    for name in models:
        if name == "ranker":
            raise ConfigError(f"{where}: key 'components': a ranker cannot contain a ranker")
        if name in MODEL_PATHS and get_model_class(name).history_values != "binary":
            raise ConfigError(
                f"{where}: key 'components': {name!r} ranks from ratings; the ranker blends "
                "models that rank from interaction histories"
            )
    from recsys_ebm.models.capabilities import CandidateRetriever

    if config.candidates == "retriever" and not any(
        name in MODEL_PATHS and issubclass(get_model_class(name), CandidateRetriever)
        for name in models
    ):
        raise ConfigError(
            f"{where}: key 'set.candidates': 'retriever' needs a component with retrieve() "
            f"(components: {models})"
        )
    for name, table in (config.component_config or {}).items():
        if name not in MODEL_PATHS:
            raise ConfigError(
                f"{where}: key 'set.component_config': {name!r} is not a model name "
                f"{sorted(MODEL_PATHS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{where}: key 'set.component_config.{name}' expects a table of config keys, "
                f"got {table!r}"
            )
        try:
            get_model_class(name).config_class.from_dict(table)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: key 'set.component_config.{name}': {exc}") from exc
