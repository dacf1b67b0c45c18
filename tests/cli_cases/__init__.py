"""Bad-input cases for the table-driven CLI test (``tests/test_cli_bad_input.py``).

Each module of this package holds the cases of one area as ``CASES: list[Case]``. A case builds its
argv from a shared :class:`World` (prepared datasets, trained models, an MLflow store, built lazily
once per test session) and a fresh temporary directory, and names what its error message must
contain and which paths must not exist afterwards. The test runs every case through the real CLI in
a subprocess and asserts exit status 2, no traceback, the message, and nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class World:
    """Artifacts shared by the cases, each built once on first use (``get(key, builder)``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, Any] = {}
        self.cleanups: list[Callable[[], None]] = []  # run when the test module ends

    def get(self, key: str, builder: Callable[[World], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = builder(self)
        return self._cache[key]

    def dir(self, name: str) -> Path:
        """A fresh directory under the world's root (for builders)."""
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: short name shown by pytest.
        argv: (world, tmp) -> CLI arguments after ``recsys-ebm``; may create files in ``tmp``.
        expect: substrings the error message (stderr) must contain, e.g. the option or file name.
        absent: (world, tmp) -> paths that must not exist after the run (nothing written).
        env: extra environment variables for the subprocess.
        stdin: text given on standard input.
    """

    id: str
    argv: Callable[[World, Path], list[str]]
    expect: tuple[str, ...]
    absent: Callable[[World, Path], list[Path]] = field(default=lambda w, t: [])
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
