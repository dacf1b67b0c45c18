"""recsys-ebm: energy-based recommender systems.

Every model speaks one language: an energy E(user, item), lower = better, with
p(item | user) proportional to exp(-E).
"""

from __future__ import annotations

__version__ = "0.1.0"

from recsys_ebm.data.dataset import Dataset  # noqa: E402
from recsys_ebm.models import Recommender, get_model_class, load_model  # noqa: E402

__all__ = ["Dataset", "Recommender", "__version__", "get_model_class", "load_model"]
