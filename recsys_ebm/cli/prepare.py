"""``recsys-ebm prepare``: not built yet in this version (see the project's issues)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="(prepare: not available in this version yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise ValueError("the 'prepare' subcommand is not available in this version yet")
