"""The retriever's typed config (:class:`RetrieverConfig`), split from
:mod:`recsys_ebm.models.retriever` (which re-exports it): towers, energy, objective, training."""

from __future__ import annotations

import dataclasses
from typing import Literal

from recsys_ebm.config import Config
from recsys_ebm.diagnostics import ConfigError

__all__ = ["RetrieverConfig"]


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
    # a learned log-prior b_i per item in the energy, E(u, i) = -sim(u, i) / tau - b_i: with
    # cosine similarity the logits are bounded by 1/tau and carry no popularity of their own,
    # while p(i | history) = p(i) x exp(sim / tau) / Z needs the prior. Validation NDCG@10 with
    # it vs without (`benchmarks/retriever.py --ablation --rows 2,8`, 2026-12-07): ML-100K 0.2224
    # vs 0.2224, ml-latest-small 0.1679 vs 0.1664, movietweetings-100k 0.1223 vs 0.1188
    item_bias: bool = True
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
