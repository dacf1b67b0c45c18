"""Energy-based contrastive two-tower retriever (registry name ``retriever``).

Energy E(u, i) = -sim(f(u), g(i)) / tau - b_i (towers in :mod:`._retriever_towers`; b_i a
learned item log-prior, ``item_bias``: p(i | u) = p(i) exp(sim / tau) / Z, and cosine logits
bounded by 1/tau cannot carry an item's popularity themselves, as the bias of word2vec's and
YouTube's softmax models does); training minimises the cross-entropy of the conditional EBM
p(i | u) ∝ exp(-E(u, i)). The default objective
(``objective="user"``, :mod:`._retriever_objective`) is per user: a random half of each user's
training history is held out and predicted from the rest by the exact softmax over the whole
catalogue (sampled with logQ correction beyond ``full_softmax_max_items``), the input items
masked as accidental hits. ``objective="interaction"`` (the earlier default) is the
per-interaction InfoNCE over in-batch (and optionally sampled) candidates, with logQ
correction and accidental-hit masking (:mod:`._retriever_loss`, loop in
:mod:`._retriever_train`). Either way the encoded history never holds the item being predicted,
so the user tower learns to serve any history: new users are served from the history passed
in, with no retraining.

Serving: :meth:`recommend` (top-n by lowest energy: user vectors, one matmul against the item
matrix, top-k), :meth:`retrieve` (candidate lists for the ranker, exact or through an optional
faiss index over [v_i, tau b_i] queried with [u, 1], :mod:`recsys_ebm.models.ann`),
:meth:`encode_users`, :meth:`item_embeddings` and :meth:`item_biases`.

Fallbacks (documented policy, never an IndexError):
* empty history -> the user tower's learned "no information" vector (pooled history = 0);
* an item with no training interaction -> the shared out-of-vocabulary item embedding (+ its
  genres when the model was trained with metadata), as input and as a candidate;
* unknown user (``users`` entry -1, or ``users`` omitted) -> no user-id embedding;
* raw item ids unknown to the model (:meth:`histories_from_ids`) -> dropped with a DataWarning
  (``on_unknown="drop"``) or a ValueError (``on_unknown="raise"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.device import resolve_device
from recsys_ebm.diagnostics import DataWarning
from recsys_ebm.models._retriever_config import RetrieverConfig
from recsys_ebm.models._retriever_towers import TwoTower, sparse_history
from recsys_ebm.models.base import EpochCallback, Recommender, as_user_items, check_fit_inputs
from recsys_ebm.models.capabilities import EnergyFactors

__all__ = ["Retriever", "RetrieverConfig", "genre_features"]


def genre_features(dataset: Any) -> tuple[np.ndarray, list[str]] | None:
    """(I, G) row-normalised genre multi-hot aligned with the dataset's item index, and genres.

    Items without metadata get a zero row. Returns None when the dataset has no genres.
    """
    meta = getattr(dataset, "item_metadata", None)
    if meta is None or "genres" not in meta.columns or meta.height == 0:
        return None
    idx = dataset.item_index(meta["item_id"].to_list())  # (M,) -1 = not in the catalogue
    genre_lists = meta["genres"].to_list()
    genres = sorted({g for gl in genre_lists if gl for g in gl})
    if not genres:
        return None
    col = {g: k for k, g in enumerate(genres)}
    feats = np.zeros((dataset.n_items, len(genres)), dtype=np.float32)
    for i, gl in zip(idx, genre_lists, strict=True):
        if i >= 0 and gl:
            feats[i, [col[g] for g in gl]] = 1.0
    sums = feats.sum(axis=1, keepdims=True)
    return feats / np.maximum(sums, 1.0), genres


class Retriever(Recommender):
    """Two-tower InfoNCE retriever; energy -sim(u, i)/tau, lower = better."""

    name = "retriever"
    config_class = RetrieverConfig

    def __init__(self, config: RetrieverConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.device = resolve_device(self.config.device)
        self.net: TwoTower | None = None
        self.genres: list[str] = []
        self._item_cache: torch.Tensor | None = None  # (I, D) serving item matrix

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        """Train on binary histories (no item metadata; use :meth:`fit_dataset` for genres)."""
        return self._fit(train, valid, callback=callback, features=None)

    def fit_dataset(self, dataset: Any, *, callback: EpochCallback | None = None) -> Self:
        """Train on a prepared Dataset, with genre features when present and ``use_metadata``."""
        feats = genre_features(dataset) if self.config.use_metadata else None
        self._fit(dataset.train, dataset.valid, callback=callback, features=feats)
        self.item_ids = dataset.item_ids
        self.user_ids = dataset.user_ids
        return self

    def _fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None,
        *,
        callback: EpochCallback | None,
        features: tuple[np.ndarray, list[str]] | None,
    ) -> Self:
        from recsys_ebm.models._retriever_train import train_retriever

        train, valid = check_fit_inputs(train, valid)
        train = (train > 0).astype(np.float32).tocsr()
        if train.nnz == 0:
            raise ValueError("train: expected at least one interaction, got an empty matrix")
        if features is not None and features[0].shape[0] != train.shape[1]:
            raise ValueError(
                f"features: expected {train.shape[1]} rows (one per item), "
                f"got {features[0].shape[0]}"
            )
        self.genres = list(features[1]) if features is not None else []
        ckpt = Path(self.config.checkpoint_dir) if self.config.checkpoint_dir else None
        train_retriever(
            self,
            train,
            valid,
            features=None if features is None else torch.as_tensor(features[0]),
            callback=callback,
            progress=self.config.progress,
            checkpoint_dir=ckpt,
        )
        return self

    def build_net(
        self,
        n_items: int,
        n_users: int,
        features: torch.Tensor | None,
        warm: torch.Tensor,
        generator: torch.Generator,
    ) -> TwoTower:
        """A freshly initialised :class:`TwoTower` for this config (on ``self.device``)."""
        cfg = self.config
        net = TwoTower(
            n_items,
            cfg.embedding_size,
            cfg.n_hidden,
            item_features=features,
            warm=warm,
            n_users=n_users if cfg.user_embedding else 0,
            pooling=cfg.pooling,
            tie_embeddings=cfg.tie_embeddings,
            similarity=cfg.similarity,
            temperature=cfg.temperature,
            learn_temperature=cfg.learn_temperature,
            tau_min=cfg.tau_min,
            tau_max=cfg.tau_max,
            generator=generator,
            item_bias=cfg.item_bias,
        )
        return net.to(self.device)

    # ------------------------------------------------------------------ serving
    def _net(self) -> TwoTower:
        self._check_fitted()
        assert self.net is not None
        return self.net

    def invalidate_cache(self) -> None:
        """Forget the cached serving item matrix (call after changing the weights)."""
        self._item_cache = None

    def _items(self) -> torch.Tensor:
        net = self._net()
        if self._item_cache is None or net.training:
            with torch.no_grad():
                self._item_cache = net.item_vectors().float()  # (I, D)
        return self._item_cache

    def _biases(self) -> torch.Tensor | None:
        """(I,) float32 item log-priors b_i, or None without ``item_bias``."""
        b = self._net().biases()
        return None if b is None else b.detach().float()

    def _user_rows(self, users: np.ndarray | None) -> torch.Tensor | None:
        net = self._net()
        if users is None or net.user_emb is None:
            return None
        n_train = net.user_emb.shape[0]
        if users.size and users.max() >= n_train or (users < -1).any():
            raise ValueError(
                f"users: expected training-row indices in [0, {n_train}) or -1 (unknown user), "
                f"got values in [{users.min()}, {users.max()}]"
            )
        return torch.as_tensor(users, dtype=torch.long, device=self.device)

    def _encode_block(self, user_items: sp.csr_matrix, users: np.ndarray | None) -> torch.Tensor:
        net = self._net()
        with torch.no_grad():
            return net.encode(
                sparse_history(user_items, self.device), self._user_rows(users)
            ).float()  # (B, D)

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        u = self._encode_block(user_items, users)  # (B, D)
        v, b = self._items(), self._biases()  # (I, D), (I,) or None
        if items is not None:
            idx = torch.as_tensor(items, device=v.device)
            v, b = v[idx], None if b is None else b[idx]
        with torch.no_grad():
            return self._net().energy(u, v, b)  # (B, I) = -u v^T / tau - b

    def energy_factors(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None
    ) -> EnergyFactors:
        """Exact: E(u, i) = (-u / tau) . v_i - b_i (capabilities.FactorScorer; the ranker's
        cascade)."""
        user_items = as_user_items(user_items, self._check_fitted())
        users = self._check_users(users, user_items.shape[0])
        u = self._encode_block(user_items, users)  # (B, D)
        b = self._biases()
        bias = None if b is None else -b
        return EnergyFactors(u * (-1.0 / self.temperature), self._items(), bias, exact=True)

    @property
    def temperature(self) -> float:
        """tau: E(u, i) = -(encode_users(u) @ item_embeddings()[i]) / tau - item_biases()[i]."""
        return float(self._net().tau().detach())

    def encode_users(self, histories: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        """(U, D) float32 user vectors (unit-norm for cosine) from (U, I) CSR histories.

        ``users`` optionally gives each row's training-row index (-1 = unknown user).
        """
        n_items = self._check_fitted()
        histories = as_user_items(histories, n_items, "histories")
        users = self._check_users(users, histories.shape[0])
        out = np.empty((histories.shape[0], self.config.embedding_size), dtype=np.float32)
        for s in range(0, histories.shape[0], 4096):
            block_users = None if users is None else users[s : s + 4096]
            out[s : s + 4096] = self._encode_block(histories[s : s + 4096], block_users).cpu()
        return out

    def item_embeddings(self) -> np.ndarray:
        """(I, D) float32 item vectors (unit-norm for cosine; cold items share the OOV row)."""
        return self._items().cpu().numpy().copy()

    def item_biases(self) -> np.ndarray:
        """(I,) float32 item log-priors b_i of the energy (zeros without ``item_bias``)."""
        b = self._biases()
        n = self._check_fitted()
        return np.zeros(n, np.float32) if b is None else b.cpu().numpy().copy()

    def _index_vectors(self) -> np.ndarray:
        """(I, D + 1) item vectors [v_i, tau b_i]: with queries [u, 1], the inner product is
        tau x -E(u, i), so a maximum-inner-product index ranks by energy."""
        tau = self.temperature
        return np.hstack([self.item_embeddings(), tau * self.item_biases()[:, None]])

    def retrieve(
        self,
        user_items: sp.csr_matrix,
        n_candidates: int,
        *,
        users: np.ndarray | None = None,
        exclude_seen: bool = True,
        index: Any = None,
    ) -> np.ndarray:
        """(U, C) int64 candidate item indices, lowest energy first, for the ranker.

        Exact search (a matmul + top-k over the catalogue) unless ``index`` is an
        :class:`~recsys_ebm.models.ann.ItemIndex` from :meth:`build_index`. Rows with fewer
        than C eligible items are padded with -1.

        Raises:
            ValueError: ``n_candidates`` is not a positive int, or a bad ``user_items`` /
                ``users`` (as :meth:`recommend`).
        """
        n_items = self._check_fitted()
        # validated here, before delegating, so the error names this method's argument
        if (
            isinstance(n_candidates, bool)
            or not isinstance(n_candidates, int | np.integer)
            or n_candidates <= 0
        ):
            raise ValueError(f"n_candidates: expected a positive int, got {n_candidates!r}")
        if index is None:
            items, _ = self.recommend(
                user_items, n_candidates, users=users, exclude_seen=exclude_seen
            )
            return items
        user_items = as_user_items(user_items, n_items)
        users = self._check_users(users, user_items.shape[0])
        queries = self.encode_users(user_items, users)  # (U, D)
        queries = np.hstack([queries, np.ones((queries.shape[0], 1), np.float32)])  # [u, 1]
        return index.search(queries, n_candidates, seen=user_items if exclude_seen else None)

    def build_index(self, kind: str = "hnsw", **options: Any) -> Any:
        """An approximate nearest-neighbour index over the item vectors with their log-priors,
        [v_i, tau b_i] (:meth:`retrieve` queries it with [u, 1]; needs faiss)."""
        from recsys_ebm.models.ann import ItemIndex

        return ItemIndex(self._index_vectors(), kind=kind, **options)

    def histories_from_ids(
        self,
        histories: Sequence[Sequence[Any]],
        *,
        on_unknown: Literal["drop", "raise"] = "drop",
    ) -> sp.csr_matrix:
        """(U, I) CSR from per-user lists of raw item ids (the model's ``item_vocab``).

        Ids match under the :class:`~recsys_ebm.data.vocab.Vocabulary` rule (42 and "42" are
        the same id, "042" is not). Unknown raw ids are dropped with a :class:`DataWarning`
        (``on_unknown="drop"``) or raise ``ValueError`` (``"raise"``). Without ``item_ids`` the
        ids are read as item indices.
        """
        n_items = self._check_fitted()
        if on_unknown not in ("drop", "raise"):
            raise ValueError(f"on_unknown: expected 'drop' or 'raise', got {on_unknown!r}")
        if isinstance(histories, str) or not isinstance(histories, Sequence):
            raise TypeError(
                f"histories: expected a sequence of item-id lists, got {type(histories).__name__}"
            )
        vocab = self.item_vocab
        if vocab is None:
            vocab = Vocabulary(np.arange(n_items), name="item index")
        flat = [raw for hist in histories for raw in hist]
        found = vocab.index(flat, unknown="missing")  # (N,) -1 = unknown
        rows_all = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        rows, cols = rows_all[found >= 0], found[found >= 0]
        unknown = [flat[k] for k in np.flatnonzero(found < 0)]
        if unknown:
            msg = (
                f"histories: {len(unknown)} item id(s) unknown to the model, e.g. {unknown[:5]} "
                "(ids match as an int or its decimal string: 42 or '42', not '042')"
            )
            if on_unknown == "raise":
                raise ValueError(msg)
            warnings.warn(msg + "; dropped", DataWarning, stacklevel=2)
        m = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(histories), n_items)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self._net().state_dict().items()}

    def _extra_meta(self) -> dict[str, Any]:
        net = self._net()
        n_users = 0 if net.user_emb is None else int(net.user_emb.shape[0])
        return {"n_users": n_users, "genres": self.genres}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        assert self.n_items is not None
        self.genres = list(meta.get("genres", []))
        if self.config.item_bias and "item_bias" not in tensors:  # saved before item_bias
            self.config = self.config.replace(item_bias=False)
        gen = torch.Generator().manual_seed(0)  # shapes only: every value is overwritten
        net = self.build_net(
            self.n_items, int(meta["n_users"]), tensors.get("item_features"), tensors["warm"], gen
        )
        net.load_state_dict(tensors)
        self.net = net.eval()
        self.invalidate_cache()
