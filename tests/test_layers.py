"""Imports run one way: core -> data -> models -> evaluation / ranking -> jobs -> cli / pipelines.

Every ``import`` and ``from ... import`` of every module of the package is read from its source
(function-level imports included, since lazy imports are imports too) and must name a module of
the same layer or a lower one. See CONTRIBUTING.md for what each layer holds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "recsys_ebm"

#: (layer number, name) for a module path relative to the package, by longest matching prefix
LAYERS: dict[str, tuple[int, str]] = {
    "": (6, "package facade"),  # the root: lazy re-exports for users; library code imports none
    "_version": (0, "core"),
    "config": (0, "core"),
    "io": (0, "core"),
    "progress": (0, "core"),
    "device": (0, "core"),
    "diagnostics": (0, "core"),
    "compat": (0, "core"),
    "data": (1, "data"),
    "models": (2, "models"),
    "models.distributed": (2, "models"),  # torch.distributed context (imports core only)
    "evaluation": (3, "evaluation/ranking"),
    "ranking": (3, "evaluation/ranking"),
    "anomalies": (3, "evaluation/ranking"),
    "jobs": (4, "jobs"),
    "jobs.spark": (4, "jobs"),  # Spark batch scoring (pyspark imported lazily, `spark` extra)
    "batch": (4, "jobs"),
    "_batch_job": (4, "jobs"),
    "registry": (4, "jobs"),
    "serving": (4, "jobs"),
    "tracking": (4, "jobs"),
    "cli": (5, "cli/pipelines"),
    "pipeline": (5, "cli/pipelines"),
    "_pipeline_checks": (5, "cli/pipelines"),
    "_pipeline_exec": (5, "cli/pipelines"),
    "_pipeline_graph": (5, "cli/pipelines"),
    "_pipeline_hash": (5, "cli/pipelines"),
    "_pipeline_run": (5, "cli/pipelines"),
    "__main__": (5, "cli/pipelines"),
}


def layer_of(dotted: str) -> tuple[int, str]:
    """Layer of ``recsys_ebm.a.b`` (or of a module path ``a.b`` inside the package)."""
    parts = dotted.split(".")
    if parts and parts[0] == "recsys_ebm":
        parts = parts[1:]
    if not parts:
        return LAYERS[""]
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(dotted)


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["recsys_ebm", *parts])


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of ``recsys_ebm`` modules in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("recsys_ebm")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("recsys_ebm"):
                continue
            if mod == "recsys_ebm":  # names from the root: submodules or lazy re-exports
                for a in node.names:  # __version__ is core's (recsys_ebm._version)
                    sub = "_version" if a.name == "__version__" else a.name
                    found.append((node.lineno, f"recsys_ebm.{sub}"))
            else:
                found.append((node.lineno, mod))
    return found


def test_every_module_has_a_layer():
    missing = []
    for path in _modules():
        try:
            layer_of(_module_name(path))
        except KeyError:
            missing.append(_module_name(path))
    assert not missing, f"add these modules to LAYERS (and CONTRIBUTING.md): {missing}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_imports_from_a_layer_above_it(path):
    name = _module_name(path)
    mine, my_name = layer_of(name)
    bad = []
    for line, mod in _imports(path):
        if mod == "recsys_ebm":
            continue
        try:
            theirs, their_name = layer_of(mod)
        except KeyError:  # a name re-exported by the facade, e.g. recsys_ebm.Dataset
            theirs, their_name = LAYERS[""]
        if theirs > mine:
            bad.append(f"line {line}: {mod} ({their_name}) from {my_name}")
    assert not bad, f"{name} imports upward:\n" + "\n".join(bad)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The check can fail: a models module that imports evaluation is caught."""
    fake = PKG / "models" / "_layer_probe_tmp.py"
    fake.write_text("def f():\n    from recsys_ebm.evaluation.metrics import ndcg\n")
    try:
        ups = [m for _, m in _imports(fake) if layer_of(m)[0] > layer_of(_module_name(fake))[0]]
    finally:
        fake.unlink()
    assert ups == ["recsys_ebm.evaluation.metrics"]


def test_pipelines_do_not_drive_the_cli():
    """Pipelines load TOML into the jobs' configs: no argparse, no CLI module."""
    for path in [PKG / "pipeline.py", *PKG.glob("_pipeline*.py"), *PKG.glob("pipelines/*.py")]:
        mods = {m for _, m in _imports(path)}
        assert not {m for m in mods if m.startswith("recsys_ebm.cli")}, path
        assert "import argparse" not in path.read_text(), path
