"""``recsys-ebm anomalies``: not built yet in this version (see the project's issues)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomalies", help="(anomalies: not available in this version yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise ValueError("the 'anomalies' subcommand is not available in this version yet")
