"""The interrupt-then-resume scaffold the checkpoint tests of the trained models share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class _Stop(Exception):
    pass


def resumed_after_stop(
    make: Callable[..., Any], train: Any, valid: Any, ckpt: str | Path, stop_epoch: int
) -> Any:
    """Fit ``make(checkpoint_dir=ckpt)`` on ``(train, valid)`` until its epoch callback raises
    after epoch ``stop_epoch`` (0-based), then fit a fresh ``make(checkpoint_dir=ckpt)``, which
    resumes from the checkpoint; returns that resumed model."""

    def stop(epoch: int, metrics: dict) -> None:
        if epoch == stop_epoch:
            raise _Stop

    with pytest.raises(_Stop):
        make(checkpoint_dir=str(ckpt)).fit(train, valid, callback=stop)
    return make(checkpoint_dir=str(ckpt)).fit(train, valid)
