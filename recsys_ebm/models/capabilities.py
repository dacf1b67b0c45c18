"""What a model can do beyond :class:`~recsys_ebm.models.base.Recommender`, as typing Protocols.

Every model ranks (``energies`` / ``recommend``). Some can do more; callers ask with
``isinstance(model, Protocol)``, never with ``hasattr``:

* :class:`FreeEnergyModel`: ``free_energy(user_items)``, the free energy of whole profiles (the
  binary RBM and the user-oriented softmax RBM); anomaly scoring needs it.
* :class:`CandidateRetriever`: ``retrieve(user_items, n_candidates, ...)``, a candidate list per
  user (the two-tower retriever); the ranker's first stage needs one.
* :class:`ApproximateScorer`: ``approx_energies`` (cheap, every item) and ``energies_at`` (exact,
  given items per user) (the binary RBM); the ranker's fast serving path needs them.
* :class:`FactorScorer`: ``energy_factors``, energies as a dot product of user and item factors
  plus an item bias, exactly (ALS, BPR, the retriever, popularity) or as a cheap proxy (EASE's
  truncated SVD, the RBM's second-order expansion); the ranker's cascade scores every item with
  one matmul of them.
* :class:`RatingPredictor`: ``predict_ratings`` and ``rating_distribution`` over
  ``rating_levels`` (the softmax RBMs); evaluation reports RMSE/MAE for them.
* :class:`HistoryHolder`: keeps the known users' histories (``history``), so serving can bundle
  them without a dataset (the ranker).
* :class:`Composite`: made of fitted ``components`` (the ranker).
* :class:`Trainable`: the hooks :func:`recsys_ebm.models.training.run_training` drives.

Two facts are plain typed class attributes of every ``Recommender`` instead, since every model
has a value for them: ``has_fallback`` (an empty history is served by a deliberate fallback) and
``is_baseline`` (a reference model the report compares the others with).

The checks are structural (``runtime_checkable``): a class satisfies a Protocol when it defines
the members, so a new model gains a capability by defining the method; nothing to register.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "ApproximateScorer",
    "CandidateRetriever",
    "Composite",
    "EnergyFactors",
    "FactorScorer",
    "FreeEnergyModel",
    "HistoryHolder",
    "RatingPredictor",
    "Trainable",
]


@runtime_checkable
class FreeEnergyModel(Protocol):
    """A model with a free energy F(v) of a whole profile (lower = more plausible)."""

    def free_energy(self, user_items: sp.csr_matrix) -> np.ndarray:
        """(U,) free energy of each row of ``user_items``."""
        ...


@runtime_checkable
class CandidateRetriever(Protocol):
    """A model that returns candidate item indices per user (the ranker's first stage)."""

    def retrieve(
        self,
        user_items: sp.csr_matrix,
        n_candidates: int,
        *,
        users: np.ndarray | None = None,
        exclude_seen: bool = True,
        index: Any = None,
    ) -> np.ndarray:
        """(U, C) int64 candidate item indices, best first, padded with -1."""
        ...


@runtime_checkable
class ApproximateScorer(Protocol):
    """A model whose exact energies are expensive, with a cheap approximation over the whole
    catalogue and exact energies at given items (the binary RBM): the ranker's fast path
    scores every item with the approximation and re-scores its top candidates exactly."""

    def approx_energies(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """(U, I) approximate energies."""
        ...

    def energies_at(self, user_items: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
        """(U, C) exact energies of each row at its own (U, C) item indices."""
        ...


class EnergyFactors(NamedTuple):
    """e(u, i) = user[u] . item[i] + bias[i] for a block of users (float32, one device).

    ``exact``: the energies themselves (a factor model), else a proxy whose top items a cascade
    re-scores. ``rescore``: for a proxy, whether ``energies_at`` a few hundred items per user is
    cheap (EASE: a gather over the history) - the ranker's cascade then re-scores its
    candidates exactly; False keeps the proxy (the RBM, whose proxy error is bounded).
    """

    user: torch.Tensor  # (B, d)
    item: torch.Tensor  # (I, d)
    bias: torch.Tensor | None  # (I,) or None
    exact: bool
    rescore: bool = False


@runtime_checkable
class FactorScorer(Protocol):
    """A model whose energies (or a cheap proxy of them) are user . item factors + item bias."""

    def energy_factors(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None
    ) -> EnergyFactors:
        """The factors of the rows of ``user_items`` (B, I) (``users``: their training rows)."""
        ...


@runtime_checkable
class RatingPredictor(Protocol):
    """A model that predicts explicit ratings for (history row, item) pairs (over its
    ``rating_levels``)."""

    def rating_distribution(
        self, history: sp.csr_matrix, rows: Any, cols: Any, *, users: Any = None
    ) -> np.ndarray:
        """(P, K) probabilities over :attr:`rating_levels` for each pair."""
        ...

    def predict_ratings(
        self, history: sp.csr_matrix, rows: Any, cols: Any, *, users: Any = None
    ) -> np.ndarray:
        """(P,) expected rating of each pair."""
        ...


@runtime_checkable
class HistoryHolder(Protocol):
    """A model that keeps its known users' histories (rows aligned with ``user_ids``)."""

    history: sp.csr_matrix | None


@runtime_checkable
class Composite(Protocol):
    """A model built from fitted component models."""

    components: list[Any]


@runtime_checkable
class Trainable(Protocol):
    """What :func:`recsys_ebm.models.training.run_training` drives: one model's training task.

    The task is built ready to train (parameters initialised, optimiser and data in place: the
    constructor is the ``init_state`` step). ``train_epoch`` runs one epoch (its own per-step
    divergence checks included) and returns that epoch's figures; ``state_dict`` /
    ``load_state_dict`` carry the whole training state (parameters, optimiser or velocities,
    generators, learning rate) as tensors and plain values for checkpoints; ``snapshot`` /
    ``restore`` copy the model parameters for the best epoch; ``parameters_to_check`` names the
    tensors the loop's divergence guard reads after each epoch.
    Implementations: ``RBMTrainer`` (:mod:`recsys_ebm.models._rbm_train`), ``SoftmaxRBMTrainer``
    (:mod:`recsys_ebm.models._softmax_rbm_train`), ``RetrieverTrainer``
    (:mod:`recsys_ebm.models._retriever_train`).
    """

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Run epoch ``epoch`` (0-based) and return its figures."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The full training state (tensors copied to CPU, plain values)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """A copy of the model's parameters (kept for the best epoch)."""
        ...

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put a :meth:`snapshot` back into the model."""
        ...

    def parameters_to_check(self) -> dict[str, Any]:
        """Name -> tensor of the parameters the divergence guard checks."""
        ...
