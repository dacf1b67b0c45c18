"""Options shared by several subcommands."""

from __future__ import annotations

import argparse

__all__ = ["add_model_config_options", "add_tracking_options"]


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MLflow tracking")
    g.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db); "
        "an http://127.0.0.1:PORT server works the same way",
    )
    g.add_argument(
        "--experiment", default="recsys-ebm", help="MLflow experiment name (default: recsys-ebm)"
    )
    g.add_argument("--no-mlflow", action="store_true", help="do not log this run to MLflow")


def add_model_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        default=None,
        help="TOML file of model config keys (top level, or under a [model] table)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key (repeatable), e.g. --set epochs=20 --set n_hidden=200",
    )
