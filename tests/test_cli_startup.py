"""`recsys-ebm --help` starts fast: no torch, mlflow, polars, numpy, scipy or pandas import.

Each check runs in a fresh interpreter (the test process itself has them all loaded) and looks
at ``sys.modules`` after the help text is printed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recsys_ebm.cli import SUBCOMMANDS

HEAVY = ("torch", "mlflow", "polars", "numpy", "scipy", "pandas", "pyarrow", "matplotlib")

PROBE = """
import contextlib, io, json, sys
from recsys_ebm.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main({argv!r})
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"code": code, "help": out.getvalue(),
                  "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _probe(argv: list[str]) -> dict:
    code = PROBE.format(argv=argv, heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"]] + [[cmd, "--help"] for cmd in SUBCOMMANDS])
def test_help_imports_nothing_heavy(argv):
    result = _probe(argv)
    assert result["code"] == 0
    assert "usage: recsys-ebm" in result["help"]
    assert result["heavy"] == [], f"`recsys-ebm {' '.join(argv)}` imported {result['heavy']}"


def test_package_import_is_lazy_but_complete():
    code = (
        "import sys, recsys_ebm; before = 'torch' in sys.modules; "
        "from recsys_ebm import Dataset, Recommender, load_model, get_model_class; "
        "from recsys_ebm.models import as_user_items; "
        "print(before, Dataset.__module__, Recommender.__module__, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out == ["False", "recsys_ebm.data.dataset", "recsys_ebm.models.base", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import recsys_ebm

        recsys_ebm.nope  # noqa: B018


def test_prepare_choices_match_the_data_layer():
    """One definition of the formats and splits (data/prepare_options.py, light to import): the
    readers, the splits and the CLI's --help read the same tuples, so they cannot drift."""
    from recsys_ebm.cli import prepare
    from recsys_ebm.data import prepare_options
    from recsys_ebm.data.readers import FORMATS
    from recsys_ebm.data.splits import SPLITS

    assert prepare.FORMATS is FORMATS is prepare_options.FORMATS
    assert prepare.SPLITS is SPLITS is prepare_options.SPLITS
    assert "adjacency" in FORMATS and "predefined" in SPLITS
