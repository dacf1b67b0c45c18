"""Ranking: candidates -> components' public energies -> a :class:`Blender` of their per-user
standardised energies -> filters -> top-N."""

from recsys_ebm.ranking._blend import blend, search_weights, zscore
from recsys_ebm.ranking.blender import Blender
from recsys_ebm.ranking.ranker import Ranker, RankerConfig

__all__ = ["Blender", "Ranker", "RankerConfig", "blend", "search_weights", "zscore"]
