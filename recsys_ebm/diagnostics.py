"""Error and warning classes, in one place (LensKit's ``diagnostics`` module pattern).

Every error subclasses the builtin a caller would expect (``ValueError`` for bad data or
configuration), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigWarning",
    "DataError",
    "DataWarning",
    "DivergenceError",
    "ModelFileError",
    "ModelFitError",
    "NotFittedError",
]


class DataError(ValueError):
    """Input data is malformed: names the file, the line or column, and what was expected."""


class ConfigError(ValueError):
    """A configuration value is unknown or of the wrong type or range."""


class ModelFitError(RuntimeError):
    """Training diverged (NaN or exploding parameters); says which epoch and which quantity."""


class DivergenceError(ModelFitError, ValueError):
    """Training diverged: a loss or parameter became NaN/inf or exploded. The message names the
    model, the epoch and step, the quantity, and suggests a lower ``learning_rate``. Also a
    ``ValueError`` (the CLI exits 2 with the message); nothing is saved."""


class ModelFileError(ValueError):
    """A saved model or checkpoint file is truncated, corrupt, unsafe (pickled code) or lacks a
    tensor; the message names the file and says how to recover (retrain, or remove it)."""


class NotFittedError(RuntimeError):
    """A model was used before ``fit`` or ``load``."""


class DataWarning(UserWarning):
    """Something in the data was dropped or coerced; training goes on."""


class ConfigWarning(UserWarning):
    """A configuration choice is legal but probably not what was meant."""
