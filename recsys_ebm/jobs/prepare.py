"""``prepare``: raw interaction log -> leak-free dataset directory."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_ebm.data.prepare_options import DEFAULT_INPUT, PrepareOptions
from recsys_ebm.jobs._base import JobConfig, JobResult, opt

__all__ = ["PrepareJob", "PrepareResult", "format_summary", "prepare"]


@dataclass(frozen=True, kw_only=True)
class PrepareJob(PrepareOptions, JobConfig):
    """Read, clean, filter, split and index a log into ``out`` (the options: PrepareOptions)."""

    KIND = "prepare"
    INPUTS = ("input", "test_file", "valid_file")
    OUTPUTS = ("out",)
    # save_dataset's argument (Dataset.save) named in its messages
    ARGUMENTS = {"path": "out"}

    input: str | None = opt(
        None,
        help="log file or directory, or a directory or glob ('parts/*.parquet') of Parquet / CSV "
        "partitions, prepared with polars' streaming engine "
        "(default: bundled data/ml-latest-small/ratings.csv)",
    )
    out: str = opt(
        help="output dataset directory (written atomically); must not be the current directory "
        "or contain an input",
    )
    overwrite: bool = opt(
        False, help="replace --out if it is an existing dataset (or an empty directory)"
    )
    quiet: bool = opt(False, help="no progress messages on stderr")

    def input_paths(self) -> list[Path]:
        """The paths read; a glob ``input`` stands for the files it matches (so a pipeline
        hashes their content)."""
        first = [Path(self.input) if self.input is not None else DEFAULT_INPUT]
        if self.input is not None and any(c in self.input for c in "*?[") and not first[0].exists():
            first = sorted(Path(f) for f in glob.glob(self.input, recursive=True)) or first
        return [*first, *(Path(p) for p in (self.test_file, self.valid_file) if p is not None)]

    @property
    def options(self) -> PrepareOptions:
        """The options alone, as the dataset's manifest records them."""
        names = PrepareOptions.__dataclass_fields__
        return PrepareOptions(**{k: v for k, v in self.to_dict().items() if k in names})


@dataclass(frozen=True)
class PrepareResult(JobResult):
    dataset: Any  # recsys_ebm.data.dataset.Dataset (imported lazily)
    out: Path

    def summary(self) -> str:
        return format_summary(self.dataset)


def prepare(job: PrepareJob) -> PrepareResult:
    """Prepare ``job.input`` into the dataset directory ``job.out``.

    Every check of ``out`` runs before the (possibly long) read: an ``out`` that is or contains
    an input, the working directory, an existing file, or an existing directory without
    ``overwrite`` is refused.

    Raises:
        FileExistsError, OutputError, DataError, ValueError: bad input (see
            :func:`recsys_ebm.data.prepare.prepare_dataset`).
    """
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.store import check_output_dir

    out = Path(job.out)
    inputs = {
        "input": job.input if job.input is not None else DEFAULT_INPUT,
        "test_file": job.test_file,
        "valid_file": job.valid_file,
    }
    check_output_dir(out, inputs, overwrite=job.overwrite)
    job.check_fractions()
    ds = prepare_dataset(job.input, verbose=not job.quiet, **job.options.to_dict())
    ds.save(out, overwrite=job.overwrite)
    return PrepareResult(ds, out)


def format_summary(ds: Any) -> str:
    """What ``prepare`` prints: sizes, the split, and what cleaning removed."""
    s = ds.summary()
    m = ds.manifest
    lines = [
        f"dataset: {ds.path}  (fingerprint {ds.fingerprint})",
        f"source:  {m['source']['path']} [{m['source']['format']}], split {m['split']}",
        f"users:   {s['users']:,}    items: {s['items']:,}    density: {s['density']:.4%}",
    ]
    for name, n in s["interactions"].items():
        lines.append(f"  {name:<8} {n:>12,} interactions")
    c = m["counts"]
    lines.append(
        f"cleaning: {c['raw_events']:,} raw events, {c['duplicate_events_dropped']:,} exact "
        f"duplicates, {c['repeated_events_aggregated']:,} repeats aggregated, "
        f"{c['kcore_removed']:,} removed by k-core"
    )
    if c.get("overlap_with_train_dropped"):
        lines.append(
            f"  dropped {c['overlap_with_train_dropped']:,} held-out pairs already in training"
        )
    for part, d in c.get("dropped_unknown", {}).items():
        if d["unknown_user_interactions"] or d["unknown_item_interactions"]:
            lines.append(
                f"  {part}: dropped {d['unknown_user_interactions']:,} interactions of users "
                f"and {d['unknown_item_interactions']:,} of items unseen in training"
            )
    return "\n".join(lines)
