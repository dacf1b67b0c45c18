"""Energy-based contrastive two-tower retriever (registry name ``retriever``).

Energy E(u, i) = -sim(f(u), g(i)) / tau (towers in :mod:`._retriever_towers`); training minimises
the cross-entropy of the conditional EBM p(i | u) ∝ exp(-E(u, i)). The default objective
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
faiss index, :mod:`recsys_ebm.models.ann`), :meth:`encode_users` and :meth:`item_embeddings`.

Fallbacks (documented policy, never an IndexError):
* empty history -> the user tower's learned "no information" vector (pooled history = 0);
* an item with no training interaction -> the shared out-of-vocabulary item embedding (+ its
  genres when the model was trained with metadata), as input and as a candidate;
* unknown user (``users`` entry -1, or ``users`` omitted) -> no user-id embedding;
* raw item ids unknown to the model (:meth:`histories_from_ids`) -> dropped with a DataWarning
  (``on_unknown="drop"``) or a ValueError (``on_unknown="raise"``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.config import Config
from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.device import resolve_device
from recsys_ebm.diagnostics import ConfigError, DataWarning
from recsys_ebm.models._retriever_towers import TwoTower, sparse_history
from recsys_ebm.models.base import EpochCallback, Recommender, as_user_items, check_fit_inputs
from recsys_ebm.models.capabilities import EnergyFactors

__all__ = ["Retriever", "RetrieverConfig", "genre_features"]


@dataclasses.dataclass(frozen=True)
class RetrieverConfig(Config):
    # Defaults: validation NDCG@10 (early-stopped; per-user random split 20/10, seed 0) only.
    # Towers, tau, metadata: an 18-config search of the interaction objective on ML-100K
    # (`python benchmarks/retriever.py --search --threads 1`, D=64 and no history dropout unless
    # noted; "untied" = a separate input table); the objective's fields: the user-level search
    # on ML-100K and ml-latest-small (`--ablation`; figures "ML-100K / ml-latest-small").
    # Repeats with seed 1 moved a figure by 0.0002-0.0008: smaller gaps are ties.
    embedding_size: int = 128  # D; 0.2185 vs 0.2177 at 64 (tied): a tie, and the best overall
    n_hidden: int = 256  # width of the user tower's residual MLP
    # history pooling; attention (learned query) ties (0.2175 vs 0.2177) at 1.25x the epoch time;
    # with the user objective it loses (ML-100K 0.2157 vs 0.2228, B 128)
    pooling: Literal["mean", "attention"] = "mean"
    # tie: the user tower pools the item tower's own vectors (else a separate input table). Half
    # the embedding parameters and less memorisation: 0.2177 vs 0.2136 untied, and the untied
    # tau = 0.1 model forgot the planted communities as it trained on (tests/test_retriever.py)
    tie_embeddings: bool = True
    # item embeddings at initialisation: "spectral" = the top singular vectors of the
    # column-normalised training matrix (models/_spectral.py: GF-CF's low-pass filter, Shen et
    # al. 2021), "random" = N(0, 1/D) (the default until 2026-11-28). Best
    # validation NDCG@10, mean of seeds 0 and 1, and the epochs the early-stopped fit ran
    # (`python benchmarks/retriever.py --init --threads 1`): ML-100K 0.2212 vs 0.2222 (33 vs 60
    # epochs), ml-latest-small 0.1673 vs 0.1668 (43 vs 63), movietweetings-100k 0.1183 vs 0.1194
    # (19 vs 22): ties (the seeds alone move a figure by 0.001-0.004) in fewer epochs. PureSVD's
    # vectors (no column normalisation) started lower and stayed there (ML-100K 0.2171)
    init: Literal["spectral", "random"] = "spectral"
    user_embedding: bool = False  # add a user-id embedding for known users (fold-in still works)
    user_id_dropout: float = 0.2  # P(known user treated as unknown) in training: serves new users
    item_id_dropout: float = 0.0  # P(item id -> OOV row) in training; 0: OOV = mean embedding
    # genre features in the item tower: 0.2177 vs 0.2140 without; user objective 0.2228 vs 0.2197
    use_metadata: bool = True
    # cosine + tau is the stable InfoNCE default; dot (tau 1) with the user objective (B 256):
    # 0.2138 / 0.1462 vs 0.2247 / 0.1652
    similarity: Literal["cosine", "dot"] = "cosine"
    # tau (initial value when learned): 0.2 beats 0.1 (0.2136 vs 0.2090 untied: 0.1 peaks at
    # epoch 4, then overfits) and 0.3 (0.2099 untied), and 0.15 (0.2150 vs 0.2177 tied); user
    # objective (ML-100K, B 128): 0.2228 vs 0.2144 (0.1) and 0.2093 (0.3)
    temperature: float = 0.2
    learn_temperature: bool = False  # learned tau falls and overfits: 0.2120 vs 0.2136 (untied)
    tau_min: float = 0.01  # clamp for a learned tau (1/tau bounds the logits' scale)
    tau_max: float = 1.0
    # extra sampled negatives (objective="interaction", and the user objective's sampled softmax)
    negatives: Literal["none", "uniform", "popularity"] = "none"
    n_negatives: int = 0  # sampled negatives per batch (shared by all rows)
    popularity_alpha: float = 0.75  # p_j ∝ count_j^alpha for popularity sampling (word2vec)
    # Yi et al. 2019: in-batch negatives are drawn by popularity, so without the correction the
    # model learns p(i|u)/p(i) (PMI) and under-ranks popular items: 0.2136 with, 0.1267 without
    # (untied). The planted-community test turns it off: there the community signal *is* the PMI.
    # objective="interaction" only (the user objective's sampled softmax always corrects)
    logq_correction: bool = True
    # drop each input history item in training (Mult-VAE style), so the user tower sees short
    # histories like a new user's: at D=128 0.2189 vs 0.2185 (none) and 0.2183 (0.3), a tie, but
    # validation NDCG@10 served from only 5 history items is 0.1743 vs 0.1702 without.
    # objective="interaction" only (the user objective's held-out split drops the input)
    history_dropout: float = 0.5
    # the training objective: "user" = one row per user and step, a random part of the history
    # held out and predicted from the rest by a catalogue softmax (_retriever_objective.py);
    # "interaction" = one row per training interaction, in-batch InfoNCE (the default until
    # issue 13). Validation NDCG@10, "user" (B 256, lr 3e-3, patience 10) vs "interaction" (B 512,
    # lr 1e-3, patience 5): ML-100K 0.2248 vs 0.2189, ml-latest-small 0.1652 vs 0.1656,
    # movietweetings-100k 0.1196 vs 0.1203 (the last two ties: seeds move a figure by ~0.002).
    # Issue 13 (fit time, `python benchmarks/train_speed.py --earlier-retriever`): "interaction"
    # re-encodes a user's history for every one of their interactions (137 steps of 512 histories
    # per ML-100K epoch); "user" encodes each user once per epoch and scores all their targets
    # with one catalogue softmax (4 steps per epoch): ML-100K fit 9.2 s vs 32.9 s (1 thread, ALS
    # 0.41 s in the same run); 2 threads 5.8 s, 34x ALS (target 15x: a third of it is the 65
    # per-epoch validations). On movietweetings-100k (16.5k users x 9k items) the catalogue
    # softmax costs more per epoch than the interaction batches: 288 s vs 138 s (1 thread, loaded
    # machine); softmax="sampled" takes 117 s for 0.1188. With objective="interaction"
    # set batch_size=512, learning_rate=1e-3, epochs=40, patience=5 (the values it was tuned at).
    objective: Literal["user", "interaction"] = "user"
    # P(a history item is a target), objective="user": 0.5 vs 0.2: 0.2228 vs 0.2235 (a tie) on
    # ML-100K but 0.1652 vs 0.1630 on ml-latest-small (B 256); 0.8: 0.2073; 0.3: 0.2202 (B 256)
    holdout_fraction: float = 0.5
    # "shared": one softmax for all of a user's targets (multinomial, Mult-VAE); "each": each
    # target against the non-positives only, the other targets masked as accidental hits:
    # 0.2250 vs 0.2228 (B 128), 0.1652 vs 0.1652 (B 256)
    target_softmax: Literal["shared", "each"] = "each"
    # objective="user": "full" = the exact catalogue softmax; "sampled" = the batch's targets +
    # the `negatives` sampler's draws with logQ; "auto" = full up to full_softmax_max_items
    softmax: Literal["auto", "full", "sampled"] = "auto"
    full_softmax_max_items: int = 50_000
    # the user objective stops at epoch ~20-70 (ML-100K: 38 epochs, best 28, from the spectral
    # start; 65, best 55, from a random one): epochs=150 and patience=10 ride out its noisier
    # validation curve (few steps per epoch); a cosine learning rate over 15-20 epochs at lr 1e-2
    # stops at 0.213 (ML-100K), below the target
    epochs: int = 150
    # users per step for "user": B 256 + lr 3e-3: 0.2248 / 0.1652 vs B 128 + lr 1e-3: 0.2250 /
    # 0.1671 at half the steps per epoch (ML-100K fit 18 s vs 26 s, loaded machine, 1 thread);
    # B 128 + lr 3e-3 overfits (0.2193); B 256 + lr 1e-2: 0.2197; B 512 + lr 1e-2: 0.2217;
    # D 64: 0.2189. Interactions per step for "interaction" (512 chosen; 1024 ties)
    batch_size: int = 256
    # Adam. Faster but lower on movietweetings-100k (ML-100K / ml-latest-small / movietweetings,
    # epochs run on ML-100K): 5e-3 0.2212 / 0.1658 / 0.1182 (40 epochs), 7e-3 0.2222 / 0.1665 /
    # 0.1181 (37) vs 3e-3 0.2248 / 0.1652 / 0.1196 (65); interaction default 0.1203 there
    learning_rate: float = 3e-3
    weight_decay: float = 0.0  # L2 through Adam; 1e-6 (B 256) on ml-latest-small: 0.1653 vs 0.1652
    patience: int = 10  # epochs without validation NDCG@10 gain before stopping (0 = never)
    #: validation NDCG@10 after every this many epochs (and the last): a full ranking of the
    #: validation users, 15-25 % of the ML-100K fit. 2 cut the fit by about a tenth at the same
    #: retriever test NDCG@10 (0.4451 / 0.3227 / 0.1311 vs 0.4463 / 0.3208 / 0.1310), but the
    #: ranker's blend moved with it (0.4591 / 0.3555 / 0.1426 vs 0.4608 / 0.3538 / 0.1445)
    validate_every: int = 1
    #: bf16 autocast in training where bf16 products are native: CUDA, and CPUs with AVX512-BF16 or
    #: AMX (device.native_bf16); fp32 elsewhere. Serving and validation stay fp32
    mixed_precision: bool = True
    max_abs_param: float = 1e4  # divergence guard: |weight| above this stops training
    checkpoint_dir: str = ""  # save after every epoch and resume from here when set
    #: progress on stderr: a tqdm bar on a terminal, timestamped lines in a log
    #: (:mod:`recsys_ebm.progress`)
    progress: bool = True
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        name = type(self).__name__
        self._check_positive("embedding_size", "n_hidden", "epochs", "batch_size")
        self._check_positive("learning_rate", "temperature", "tau_min", "tau_max")
        self._check_positive("max_abs_param")
        self._check_nonnegative("popularity_alpha", "seed")
        if not self.tau_min <= self.temperature <= self.tau_max:
            raise ConfigError(
                f"{name}.temperature: expected within [tau_min, tau_max] = "
                f"[{self.tau_min}, {self.tau_max}], got {self.temperature}"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(
                f"{name}.holdout_fraction: expected (0, 1), got {self.holdout_fraction}"
            )
        self._check_positive("full_softmax_max_items")
        for f in ("user_id_dropout", "item_id_dropout", "history_dropout"):
            if not 0.0 <= getattr(self, f) < 1.0:
                raise ConfigError(f"{name}.{f}: expected [0, 1), got {getattr(self, f)}")
        self._check_positive("validate_every")
        if self.weight_decay < 0 or self.n_negatives < 0 or self.patience < 0:
            raise ConfigError(
                f"{name}.weight_decay/n_negatives/patience: expected >= 0, got "
                f"{self.weight_decay}/{self.n_negatives}/{self.patience}"
            )
        if (self.negatives == "none") != (self.n_negatives == 0):
            raise ConfigError(
                f"{name}.n_negatives: expected > 0 exactly when negatives is not 'none', got "
                f"negatives={self.negatives!r}, n_negatives={self.n_negatives}"
            )


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
        v = self._items()  # (I, D)
        if items is not None:
            v = v[torch.as_tensor(items, device=v.device)]
        with torch.no_grad():
            return self._net().energy(u, v)  # (B, I) = -u v^T / tau

    def energy_factors(
        self, user_items: sp.csr_matrix, *, users: np.ndarray | None = None
    ) -> EnergyFactors:
        """Exact: E(u, i) = (-u / tau) . v_i (capabilities.FactorScorer; the ranker's cascade)."""
        user_items = as_user_items(user_items, self._check_fitted())
        users = self._check_users(users, user_items.shape[0])
        u = self._encode_block(user_items, users)  # (B, D)
        return EnergyFactors(u * (-1.0 / self.temperature), self._items(), None, exact=True)

    @property
    def temperature(self) -> float:
        """tau: E(u, i) = -(encode_users(u) @ item_embeddings()[i]) / tau."""
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
        queries = self.encode_users(user_items, users)
        return index.search(queries, n_candidates, seen=user_items if exclude_seen else None)

    def build_index(self, kind: str = "hnsw", **options: Any) -> Any:
        """An approximate nearest-neighbour index over :meth:`item_embeddings` (needs faiss)."""
        from recsys_ebm.models.ann import ItemIndex

        return ItemIndex(self.item_embeddings(), kind=kind, **options)

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
        gen = torch.Generator().manual_seed(0)  # shapes only: every value is overwritten
        net = self.build_net(
            self.n_items, int(meta["n_users"]), tensors.get("item_features"), tensors["warm"], gen
        )
        net.load_state_dict(tensors)
        self.net = net.eval()
        self.invalidate_cache()
