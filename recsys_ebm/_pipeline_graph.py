"""The stage graph of :mod:`recsys_ebm.pipeline`: stage tables -> job configs, and the edges.

A stage table's keys are its job's fields (:mod:`recsys_ebm.jobs`), less those the runner
wires itself (:data:`MANAGED`: outputs, and inputs read from other stages). A stage runs after
the stages whose declared outputs it reads (:func:`wire`); a ranker's ``components`` name the
train stages it blends (:func:`components`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.jobs import JobConfig, job_config

if TYPE_CHECKING:
    from recsys_ebm.pipeline import Stage

__all__ = ["MANAGED", "components", "needs", "registry_name", "set_path", "wire"]

#: fields the runner fills in itself (outputs and inputs wired between stages)
MANAGED = {
    "prepare": {"out", "overwrite"},
    "train": {"data", "out", "overwrite", "overrides"},
    "evaluate": {"data", "report", "overwrite", "models"},
    "register": {"run_id", "model_dir"},
    "recommend": {"data", "out", "model"},
}
_TRACKING = {"tracking_uri", "experiment", "no_mlflow"}


def stage_job(where: str, kind: str, table: dict[str, Any], wired: dict[str, Any]) -> JobConfig:
    """A stage table (its keys: the job's fields) plus the runner's wiring -> the job config."""
    cls = job_config(kind)
    fields = [f.name for f in dataclasses.fields(cls)]
    managed = MANAGED.get(kind, set())
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


def set_path(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    """Apply one ``--set stage.key=value`` to the parsed pipeline file."""
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set: expected stage.key=value, got {dotted!r}")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: --set {dotted}: {p!r} is not a table")
    node[parts[-1]] = value


def wire(stages: list[Stage]) -> None:
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


def components(
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


def registry_name(ref: str) -> str | None:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> NAME; anything else -> None."""
    from recsys_ebm.registry import parse_model_uri

    try:
        return parse_model_uri(ref)[0]
    except ValueError:
        return None


def needs(stages: list[Stage], kind: str, where: str, path: Path) -> None:
    """A stage that reads the output of a ``kind`` stage: the file must declare one."""
    if not any(s.kind == kind for s in stages):
        raise ConfigError(f"{where}: needs the output of a [{kind}] stage, which {path} lacks")
