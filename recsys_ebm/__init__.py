"""recsys-ebm: energy-based recommender systems.

Every model speaks one language: an energy E(user, item), lower = better, with
p(item | user) proportional to exp(-E).

The public names below are imported on first use (module ``__getattr__``, PEP 562), so that
``import recsys_ebm`` - and ``recsys-ebm --help`` - does not pay for torch, polars or mlflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from recsys_ebm._version import __version__

__all__ = ["Dataset", "Recommender", "__version__", "get_model_class", "load_model"]

#: public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Dataset": "recsys_ebm.data.dataset",
    "Recommender": "recsys_ebm.models",
    "get_model_class": "recsys_ebm.models",
    "load_model": "recsys_ebm.models",
}

if TYPE_CHECKING:  # static analysers and IDEs see the real objects
    from recsys_ebm.data.dataset import Dataset
    from recsys_ebm.models import Recommender, get_model_class, load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'recsys_ebm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
