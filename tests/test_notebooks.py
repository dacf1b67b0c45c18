"""Analyst notebooks: each runs top to bottom (its own asserts check what it shows), the committed
files are current and executed, and notebook 04 reads one pipeline run's MLflow runs only."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NB_DIR.glob("*.ipynb"))
NB04 = "04_model_comparison.ipynb"


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NB_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def execute(name: str, tmp_path: Path, overrides: str = "") -> nbformat.NotebookNode:
    nb = nbformat.read(NB_DIR / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
    params[0].source += "\n" + overrides
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode, kind: str | None = None) -> list:
    return [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if kind is None or o.get("output_type") == kind or kind in o.get("data", {})
    ]


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(o.get("text", "") for o in _outputs(nb, "stream"))


def _table(nb: nbformat.NotebookNode) -> str:
    """Notebook 04's metrics table, as displayed."""
    return next(
        o["data"]["text/plain"] for o in _outputs(nb, "execute_result") if "ndcg@10" in str(o)
    )


@pytest.mark.parametrize("name", [n for n in NOTEBOOKS if n != NB04])
def test_notebook_executes(name, tmp_path):
    nb = execute(name, tmp_path)
    assert not _outputs(nb, "error")
    assert _outputs(nb, "image/png"), f"{name} shows no plot"


def _manual_evaluate(run_dir: Path, uri: str, out: Path) -> None:
    """A run logged by hand, outside any pipeline (cut-off 5 only, two of the pipeline's models)."""
    r = subprocess.run(
        [sys.executable, "-m", "recsys_ebm", "evaluate", "--data", str(run_dir / "data")]
        + ["--model", str(run_dir / "models" / "popularity")]
        + ["--model", str(run_dir / "models" / "ease"), "--k", "5", "--bootstrap", "20"]
        + ["--report", str(out), "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr


def test_notebook_04_reads_one_pipeline_run_despite_a_foreign_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    # 1. the notebook runs the (reduced) quickstart pipeline into this store and reads it back
    nb = execute(
        NB04, tmp_path, f"TRACKING_URI = {uri!r}\nRUN_PIPELINE = True\nRUN_DIR = {str(run_dir)!r}"
    )
    assert not _outputs(nb, "error") and _outputs(nb, "image/png")
    first, first_nb = _text(nb), nb
    assert "reading pipeline run" in first
    # 2. a manual `recsys-ebm evaluate`, later than the pipeline: its runs are the newest
    # evaluate-model runs of popularity and ease, with ndcg@5 and no ndcg@10
    _manual_evaluate(run_dir, uri, tmp_path / "manual")
    nb = execute(NB04, tmp_path, f"TRACKING_URI = {uri!r}")
    assert not _outputs(nb, "error"), "the foreign run broke the notebook"
    text = _text(nb)
    pipeline_id = text.split("reading pipeline run ")[1].split()[0]
    assert f"reading pipeline run {pipeline_id}" in first, "the same pipeline run is read"
    assert f"run directory {run_dir}" in text
    assert _table(nb) == _table(first_nb), "the manual run's metrics leaked into the table"
    # 3. choosing a pipeline run that does not exist is refused by name
    with pytest.raises(CellExecutionError, match="PIPELINE_RUN_ID: expected one of"):
        execute(NB04, tmp_path, f"TRACKING_URI = {uri!r}\nPIPELINE_RUN_ID = 'nope'")


def test_notebook_04_refuses_an_empty_or_missing_store(tmp_path):
    import mlflow

    empty = tmp_path / "empty.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{empty}").search_experiments()  # tables, no runs
    assert empty.exists()
    with pytest.raises(CellExecutionError, match="has no runs in experiment 'recsys-ebm'"):
        execute(NB04, tmp_path, f"TRACKING_URI = 'sqlite:///{empty}'")
    # a relative sqlite path is taken from the repository root; a missing file is not created
    missing = ROOT / "no-such-dir-for-tests" / "mlflow.db"
    with pytest.raises(CellExecutionError, match="no MLflow store at .*no-such-dir-for-tests"):
        execute(NB04, tmp_path, "TRACKING_URI = 'sqlite:///no-such-dir-for-tests/mlflow.db'")
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_current_and_executed(name):
    """The .ipynb equals what build_notebooks.py generates and carries outputs (plots included).

    If this fails: python notebooks/build_notebooks.py --execute
    """
    build = _builder()
    assert sorted(build.NOTEBOOKS) == NOTEBOOKS
    committed = nbformat.read(NB_DIR / name, as_version=4)
    expected = build.generate(name)
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in expected.cells
    ], f"{name} is stale: run python notebooks/build_notebooks.py --execute"
    for k, cell in enumerate(committed.cells):
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        if "parameters" not in cell.metadata.get("tags", []):
            assert outputs, f"{name}, cell {k}: no outputs (not executed)"
        assert not [o for o in outputs if o.get("output_type") == "error"], f"{name}, cell {k}"
        if build.is_plot_cell(cell.source):
            assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}, cell {k}"
    assert any(build.is_plot_cell(c.source) for c in committed.cells if c.cell_type == "code")


def test_committed_notebooks_stay_small():
    total = sum((NB_DIR / n).stat().st_size for n in NOTEBOOKS)
    assert total < 1_500_000, f"committed notebooks weigh {total:,} bytes"
