"""Bad inputs of ``recsys-ebm prepare``: malformed logs, unsafe or unusable ``--out``.

Each case writes its own small input into the case's temporary directory (the subprocess's
working directory), so what the message must name is known exactly.
"""

from __future__ import annotations

from pathlib import Path

from tests.cli_cases import Case, World
from tests.cli_cases._world import log_csv

ML_LATEST_HEADER = "userId,movieId,rating,timestamp\n"


def _file(t: Path, name: str, text: str) -> Path:
    p = t / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def _prepare(t: Path, name: str, text: str, *extra: str) -> list[str]:
    """argv of ``prepare`` reading ``name`` (written with ``text``) into ``t/out``."""
    return ["prepare", "--input", str(_file(t, name, text)), "--out", str(t / "out"), *extra]


def _out(w: World, t: Path) -> list[Path]:
    return [t / "out"]


def _predefined_with_test(t: Path, test_text: str | None) -> list[str]:
    """argv of a predefined split; ``test_text`` None names a --test file that does not exist."""
    train = _file(t, "train.csv", "user_id,item_id\n1,10\n1,11\n2,10\n2,12\n")
    test = t / "nope.csv" if test_text is None else _file(t, "test.csv", test_text)
    return [
        "prepare",
        "--input",
        str(train),
        "--split",
        "predefined",
        "--test",
        str(test),
        "--out",
        str(t / "out"),
    ]


def _logs_dir(t: Path) -> Path:
    """A directory holding an ml-latest ratings.csv (an input that --out must not contain)."""
    return _file(t, "logs/ratings.csv", ML_LATEST_HEADER + "1,2,4.0,100\n1,3,5.0,101\n").parent


