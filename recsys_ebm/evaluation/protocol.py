"""The one leak-free full-ranking protocol: histories masked at call time, targets held out.

It lives in :mod:`recsys_ebm.models.validation` (the models' training loops early-stop on it,
and models import nothing above them); this module keeps the public name.
"""

from __future__ import annotations

from recsys_ebm.models.validation import evaluate_ranking

__all__ = ["evaluate_ranking"]
