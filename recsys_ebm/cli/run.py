"""``recsys-ebm run``: not built yet in this version (see the project's issues)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="(run: not available in this version yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise ValueError("the 'run' subcommand is not available in this version yet")
