"""Cases that belong to no single subcommand."""

from __future__ import annotations

from tests.cli_cases import Case
from tests.cli_cases._world import dataset, popularity_model

CASES = [
    Case(
        id="recommend-n-not-an-int",
        argv=lambda w, t: [
            "recommend",
            "--model",
            str(popularity_model(w)),
            "--data",
            str(dataset(w)),
            "--n",
            "ten",
            "--out",
            str(t / "recs.parquet"),
        ],
        expect=("--n",),
        absent=lambda w, t: [t / "recs.parquet"],
    ),
]
