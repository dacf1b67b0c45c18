"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_model_config_options", "add_tracking_options"]


class _Verbose(argparse.Action):
    """``--verbose``: keep MLflow's INFO lines (for this process and the stages it runs)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        from recsys_ebm.tracking import VERBOSE_ENV, set_mlflow_verbosity

        setattr(namespace, self.dest, True)
        os.environ[VERBOSE_ENV] = "1"
        set_mlflow_verbosity(True)


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    from recsys_ebm.tracking import set_mlflow_verbosity

    # MLflow's INFO lines ("Created version '1' ...") are noise in command output; --verbose (or
    # RECSYS_EBM_VERBOSE=1) keeps them
    set_mlflow_verbosity()
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
    g.add_argument(
        "--verbose",
        action=_Verbose,
        help="show MLflow's own INFO log lines (hidden by default; also RECSYS_EBM_VERBOSE=1)",
    )


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
