"""Outputs on a full or read-only file system: a real small tmpfs mounted for the case (root only;
the case skips where mounting is not permitted)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli_cases import Case, World
from tests.cli_cases._world import dataset, log_csv, popularity_model


def _mount(w: World, where: Path, *, size: str, read_only: bool = False) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    w.cleanups.append(lambda: subprocess.run(["umount", "-l", str(where)], check=False))
    return where


def _full(w: World, t: Path) -> Path:
    return _mount(w, t / "full", size="16k")


def _ro(w: World, t: Path) -> Path:
    return _mount(w, t / "ro", size="64k", read_only=True)


CASES = [
    Case(
        id="disk-prepare-out-on-full-disk",
        argv=lambda w, t: ["prepare", "--input", str(log_csv(w)), "--out", str(_full(w, t) / "d")],
        expect=("No space left on device",),
        absent=lambda w, t: [t / "full" / "d"],
    ),
    Case(
        id="disk-prepare-out-on-read-only-fs",
        argv=lambda w, t: ["prepare", "--input", str(log_csv(w)), "--out", str(_ro(w, t) / "d")],
        expect=("Read-only file system",),
        absent=lambda w, t: [t / "ro" / "d"],
    ),
    Case(
        id="disk-recommend-out-on-full-disk",
        argv=lambda w, t: [
            "recommend",
            "--model",
            str(popularity_model(w)),
            "--data",
            str(dataset(w)),
            "--no-mlflow",
            "--out",
            str(_full(w, t) / "recs.parquet"),
        ],
        expect=("No space left on device",),
        absent=lambda w, t: [t / "full" / "recs.parquet"],
    ),
    Case(
        id="disk-train-out-on-read-only-fs",
        argv=lambda w, t: [
            "train",
            "--data",
            str(dataset(w)),
            "--model",
            "popularity",
            "--no-mlflow",
            "--out",
            str(_ro(w, t) / "model"),
        ],
        expect=("Read-only file system",),
        absent=lambda w, t: [t / "ro" / "model"],
    ),
]