CASES = [
    # ---------------------------------------------------------------- malformed values
    Case(
        id="data-rating-inf",
        argv=lambda w, t: _prepare(t, "ratings.csv", ML_LATEST_HEADER + "1,2,4,100\n1,3,inf,101\n"),
        expect=("ratings.csv, line 3, column 'rating'", "finite", "'inf'"),
        absent=_out,
    ),
    Case(
        id="data-rating-absurd-magnitude",
        argv=lambda w, t: _prepare(t, "ratings.csv", ML_LATEST_HEADER + "1,2,1e308,100\n"),
        expect=("ratings.csv, line 2, column 'rating'", "1,000,000", "'1e308'"),
        absent=_out,
    ),
    Case(
        id="data-adjacency-word-token",
        argv=lambda w, t: _prepare(t, "train.txt", "0 1 2\n1 abc 3\n"),
        expect=("train.txt, line 2", "'abc'"),
        absent=_out,
    ),
    Case(
        id="data-adjacency-float-token",
        argv=lambda w, t: _prepare(t, "train.txt", "0 1 2\n1 2\n2 1.5\n"),
        expect=("train.txt, line 3", "'1.5'"),
        absent=_out,
    ),
    Case(
        id="data-adjacency-tab",
        argv=lambda w, t: _prepare(t, "train.txt", "0 1 2\n1\t2 3\n"),
        expect=("train.txt, line 2", "'1\\t2'"),
        absent=_out,
    ),
    Case(
        id="data-predefined-test-unparseable-id",
        argv=lambda w, t: _predefined_with_test(t, "user_id,item_id\n1,12\nabc,10\n"),
        expect=("test.csv, line 3, column 'user_id'", "'abc'"),
        absent=_out,
    ),
    Case(
        id="data-predefined-test-missing",
        argv=lambda w, t: _predefined_with_test(t, None),
        expect=("--test: file not found", "nope.csv"),
        absent=_out,
    ),
    # ---------------------------------------------------------------- files that crashed
    Case(
        id="data-empty-file",
        argv=lambda w, t: _prepare(t, "ratings.csv", ""),
        expect=("--input", "ratings.csv is an empty file (0 bytes)"),
        absent=_out,
    ),
    Case(
        id="data-header-only",
        argv=lambda w, t: _prepare(t, "log.csv", "user_id,item_id,rating\n"),
        expect=("log.csv: empty input",),
        absent=_out,
    ),
    Case(
        id="data-ml-latest-without-rating",
        argv=lambda w, t: _prepare(t, "ratings.csv", "userId,movieId,timestamp\n1,2,100\n"),
        expect=("ratings.csv: column 'rating' not found", "userId,movieId,rating,timestamp"),
        absent=_out,
    ),
    Case(
        id="data-ml-latest-without-timestamp",
        argv=lambda w, t: _prepare(t, "ratings.csv", "userId,movieId,rating\n1,2,4\n"),
        expect=("ratings.csv: column 'timestamp' not found",),
        absent=_out,
    ),
    Case(
        id="data-ml100k-comma-delimiter",
        argv=lambda w, t: _prepare(t, "u.data", "196,242,3,881250949\n186,302,3,891717742\n"),
        expect=("u.data, line 1", "a tab", "'196,242,3,881250949'"),
        absent=_out,
    ),
    Case(
        id="data-ml100k-short-line",
        argv=lambda w, t: _prepare(t, "u.data", "196\t242\t3\t881250949\n186\t302\t3\n"),
        expect=("u.data, line 2", "got 3 field(s)"),
        absent=_out,
    ),
    Case(
        id="data-bad-separator",
        argv=lambda w, t: _prepare(t, "log.csv", "u;i\n1;2\n", "--separator", ";;"),
        expect=("--separator", "';;'"),
        absent=_out,
    ),
    # ---------------------------------------------------------------- unusable or unsafe --out
    Case(
        id="data-out-parent-is-a-file",
        argv=lambda w, t: [
            "prepare",
            "--input",
            str(log_csv(w)),
            "--out",
            str(_file(t, "plain.txt", "x") / "out"),
        ],
        expect=("--out", "plain.txt is a file, not a directory"),
    ),
    Case(
        id="data-out-is-an-existing-file",
        argv=lambda w, t: [
            "prepare",
            "--input",
            str(log_csv(w)),
            "--out",
            str(_file(t, "plain.txt", "x")),
            "--overwrite",
        ],
        expect=("--out", "plain.txt is an existing file"),
    ),
    Case(
        id="data-out-contains-input",
        argv=lambda w, t: [
            "prepare",
            "--input",
            str(_logs_dir(t) / "ratings.csv"),
            "--out",
            str(t / "logs"),
            "--overwrite",
        ],
        expect=("--out", "contains the --input path"),
    ),
    Case(
        id="data-out-is-input-directory",
        argv=lambda w, t: [
            "prepare",
            "--input",
            str(_logs_dir(t)),
            "--out",
            str(t / "logs"),
            "--overwrite",
        ],
        expect=("--out", "contains the --input path"),
    ),
    Case(
        id="data-out-contains-test-file",
        argv=lambda w, t: [
            "prepare",
            "--input",
            str(_file(t, "train.txt", "0 1 2\n1 2 3\n")),
            "--split",
            "predefined",
            "--test",
            str(_file(t, "held/test.txt", "0 3\n")),
            "--out",
            str(t / "held"),
            "--overwrite",
        ],
        expect=("--out", "contains the --test path"),
    ),
    Case(
        id="data-out-current-directory",
        argv=lambda w, t: ["prepare", "--input", str(log_csv(w)), "--out", "."],
        expect=("--out: . is the current directory",),
    ),
    Case(
        id="data-out-parent-of-current-directory",
        argv=lambda w, t: ["prepare", "--input", str(log_csv(w)), "--out", "..", "--overwrite"],
        expect=("--out: .. is the current directory or one of its parents",),
    ),
    Case(
        id="data-overwrite-non-dataset-directory",
        argv=lambda w, t: [
            "prepare",
            "--input",
            str(log_csv(w)),
            "--out",
            str(_file(t, "mine/notes.txt", "keep me").parent),
            "--overwrite",
        ],
        expect=("--out", "not a prepared dataset (no manifest.json)"),
    ),
    Case(
        id="data-seed-negative",
        argv=lambda w, t: [
            "prepare",
            "--input",
            str(log_csv(w)),
            "--out",
            str(t / "out"),
            "--seed",
            "-1",
        ],
        expect=("seed: expected an integer in [0, 2**63), got -1",),
        absent=_out,
    ),
]
