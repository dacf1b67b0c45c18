"""Ranking: candidates -> blended standardised energies of several models -> filters -> top-N."""

from recsys_ebm.ranking._blend import blend, search_weights, zscore
from recsys_ebm.ranking.ranker import Ranker, RankerConfig

__all__ = ["Ranker", "RankerConfig", "blend", "search_weights", "zscore"]
