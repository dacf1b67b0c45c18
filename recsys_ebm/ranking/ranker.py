"""The ranker: candidate generation -> blended, calibrated energies -> business filters -> top-N.

A :class:`Ranker` is itself a :class:`~recsys_ebm.models.base.Recommender`. Pipeline per user:

1. **history**: the row passed at call time (known users: their stored history, see
   :meth:`Ranker.history_of`; new users: the request's history).
2. **candidates**: the whole catalogue (``candidates="all"``) or the public
   ``retrieve(user_items, n_candidates)`` of a component that is a
   :class:`~recsys_ebm.models.capabilities.CandidateRetriever` (``candidates="retriever"``).
3. **scoring**: each component's public ``energies`` (with its own input checks), calibrated
   (one inverse temperature per component, fitted on validation; or z-scored per user) and summed
   with weights learned on the validation split (``weight_fit="bagged"``, the default: bootstrap-
   averaged grid maxima; ``"search"``: one coordinate search) or equal weights (``"equal"``) by
   a :class:`~recsys_ebm.ranking.blender.Blender` (usable on its own).
   The config is :class:`~recsys_ebm.ranking._ranker_config.RankerConfig`.
4. **filters**: seen items, an exclude list, an allow list, genre predicates (item metadata kept
   with the ranker) - applied in :meth:`Ranker.recommend` (masks built by
   :mod:`recsys_ebm.ranking._filters`), so they are never violated.
5. **fallback**: a user with an empty history gets popularity energies, -log(1 + count).

Components must index the same items (raw ids, in order) as each other and as the ranker's
dataset: a trained directory of another item vocabulary is refused (ValueError) by
:meth:`Ranker.fit_dataset`, :meth:`Ranker.from_fitted` and :meth:`Ranker.load`.

Saved layout: the base files (``model.json``, ``weights.safetensors`` holding the blend weights and
popularity energies, ``items.json``/``users.json``), ``components/<k>-<name>/`` (each a saved model
directory), ``history.npz`` (known users' history, scipy npz) and ``item_genres.json``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.device import resolve_device
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.io import atomic_dir
from recsys_ebm.models._candidates import block_rows
from recsys_ebm.models.base import (
    EpochCallback,
    Recommender,
    as_user_items,
    check_exclude,
    check_fit_inputs,
)
from recsys_ebm.models.capabilities import ApproximateScorer, CandidateRetriever
from recsys_ebm.ranking._candidates import blend_top
from recsys_ebm.ranking._cascade import cascade_top, supports_cascade
from recsys_ebm.ranking._filters import allowed_mask, genres_of, item_vocabulary
from recsys_ebm.ranking._ranker_config import RankerConfig
from recsys_ebm.ranking._ranker_data import (
    binary,
    build_components,
    check_same_items,
    merge_valid,
)
from recsys_ebm.ranking._refit import refit_model
from recsys_ebm.ranking.blender import Blender

if TYPE_CHECKING:
    from recsys_ebm.data.dataset import Dataset

__all__ = ["Ranker", "RankerConfig", "check_same_items"]


class Ranker(Recommender):
    """Blends fitted Recommenders' standardised energies, with candidates, filters, fallback."""

    name = "ranker"
    config_class = RankerConfig
    has_fallback = True  # empty history -> popularity energies (flagged by batch and serving)

    def __init__(self, config: RankerConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.device = resolve_device(self.config.device)
        self.components: list[Recommender] = []
        self.weights: torch.Tensor | None = None  # (K,)
        self.pop_energy: torch.Tensor | None = None  # (I,)
        self.history: sp.csr_matrix | None = None  # (U, I) known users' history
        self.item_genres: list[list[str]] | None = None  # per item index
        #: the blend's calibration / segment tensors (Blender.state), empty = global z-scores
        self.blend_state: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ components
    def _build_components(
        self, n_items: int | None = None, dataset: Dataset | None = None
    ) -> list[tuple[Recommender, bool]]:
        """(model, trainable) per configured component (:func:`build_components`)."""
        return build_components(self.config, self.name, n_items, dataset)

    def _callback(self, k: int, comp: Recommender, cb: EpochCallback | None) -> Any:
        if cb is None:
            return None
        return lambda ep, m: cb(ep, {f"{k}-{comp.name}.{key}": v for key, v in m.items()})

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        train, valid = check_fit_inputs(train, valid)
        n_items = train.shape[1]
        built = self._build_components(n_items)
        for k, (m, trainable) in enumerate(built):
            if trainable:
                m.fit(train, valid, callback=self._callback(k, m, callback))
        full = train if valid is None else binary(train + valid)
        self._finish(
            built, train, valid, np.arange(train.shape[0]), full, callback, lambda m: m.fit(full)
        )
        return self

    @classmethod
    def from_fitted(
        cls,
        models: list[Recommender],
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
        **overrides: Any,
    ) -> Ranker:
        """A ranker over already fitted models (not refitted): its blend (temperatures, and
        weights unless ``weight_fit="equal"``) fitted on ``valid`` (history ``train``) when given,
        else config ``weights`` or equal weights."""
        names = tuple(m.name or type(m).__name__ for m in models)
        ranker = cls(components=names, refit=(), **overrides)
        train = as_user_items(train, int(models[0].n_items), "train")
        for m in models:
            if m.n_items != train.shape[1]:
                raise ValueError(f"models: {m!r} has {m.n_items} items, train {train.shape[1]}")
        check_same_items(models, "models")
        if valid is not None:
            valid = as_user_items(valid, train.shape[1], "valid")
        full = train if valid is None else binary(train + valid)
        built = [(m, False) for m in models]
        ranker._finish(built, train, valid, np.arange(train.shape[0]), full, callback, None)
        # the blended vocabulary (checked equal above), so serving can check it against data
        ranker.item_vocab = next(
            (v for m in models if (v := getattr(m, "item_vocab", None)) is not None), None
        )
        return ranker

    def fit_dataset(self, dataset: Dataset, *, callback: EpochCallback | None = None) -> Self:
        """Fit components on the dataset (so ratings/metadata-aware ones get theirs), learn the
        weights on its validation split, refit on train + valid, keep item genres."""
        built = self._build_components(dataset.n_items, dataset)
        for k, (m, trainable) in enumerate(built):
            if trainable:
                m.fit_dataset(dataset, callback=self._callback(k, m, callback))
        valid = dataset.valid if dataset.valid is not None and dataset.valid.nnz else None
        merged = merge_valid(dataset) if valid is not None and self.config.refit else None
        self._finish(
            built,
            dataset.history("valid"),
            valid,
            np.arange(dataset.n_users),
            dataset.history("test"),
            callback,
            lambda m: m.fit_dataset(merged),
        )
        self.item_vocab, self.user_vocab = dataset.item_vocab, dataset.user_vocab
        self.item_genres = genres_of(dataset)
        return self

    def _finish(
        self,
        built: list[tuple[Recommender, bool]],
        history: sp.csr_matrix,
        valid: sp.csr_matrix | None,
        users: np.ndarray,
        full: sp.csr_matrix,
        callback: EpochCallback | None,
        refit: Callable[[Recommender], Any] | None,
    ) -> None:
        """Keep the components, learn the weights on ``valid`` (history ``history``), then
        refit the trainable components named in config ``refit`` with ``refit(model)`` (on
        train + valid; the weights are kept)."""
        self.components = [m for m, _ in built]
        self.blend_state = {}
        self.n_items = history.shape[1]
        self.history = full
        counts = np.asarray((full > 0).sum(axis=0)).ravel().astype(np.float64)
        self.pop_energy = torch.as_tensor(-np.log1p(counts), dtype=torch.float32)
        k = len(self.components)
        info: dict[str, Any] = {"components": [m.name for m in self.components]}
        if self.config.weights:
            w, info["weights_source"] = np.asarray(self.config.weights, float), "config"
        elif valid is not None:
            w, score = self._learn_weights(history, valid, users, callback)
            info.update(weights_source="validation", valid_ndcg_at_10=score)
        else:
            w, info["weights_source"] = np.full(k, 1.0 / k), "default (equal)"
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.float32)
        info["weights"] = [float(x) for x in self.weights]
        info.update({f"blend_{k}": v.tolist() for k, v in self.blend_state.items()})
        self.fit_info = info
        if refit is not None and valid is not None and self.config.refit:
            again = [m for m, t in built if t and m.name in self.config.refit]
            epochs = {m.name: refit_model(m, refit) for m in again}
            info["refit_on_train_valid"] = [m.name for m in again]
            info["refit_epochs"] = {k: v for k, v in epochs.items() if v is not None}

    def _learn_weights(
        self,
        history: sp.csr_matrix,
        valid: sp.csr_matrix,
        users: np.ndarray,
        callback: EpochCallback | None,
    ) -> tuple[np.ndarray, float]:
        """Fit a :class:`Blender` on (a seeded sample of) the validation users."""
        rows = np.flatnonzero((valid.getnnz(axis=1) > 0) & (history.getnnz(axis=1) > 0))
        if rows.size > self.config.max_tune_users:
            rng = np.random.default_rng(self.config.seed)
            rows = np.sort(rng.choice(rows, self.config.max_tune_users, replace=False))
        ui = history[rows]
        blender = self._blender()
        w = blender.fit(
            self._component_energies(ui, users[rows]),
            valid[rows],
            seen=ui,
            candidates=self._candidates(ui, users[rows]),
            callback=None
            if callback is None
            else (lambda r, m: callback(r, {f"ranker.{k}": v for k, v in m.items()})),
        )
        assert blender.valid_ndcg is not None
        self.blend_state = blender.state()
        return w, blender.valid_ndcg

    # ------------------------------------------------------------------ scoring
    # A block of users goes through public stages only: candidates (``_candidates``) -> each
    # component's public ``energies`` (``_component_energies``) -> per-user standardisation and
    # the weighted blend (a :class:`Blender`) -> business filters and top-N (``recommend``).
    def _blender(self, weights: torch.Tensor | None = None) -> Blender:
        """The blend stage: with this ranker's weights, or none (to learn them)."""
        norm = self.config.blend_norm
        if weights is not None and "betas" not in self.blend_state:
            norm = "zscore"  # weights not learned here (config, equal, or saved before): z-scores
        blender = Blender(
            weights,
            step=self.config.weight_step,
            rounds=self.config.search_rounds,
            device=self.device,
            norm=norm,
            segments=self.config.segments,
            search=self.config.weight_fit != "equal",
            bags=self.config.weight_bags if self.config.weight_fit == "bagged" else 0,
            seed=self.config.seed,
        )
        return blender if weights is None else blender.load_state(self.blend_state)

    def _candidates(self, user_items: sp.csr_matrix, users: np.ndarray | None) -> Any:
        """The candidate stage: None (the whole catalogue) or the retriever component's
        (B, C) top-C item indices, from its public ``retrieve``."""
        if self.config.candidates != "retriever":
            return None
        retr = next((m for m in self.components if isinstance(m, CandidateRetriever)), None)
        if retr is None:
            raise ConfigError(
                "RankerConfig.candidates: 'retriever' needs a component with retrieve() "
                f"(components: {[m.name for m in self.components]})"
            )
        return np.asarray(retr.retrieve(user_items, self.config.n_candidates, users=users))

    def _component_energies(
        self, user_items: sp.csr_matrix, users: np.ndarray | None
    ) -> Iterator[np.ndarray]:
        """The scoring stage: each component's public ``energies`` of the rows, one component
        at a time, all rows in one block (the ranker already bounds its blocks), with the
        component's own input checks."""
        rows = max(1, user_items.shape[0])
        return (m.energies(user_items, users=users, batch_size=rows) for m in self.components)

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        assert self.weights is not None and self.pop_energy is not None
        blender = self._blender(self.weights)
        z, _, cand = blender.standardise(
            self._component_energies(user_items, users),
            seen=user_items,
            candidates=self._candidates(user_items, users),
        )  # (K, B, I), (B, I)
        e = blender.combine(z, cand, lengths=user_items.getnnz(axis=1))  # (B, I)
        empty = torch.as_tensor(user_items.getnnz(axis=1) == 0, device=self.device)
        if bool(empty.any()):  # popularity fallback for users with no history at all
            e[empty] = self.pop_energy.to(self.device)
        return e if items is None else e[:, torch.as_tensor(items, device=self.device)]

    #: blended candidates re-scored exactly in the fast path (None: 2 n, at least n + 32)
    serve_candidates: int | None = None

    def _block_rows(self, n_cols: int, batch_size: int | None) -> int:
        """Users per scoring block: a block holds about 2 K + 4 (B, I) float arrays (the K
        raw and K standardised energies, the blend, the masks), so the default keeps them all
        within the base class's one-array budget (``models._candidates.block_rows``): the peak
        grows with the catalogue only through the models themselves."""
        if batch_size is not None:
            return super()._block_rows(n_cols, batch_size)
        return block_rows(n_cols, 2 * len(self.components) + 4)

    def _recommend_rows(self, n_cols: int, batch_size: int | None) -> int:
        """The cascade (calibrated blend, fast serving) holds about 4 (B, I) arrays (the scores,
        each re-scored proxy's own product, the masks), not 2 K + 4: 3x larger blocks within
        the same budget, which the per-block matmul and top-C run faster on."""
        blender = self._fast_blender()
        if batch_size is None and blender is not None:
            if supports_cascade(self.components, blender):
                return block_rows(n_cols, 4)
        return self._block_rows(n_cols, batch_size)

    def _fast_blender(self) -> Blender | None:
        """The fitted blender when :meth:`recommend` may take a fast path (config
        ``fast_serving``, candidates from the whole catalogue), else None (or not fitted)."""
        if not (self.config.fast_serving and self.config.candidates == "all"):
            return None
        return None if self.weights is None else self._blender(self.weights)

    def _top_block(
        self,
        user_items: sp.csr_matrix,
        users: np.ndarray | None,
        k: int,
        exclude_seen: bool,
        exclude: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fast path of :meth:`recommend` over the whole catalogue (config ``fast_serving``):
        the calibrated blend's cascade (:func:`recsys_ebm.ranking._cascade.cascade_top`: one
        matmul of every component's energy factors, exact re-scoring of the top candidates), or
        for a z-scored blend the approximate-then-exact scoring of the expensive components
        (:func:`recsys_ebm.ranking._candidates.blend_top`); None (every item exact) when neither
        applies or candidates come from the retriever."""
        blender = self._fast_blender()
        if blender is None:
            return None
        assert self.pop_energy is not None
        args = (
            self.components,
            blender,
            self.pop_energy.to(self.device),
            user_items,
            users,
            k,
            exclude_seen,
            exclude,
            self.serve_candidates,
        )
        if supports_cascade(self.components, blender):  # the calibrated blend: one matmul
            return cascade_top(*args, self.config.rescore)
        if any(isinstance(m, ApproximateScorer) for m in self.components):
            return blend_top(*args)
        return None

    def is_fallback(self, user_items: sp.csr_matrix) -> np.ndarray:
        """(U,) bool: rows served by the popularity fallback (empty history)."""
        return np.asarray(user_items.getnnz(axis=1) == 0)

    def history_of(
        self, user_ids: Any, *, unknown: str = "missing"
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """Stored history rows and training-row indices for raw user ids.

        Ids match under the :class:`~recsys_ebm.data.vocab.Vocabulary` rule (42 and "42" are
        one user, "042" is another). Unknown users get an empty row and index -1
        (``unknown="missing"``) or raise ValueError naming them (``unknown="raise"``).
        """
        if self.history is None or self.user_vocab is None:
            raise ValueError("user_ids: this ranker stores no user vocabulary/history")
        idx = self.user_vocab.index(user_ids, unknown=unknown, argument="user_ids")
        rows = sp.diags((idx >= 0).astype(np.float32)) @ self.history[np.clip(idx, 0, None)]
        rows = sp.csr_matrix(rows, dtype=np.float32)
        rows.eliminate_zeros()  # unknown users: empty rows
        return rows, idx

    # ------------------------------------------------------------------ filters
    def recommend(
        self,
        user_items: sp.csr_matrix,
        n: int = 10,
        *,
        users: np.ndarray | None = None,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
        allow: np.ndarray | None = None,
        genres_any: list[str] | tuple[str, ...] | None = None,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`Recommender.recommend` plus business filters (item indices / genre names).

        Args:
            allow: only these item indices may be served (intersected with config allow_items).
            genres_any: only items carrying at least one of these genres (needs item metadata).
            Others as in the base class; config ``exclude_items`` are always excluded.

        Returns:
            ``(items, energies)`` as the base class; filtered-out items never appear.
        """
        n_items = self._check_fitted()
        banned = np.zeros(n_items, dtype=bool)
        if exclude is not None:
            banned[check_exclude(exclude, n_items)] = True
        banned |= ~self._allowed_mask(allow, genres_any)
        return super().recommend(
            user_items,
            n,
            users=users,
            exclude_seen=exclude_seen,
            candidates=candidates,
            exclude=np.flatnonzero(banned) if banned.any() else None,
            batch_size=batch_size,
        )

    def _allowed_mask(self, allow: Any, genres_any: Any) -> np.ndarray:
        """(I,) bool: items the business filters let through (:func:`allowed_mask`)."""
        return allowed_mask(
            self.config, int(self.n_items), self.item_vocab, self.item_genres, allow, genres_any
        )

    def _item_vocabulary(self) -> Vocabulary:
        """The item vocabulary, or item indices as ids when the ranker saved none."""
        return item_vocabulary(self.item_vocab, int(self.n_items))

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.weights is not None and self.pop_energy is not None
        blend = {f"blend.{k}": v for k, v in self.blend_state.items()}
        return {"weights": self.weights, "pop_energy": self.pop_energy, **blend}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.weights = tensors["weights"].float()
        self.pop_energy = tensors["pop_energy"].float()
        self.blend_state = {k[6:]: v for k, v in tensors.items() if k.startswith("blend.")}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Base files + ``components/<k>-<name>/`` + ``history.npz`` + ``item_genres.json``."""
        self._check_fitted()
        with atomic_dir(path, overwrite=overwrite) as tmp:
            core = super().save(tmp / "core")
            for f in core.iterdir():
                f.rename(tmp / f.name)
            core.rmdir()
            for k, m in enumerate(self.components):
                if m.item_vocab is None and self.item_vocab is not None:
                    # saved with the ranker's (checked equal) item ids, through a shallow copy:
                    # saving never changes the component itself
                    m = copy.copy(m)
                    m.item_vocab = self.item_vocab
                m.save(tmp / "components" / f"{k}-{m.name}")
            if self.history is not None:
                sp.save_npz(tmp / "history.npz", sp.csr_matrix(self.history))
            if self.item_genres is not None:
                (tmp / "item_genres.json").write_text(json.dumps(self.item_genres))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> Self:
        from recsys_ebm.models import load_model

        model = super().load(path, device=device)
        path = Path(path)
        dirs = sorted((path / "components").iterdir(), key=lambda p: int(p.name.split("-")[0]))
        model.components = [load_model(d, device=device) for d in dirs]
        for d, m in zip(dirs, model.components, strict=True):
            if m.n_items != model.n_items:
                raise ValueError(
                    f"path: {path}'s component {d.name} indexes {m.n_items} items, the ranker "
                    f"{model.n_items}"
                )
        check_same_items(
            model.components, f"path: {path} components", ref_ids=model.item_ids, ref="the ranker"
        )
        if (path / "history.npz").is_file():
            model.history = sp.csr_matrix(sp.load_npz(path / "history.npz"), dtype=np.float32)
        if (path / "item_genres.json").is_file():
            model.item_genres = json.loads((path / "item_genres.json").read_text())
        return model
