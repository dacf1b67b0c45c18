"""The ranker's typed config (:class:`RankerConfig`), split from :mod:`recsys_ebm.ranking.ranker`
(which re-exports it): components, blend, candidates, refit, filters."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from recsys_ebm.config import Config
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.ranking.blender import NORMS

__all__ = ["RankerConfig"]


@dataclasses.dataclass(frozen=True)
class RankerConfig(Config):
    #: registry names (trained by the ranker) or saved model directories (used as they are).
    #: EASE + ALS + RBM + retriever: four strong single models with different inductive biases
    #: (item-item regression, low-rank factors, an energy-based latent model, a contrastive
    #: two-tower EBM). On ML-100K test NDCG@10 this blend gives 0.4612 against 0.4443 for EASE;
    #: +0.0052 over EASE on ml-latest-small, a tie on movietweetings-100k (`python
    #: benchmarks/quality.py`, 2026-12-07, benchmarks/README.md). With DLAE in place of EASE
    #: (``component_config`` with ``ease = {dropout = 0.5}``) the blend's validation NDCG@10 is
    #: +0.0006 / +0.0012 / +0.0017, about the blend search's noise, and its test NDCG@10 moves
    #: by -0.0022 / -0.0039 / +0.0033: EASE stays.
    components: tuple[str, ...] = ("ease", "als", "rbm", "retriever")
    #: per-component config overrides by registry name, e.g. {als = {factors = 32}}. The ALS
    #: default is the best of benchmarks/baselines.py's validation grid on ML-100K.
    component_config: dict[str, dict[str, Any]] | None = dataclasses.field(
        default_factory=lambda: {"als": {"factors": 32, "alpha": 5.0}}
    )
    #: fixed blend weights (one per component); empty = learn them on the validation split, or
    #: equal weights when there is none (the documented default)
    weights: tuple[float, ...] = ()
    #: "all": rank the whole catalogue; "retriever": the retriever component's candidates
    candidates: Literal["all", "retriever"] = "all"
    n_candidates: int = 300  # retrieval depth: well above the top-100 the batch job serves
    #: recommend over the whole catalogue scores components that are expensive to score exactly
    #: (the RBM: capabilities.ApproximateScorer) with their cheap approximation, blends, then
    #: re-scores the blend's top candidates exactly (Ranker._top_block); False: every item exact
    fast_serving: bool = True
    #: the calibrated blend's cascade (ranking/_cascade.py): "cheap" re-scores the candidates
    #: exactly where that is cheap (EASE), "all" also with the RBM's exact dF (slower)
    rescore: Literal["cheap", "all"] = "cheap"
    #: how the blend weights are learned on validation: "bagged" (the default: the mean over
    #: ``weight_bags`` bootstrap resamples of the validation users of each resample's best point
    #: on the simplex grid of step ``weight_step``; _blend.bagged_grid_weights, Breiman 1996),
    #: "search" (one coordinate search on the simplex maximising validation NDCG@10) or "equal"
    #: (equal weights on the calibrated energies: the equal-weight log-linear pool of the
    #: components' calibrated conditionals; only the temperatures are fitted). Validation NDCG@10
    #: is flat over a wide region of the simplex, so the search's single argmax follows the
    #: validation users' noise (its weights moved by up to 0.5 between seeds at equal scores).
    #: The whole benchmark one split back, 3 seeds (`benchmarks/quality.py --on-valid --seeds
    #: 0,1,2`), ranker / EASE, bagged vs search vs equal: ML-100K 1.049 / 1.033 / 1.050,
    #: ml-latest-small 1.024 / 1.012 / 1.036, movietweetings-100k 1.026 / 1.026 / 0.986: bagged
    #: has both the higher mean and the better worst case than the search (the rule for a new
    #: default), equal the worst case (benchmarks/README.md, "Bagged blend weights").
    weight_fit: Literal["search", "equal", "bagged"] = "bagged"
    weight_bags: int = 32  # bootstrap resamples of "bagged"
    weight_step: float = 0.1  # grid step on the simplex (the search's moves, the bagged grid)
    search_rounds: int = 3  # coordinate passes (stops early at a pass without gain)
    max_tune_users: int = 4000  # validation users used for the search (seeded sample above)
    #: components refitted on train + valid after the blend is fitted (weights kept), as the
    #: baselines are refitted after their validation search. Models that early-stop on the
    #: validation split (rbm, retriever) are refitted for their best-on-valid epoch count
    #: (recsys_ebm.ranking._refit): every component's final fit sees train + valid
    refit: tuple[str, ...] = ("popularity", "ease", "als", "bpr", "rbm", "retriever")
    #: how component energies share a scale before blending: "zscore" (per user) or
    #: "calibrated" (maximum-likelihood temperature per component, fitted on validation: the
    #: blend is a product of calibrated conditionals; ranking/blender.py). Calibrated is the
    #: better on cross-fitted validation (benchmarks/README.md, "Ranker blend")
    blend_norm: Literal["zscore", "calibrated"] = "calibrated"
    #: history-length segments (quantiles of the tuning users'), each with its own weights
    segments: int = 1
    exclude_items: tuple[int | str, ...] = ()  # raw item ids never served
    allow_items: tuple[int | str, ...] = ()  # raw item ids: when set, only these are served
    genres_any: tuple[str, ...] = ()  # when set, only items with one of these genres are served
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        if not self.components:
            raise ConfigError("RankerConfig.components: expected at least one component")
        if self.weights and len(self.weights) != len(self.components):
            raise ConfigError(
                f"RankerConfig.weights: expected {len(self.components)} weights (one per "
                f"component), got {len(self.weights)}"
            )
        if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) <= 0):
            raise ConfigError(f"RankerConfig.weights: expected >= 0, not all 0: {self.weights}")
        self._check_positive(
            "n_candidates",
            "weight_step",
            "search_rounds",
            "max_tune_users",
            "segments",
            "weight_bags",
        )
        if self.weight_fit == "equal" and self.segments > 1:
            raise ConfigError(
                f"RankerConfig.segments: expected 1 with weight_fit='equal' (equal weights leave "
                f"nothing to learn per segment), got {self.segments}"
            )
        if self.blend_norm not in NORMS:
            raise ConfigError(
                f"RankerConfig.blend_norm: expected one of {list(NORMS)}, got {self.blend_norm!r}"
            )
        if self.component_config is not None and not isinstance(self.component_config, dict):
            raise ConfigError(
                f"RankerConfig.component_config: expected a table, got {self.component_config!r}"
            )
