"""``recsys-ebm recommend``: flags of :class:`recsys_ebm.jobs.recommend.RecommendJob`."""

from __future__ import annotations

import argparse
import sys

from recsys_ebm.cli.common import add_job_options, config_from_args
from recsys_ebm.jobs.recommend import RecommendJob


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend",
        help="write top-N recommendations for many users to a Parquet file",
        description="Score users in chunks and write one row per recommendation (user_id, rank, "
        "item_id, energy, model_version, fallback) to Parquet, atomically. Known users are "
        "served from their history in the dataset (train + valid + fold-in); --history adds new "
        "users. With a ranker, requested users with no history at all get its popularity "
        "fallback, flagged fallback=true; other models skip them.",
    )
    add_job_options(p, RecommendJob)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recsys_ebm.batch import BatchIntegrityError
    from recsys_ebm.jobs.recommend import recommend

    job = config_from_args(args)
    try:
        print(recommend(job).summary())
    except BatchIntegrityError as exc:  # not bad input: exit 1, but no traceback
        print(f"recsys-ebm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0
