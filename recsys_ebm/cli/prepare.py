"""``recsys-ebm prepare``: raw interaction log -> leak-free dataset directory."""

from __future__ import annotations

import argparse

# copies of recsys_ebm.data.readers.FORMATS and recsys_ebm.data.splits.SPLITS (those modules
# import polars / numpy, which `--help` must not pay for); tests/test_cli_startup.py checks
# that the copies match
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="read, clean, filter, split and index an interaction log",
        description="Read an interaction log, drop duplicates, aggregate repeated (user, item) "
        "pairs (latest rating, earliest timestamp), k-core filter, split without leakage and "
        "write a dataset directory (Parquet interactions, CSR matrices, vocabularies, manifest). "
        "Without --input the bundled MovieLens ml-latest-small is used.",
    )
    p.add_argument(
        "--input",
        default=None,
        help="log file or directory (default: bundled data/ml-latest-small/ratings.csv)",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="input format (default: auto-detect from the file name and first line)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output dataset directory (written atomically); must not be the current directory "
        "or contain an input",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it is an existing dataset (or an empty directory)",
    )
    g = p.add_argument_group("columns of generic csv/tsv/parquet input")
    g.add_argument("--user-col", default="user_id", help="user id column (default: user_id)")
    g.add_argument("--item-col", default="item_id", help="item id column (default: item_id)")
    g.add_argument(
        "--rating-col",
        default="rating",
        help="rating column; ignored when absent (default: rating)",
    )
    g.add_argument(
        "--timestamp-col",
        default="timestamp",
        help="timestamp column, unix seconds or ISO dates (default: timestamp)",
    )
    g.add_argument("--separator", default=None, help="field separator of csv/tsv input")
    f = p.add_argument_group("filtering")
    f.add_argument(
        "--min-rating",
        type=float,
        default=None,
        help="keep ratings >= X as positives (default: every interaction is positive)",
    )
    f.add_argument(
        "--min-user-interactions",
        type=int,
        default=1,
        help="iterative k-core: minimum interactions per user (default: 1)",
    )
    f.add_argument(
        "--min-item-interactions",
        type=int,
        default=1,
        help="iterative k-core: minimum interactions per item (default: 1)",
    )
    s = p.add_argument_group("splitting")
    s.add_argument(
        "--split",
        default="random",
        choices=SPLITS,
        help="random: per-user holdout; temporal: global time cutoff; leave-last-k: "
        "each user's last k by time; users: held-out users with fold-in histories; "
        "predefined: --test/--valid files (default: random)",
    )
    s.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of each user's pairs (random), of pairs by time (temporal) or of "
        "users (users) in the test part (default: 0.2)",
    )
    s.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="the same for the validation part; 0 for none (default: 0.1)",
    )
    s.add_argument("--leave-k", type=int, default=1, help="leave-last-k: test items per user")
    s.add_argument("--valid-k", type=int, default=1, help="leave-last-k: valid items per user")
    s.add_argument(
        "--fold-in-fraction",
        type=float,
        default=0.8,
        help="users: share of each held-out user's history given as input (default 0.8)",
    )
    s.add_argument(
        "--test",
        dest="test_file",
        default=None,
        help="predefined: test file, same format as --input",
    )
    s.add_argument(
        "--valid",
        dest="valid_file",
        default=None,
        help="predefined: optional validation file, same format as --input",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recsys_ebm.data.prepare import DEFAULT_INPUT, prepare_dataset
    from recsys_ebm.data.store import check_output_dir

    # every check of --out before the (possibly long) read: an --out that is or contains an
    # input, the working directory, an existing file, or an existing directory without
    # --overwrite is refused here
    out = Path(args.out)
    inputs = {
        "--input": args.input if args.input is not None else DEFAULT_INPUT,
        "--test": args.test_file,
        "--valid": args.valid_file,
    }
    check_output_dir(out, inputs, overwrite=args.overwrite)
    ds = prepare_dataset(
        args.input,
        verbose=not args.quiet,
        format=args.format,
        user_col=args.user_col,
        item_col=args.item_col,
        rating_col=args.rating_col,
        timestamp_col=args.timestamp_col,
        separator=args.separator,
        min_rating=args.min_rating,
        min_user_interactions=args.min_user_interactions,
        min_item_interactions=args.min_item_interactions,
        split=args.split,
        test_fraction=args.test_fraction,
        valid_fraction=args.valid_fraction,
        leave_k=args.leave_k,
        valid_k=args.valid_k,
        fold_in_fraction=args.fold_in_fraction,
        test_file=args.test_file,
        valid_file=args.valid_file,
        seed=args.seed,
    )
    ds.save(out, overwrite=args.overwrite)
    print(format_summary(ds))
    return 0


def format_summary(ds) -> str:  # noqa: ANN001 - Dataset, imported lazily
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
