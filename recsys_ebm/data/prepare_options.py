"""The options of ``prepare`` (declared once: the prepare job, its CLI flags and the pipelines'
``[prepare]`` tables all read these fields). Cheap to import: no numpy or polars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_ebm.config import Config
from recsys_ebm.diagnostics import ConfigError

__all__ = ["DEFAULT_INPUT", "FORMATS", "PrepareOptions", "SPLITS", "check_fractions"]

#: The bundled MovieLens ml-latest-small (GroupLens licence: see data/ml-latest-small/README.txt).
DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "data" / "ml-latest-small" / "ratings.csv"

# the one definition of the input formats and splits (readers and splits import them from here:
# this module imports no polars or numpy, so the CLI's --help can read them cheaply)
FORMATS = (
    "auto",
    "ml-100k",
    "ml-1m",
    "ml-latest",
    "movietweetings",
    "csv",
    "tsv",
    "parquet",
    "adjacency",
)
SPLITS = ("random", "temporal", "leave-last-k", "users", "predefined")

_COLUMNS = "columns of generic csv/tsv/parquet input"


def _opt(default: Any, help: str, group: str | None = None, **meta: Any) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help, "group": group, **meta})


@dataclass(frozen=True)
class PrepareOptions(Config):
    """Everything ``prepare`` does to the log, as data (saved in the dataset's manifest)."""

    format: str = _opt(
        "auto",
        "input format (default: auto-detect from the file name and first line)",
        choices=FORMATS,
    )
    user_col: str = _opt("user_id", "user id column (default: user_id)", _COLUMNS)
    item_col: str = _opt("item_id", "item id column (default: item_id)", _COLUMNS)
    rating_col: str | None = _opt(
        "rating", "rating column; ignored when absent (default: rating)", _COLUMNS
    )
    timestamp_col: str | None = _opt(
        "timestamp", "timestamp column, unix seconds or ISO dates (default: timestamp)", _COLUMNS
    )
    separator: str | None = _opt(None, "field separator of csv/tsv input", _COLUMNS)
    min_rating: float | None = _opt(
        None,
        "keep ratings >= X as positives (default: every interaction is positive)",
        "filtering",
    )
    min_user_interactions: int = _opt(
        1, "iterative k-core: minimum interactions per user (default: 1)", "filtering"
    )
    min_item_interactions: int = _opt(
        1, "iterative k-core: minimum interactions per item (default: 1)", "filtering"
    )
    split: str = _opt(
        "random",
        "random: per-user holdout; temporal: global time cutoff; leave-last-k: "
        "each user's last k by time; users: held-out users with fold-in histories; "
        "predefined: --test/--valid files (default: random)",
        "splitting",
        choices=SPLITS,
    )
    test_fraction: float = _opt(
        0.2,
        "share of each user's pairs (random), of pairs by time (temporal) or of "
        "users (users) in the test part (default: 0.2)",
        "splitting",
    )
    valid_fraction: float = _opt(
        0.1, "the same for the validation part; 0 for none (default: 0.1)", "splitting"
    )
    leave_k: int = _opt(1, "leave-last-k: test items per user", "splitting")
    valid_k: int = _opt(1, "leave-last-k: valid items per user", "splitting")
    fold_in_fraction: float = _opt(
        0.8,
        "users: share of each held-out user's history given as input (default 0.8)",
        "splitting",
    )
    test_file: str | None = _opt(
        None, "predefined: test file, same format as --input", "splitting", flag="--test"
    )
    valid_file: str | None = _opt(
        None,
        "predefined: optional validation file, same format as --input",
        "splitting",
        flag="--valid",
    )
    seed: int = _opt(0, "seed of every random choice (default: 0)", "splitting")

    def validate(self) -> None:
        """Rules on the options themselves. The fractions' ranges are checked by
        :func:`check_fractions` when the split runs (only the splits that use them)."""
        super().validate()
        if self.format not in FORMATS:
            raise ConfigError(f"format: expected one of {list(FORMATS)}, got {self.format!r}")
        if self.split not in SPLITS:
            raise ConfigError(f"split: expected one of {list(SPLITS)}, got {self.split!r}")
        for name in ("min_user_interactions", "min_item_interactions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.split == "predefined" and not self.test_file:
            raise ConfigError("test_file: the 'predefined' split needs a test file")
        if self.split != "predefined" and (self.test_file or self.valid_file):
            which = "test_file" if self.test_file else "valid_file"
            raise ConfigError(
                f"{which}: a test/valid file needs split 'predefined', got {self.split!r}"
            )
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed: expected an integer in [0, 2**63), got {self.seed}")
        sep = self.separator
        if sep is not None and (len(sep) != 1 or len(sep.encode()) != 1 or sep in '\r\n"'):
            raise ConfigError(
                f"separator: expected one single-byte character (e.g. ',' or a tab), got {sep!r}"
            )

    def check_fractions(self) -> None:
        """The fractions of the splits that use them (random, temporal, users)."""
        if self.split in ("random", "temporal", "users"):
            check_fractions(self.test_fraction, self.valid_fraction)

    @property
    def columns(self) -> Any:
        """The :class:`~recsys_ebm.data.readers.ColumnMap` of generic input."""
        from recsys_ebm.data.readers import ColumnMap

        return ColumnMap(
            self.user_col, self.item_col, self.rating_col, self.timestamp_col, self.separator
        )


def check_fractions(test_fraction: float, valid_fraction: float) -> None:
    """``0 < test_fraction < 1``, ``0 <= valid_fraction < 1`` and their sum ``< 1``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    if not 0.0 <= valid_fraction < 1.0 or test_fraction + valid_fraction >= 1.0:
        raise ValueError(
            f"valid_fraction: expected a value in [0, 1) with test_fraction + valid_fraction < 1, "
            f"got {valid_fraction} (test_fraction {test_fraction})"
        )
