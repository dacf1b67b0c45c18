"""Softmax RBM for ratings: Salakhutdinov, Mnih & Hinton, "Restricted Boltzmann Machines for
Collaborative Filtering", ICML 2007 (https://doi.org/10.1145/1273496.1273596), issue #3.

Every user is an RBM whose visible layer is a K-way softmax per item they rated (K = the rating
levels, e.g. 1..5 or 0.5..5 in half stars); missing ratings are absent, not zero. All users share
W (I, K, H), b (I, K) and c (H,). Maths and shapes: :mod:`recsys_ebm.models._softmax_rbm_math`.
Rating values <-> level codes: :mod:`~recsys_ebm.models._softmax_rbm_levels`; initial parameters
and the CD-k gradient: :mod:`~recsys_ebm.models._softmax_rbm_cd`; the user orientation's
conditionals: :mod:`~recsys_ebm.models._softmax_rbm_user`.

**Histories are ratings.** Every matrix this model reads - ``fit``'s ``train`` and ``valid``, and
the ``user_items`` of ``energies`` / ``recommend`` / ``predict_ratings`` - carries rating values
in its CSR data, never ones. A value that is not one of the model's rating levels raises
``ValueError``. A binary interaction matrix whose ones happen to be a valid level (1 star on a
1..5 scale) cannot be told apart; it is read as "every item rated 1" and a :class:`DataWarning`
is raised when a history of 20+ entries is all ones. Use ``Dataset.history(split,
values="rating")``; ``fit_dataset`` and ``evaluate_models`` do (``history_values = "rating"``).

**Orientation: two classes over one maths module.** ``orientation = "user"``
(:class:`UserSoftmaxRBM`) is the paper's model: a user is a training case whose
visible layer holds their ratings, and p(r_ui | u's other ratings) conditions on the user's own
history. ``orientation = "item"`` (the default) transposes it, after Georgiev & Nakov (ICML
2013): an item is a case whose visible units are the users who rated it, and p(r_ui | the item's
ratings by other users) uses user u's learned weights; users unseen in training are folded in
from the ratings passed at call time (see :mod:`recsys_ebm.models._softmax_rbm_items`); that is
:class:`ItemSoftmaxRBM`. On MovieLens 100K the item orientation is the better rating predictor
(benchmarks/README.md). ``SoftmaxRBM(config)`` (the ``softmax-rbm`` of the CLI, config files and
saved model directories) builds the class of ``config.orientation``; both subclass it. Only the
user orientation has a free energy of a user's ratings (its cases are users), so only
:class:`UserSoftmaxRBM` is a :class:`~recsys_ebm.models.capabilities.FreeEnergyModel`.

**Ranking energy.** energy(u, i) = -E[r_ui | ...], the exact expected rating of item i under the
model's conditional (paper sec. 2.2), so the top of the list is what the user would rate highest.
This is a preference ranking: the model is trained on which rating, not on which items get rated,
so it does not favour popular items the way implicit-feedback models do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.config import Config
from recsys_ebm.device import resolve_device
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models._rbm_train import CDSchedule
from recsys_ebm.models._softmax_rbm_cd import cd_gradients, initial_params
from recsys_ebm.models._softmax_rbm_levels import (
    check_pair_indices,
    codes_from_tensors,
    codes_to_tensors,
    level_tensors,
    rating_codes,
    training_levels,
)
from recsys_ebm.models._softmax_rbm_math import free_energy, hidden_input
from recsys_ebm.models._softmax_rbm_user import pair_probs, user_energies
from recsys_ebm.models.base import EpochCallback, Recommender, as_user_items, check_fit_inputs

__all__ = ["ItemSoftmaxRBM", "SoftmaxRBM", "SoftmaxRBMConfig", "UserSoftmaxRBM"]


@dataclasses.dataclass(frozen=True)
class SoftmaxRBMConfig(CDSchedule, Config):
    # defaults: the ML-100K validation-RMSE search in benchmarks/README.md, item orientation
    # (figures quoted below are validation RMSE; the search varied one setting at wd 0.01)
    n_hidden: int = 200  # 100 (the paper's Netflix size): 0.924 vs 0.918; 400: 0.917, 1.5x slower
    epochs: int = 150  # an upper bound: early stopping ends the ML-100K run before 100
    batch_size: int = 64  # ~26 updates per epoch on ML-100K's 1,682 item cases
    learning_rate: float = 0.05  # 0.1: 0.920; 0.02: 0.926
    momentum: float = 0.9  # 0.5 for the first 5 epochs, then this (Hinton 2010, sec. 9)
    weight_decay: float = 0.003  # L2 on W: 0.909 (0.01: 0.918, 0.001: 0.909, 0.03: 0.953)
    lr_decay: float = 0.97  # multiplicative per epoch
    cd_k: int = 1
    #: k per training stage; the paper starts at T=1 and raises it to 3, 5, 9 (sec. 2.3)
    k_schedule: tuple[int, ...] = ()
    persistent: bool = False  # PCD: each training rating keeps its own fantasy level
    init_std: float = 0.01
    #: epochs without validation RMSE gain before stopping (0 = never); validation RMSE rises
    #: for the first few epochs while the random weights settle, so 5 can stop before learning
    patience: int = 10
    #: rating values, ascending; empty = the distinct values of the training ratings
    rating_levels: tuple[float, ...] = ()
    #: "item": items are the training cases, users the visible units (Georgiev & Nakov 2013);
    #: "user": the paper's users-as-cases model (module docstring)
    orientation: str = "item"
    #: orientation "item", users unseen in training: Adam steps and step size of the fold-in
    #: (maximum conditional likelihood of the user's passed ratings), and its L2 on the weights
    #: in units of weight_decay x the number of item cases, the pull the training's weight decay
    #: puts on one user's weights (ML-100K validation RMSE of folded-in users at wd 0.003:
    #: 0.6 -> 0.9183, 1 -> 0.9120, 2 -> 0.9099, 4 -> 0.9159)
    fold_in_steps: int = 100
    fold_in_lr: float = 0.05
    fold_in_l2: float = 2.0
    #: iterate averaging, as the binary RBM's ``average`` (models/training.py): the model
    #: validated, kept and served is an average over epochs of the CD iterates
    average: float = 0.0
    max_abs_param: float = 1e4  # divergence guard
    checkpoint_dir: str = ""  # save after every epoch and resume from here when set
    #: progress on stderr: a tqdm bar on a terminal, timestamped lines in a log
    #: (:mod:`recsys_ebm.progress`)
    progress: bool = True
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        self._validate_cd()
        if self.orientation not in ("user", "item"):
            raise ConfigError(
                f"SoftmaxRBMConfig.orientation: expected 'user' or 'item', got {self.orientation!r}"
            )
        if self.fold_in_steps < 0 or self.fold_in_lr <= 0 or self.fold_in_l2 < 0:
            raise ConfigError(
                "SoftmaxRBMConfig.fold_in_*: expected steps >= 0, lr > 0 and l2 >= 0, got "
                f"{self.fold_in_steps}, {self.fold_in_lr}, {self.fold_in_l2}"
            )
        lv = self.rating_levels
        if lv and (len(lv) < 2 or any(b <= a for a, b in zip(lv, lv[1:], strict=False))):
            raise ConfigError(
                "SoftmaxRBMConfig.rating_levels: expected >= 2 strictly increasing values, "
                f"got {list(lv)}"
            )
        if 0.0 in lv:
            raise ConfigError(
                "SoftmaxRBMConfig.rating_levels: 0 cannot be a level (a sparse matrix does not "
                "store zeros); shift the rating scale"
            )


class SoftmaxRBM(Recommender):
    """Softmax-visible RBM over ratings; energy(u, i) = -E[r_i | ...] (module docstring).

    ``SoftmaxRBM(...)`` returns a :class:`UserSoftmaxRBM` or an :class:`ItemSoftmaxRBM`, after
    the config's ``orientation`` (default "item"); this class holds what both share.
    """

    name = "softmax-rbm"
    config_class = SoftmaxRBMConfig
    #: evaluation and batch jobs pass rating-valued histories to models that declare this
    history_values = "rating"
    #: the subclasses' orientation ("user" or "item"); None on this dispatching class
    orientation: ClassVar[str | None] = None
    #: True when the training cases are items (orientation "item")
    item_cases: ClassVar[bool] = False

    def __new__(cls, config: SoftmaxRBMConfig | None = None, **overrides: Any) -> SoftmaxRBM:
        if cls is SoftmaxRBM:  # dispatch on the orientation the config will have
            if config is not None:
                own = config.orientation if isinstance(config, SoftmaxRBMConfig) else None
                orientation = overrides.get("orientation", own)
            else:
                orientation = overrides.get("orientation", SoftmaxRBMConfig.orientation)
            sub = _BY_ORIENTATION.get(orientation) if isinstance(orientation, str) else None
            if sub is not None:
                return super().__new__(sub)
            # anything else: __init__ raises the config's own error
        return super().__new__(cls)

    def __init__(self, config: SoftmaxRBMConfig | None = None, **overrides: Any) -> None:
        own = type(self).orientation
        if own is not None and config is None and "orientation" not in overrides:
            overrides["orientation"] = own  # UserSoftmaxRBM() is user-oriented
        super().__init__(config, **overrides)
        if own is not None and self.config.orientation != own:
            raise ValueError(
                f"config.orientation: {type(self).__name__} has orientation {own!r}, got "
                f"{self.config.orientation!r} (SoftmaxRBM(config) picks the class for you)"
            )
        self.device = resolve_device(self.config.device)
        self.rating_levels: np.ndarray | None = None  # (K,) float64, ascending
        # orientation "user": visible units are items (V = I); "item": users (V = U)
        self.W: torch.Tensor | None = None  # (V, K, H)
        self.b: torch.Tensor | None = None  # (V, K) visible biases
        self.c: torch.Tensor | None = None  # (H,) hidden biases

    # ------------------------------------------------------------------ ratings <-> levels
    def _codes(self, m: sp.csr_matrix, name: str) -> sp.csr_matrix:
        """Same pattern as ``m`` with data = level index + 1 (1..K), as int64 CSR
        (:func:`~recsys_ebm.models._softmax_rbm_levels.rating_codes`).

        Raises:
            ValueError: a stored value is not one of the model's rating levels.
        """
        assert self.rating_levels is not None
        return rating_codes(self.rating_levels, m, name)

    def _tensors(self, codes: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, items, levels) (nnz,) int64 tensors of a level-code CSR block."""
        return level_tensors(codes, self.device)

    # ------------------------------------------------------------------ maths
    def init_params(self, n_items: int, generator: torch.Generator, codes: sp.csr_matrix) -> None:
        """W ~ N(0, init_std), c = 0, b_i^k = log of item i's smoothed level frequencies
        (visible biases at the log base rates: Hinton 2010, sec. 8; :func:`initial_params`)."""
        cfg = self.config
        assert self.rating_levels is not None
        self.n_items = n_items
        params = initial_params(
            n_items, len(self.rating_levels), cfg.n_hidden, cfg.init_std, generator, codes
        )
        self.W, self.b, self.c = (t.to(self.device) for t in params)

    def cd_step(
        self,
        rows: torch.Tensor,
        items: torch.Tensor,
        levels: torch.Tensor,
        n_rows: int,
        k: int,
        generator: torch.Generator | None,
        chain: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """CD-k (or PCD-k from ``chain`` levels) estimate of d log p(V) / d theta (paper eq. 6,
        :func:`~recsys_ebm.models._softmax_rbm_cd.cd_gradients`).

        Returns (gradients averaged over the ``n_rows`` users, the chain's levels after k steps,
        the first reconstruction p(V | h) (nnz, K) or None).
        """
        assert self.W is not None and self.b is not None and self.c is not None
        return cd_gradients(
            self.W, self.b, self.c, rows, items, levels, n_rows, k, generator, chain
        )

    def _hidden_x(self, codes: sp.csr_matrix) -> torch.Tensor:
        rows, items, levels = self._tensors(codes)
        return hidden_input(rows, items, levels, codes.shape[0], self.W, self.c)  # (B, H)

    def _pair_probs(self, codes: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(P, K) p(r_col = k | the row's other ratings) for level-code histories."""
        return pair_probs(self, codes, rows, cols)

    def predict_from_codes(
        self, codes: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray
    ) -> np.ndarray:
        """(P,) expected rating of (case row, unit) pairs of a level-code matrix (cases x units,
        data = level index + 1), conditioned on the row's other ratings: the training monitor."""
        return self._pair_probs(codes, rows, cols) @ self.rating_levels

    # ------------------------------------------------------------------ public prediction API
    def _check_pairs(
        self, history: Any, rows: Any, cols: Any
    ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        n_items = self._check_fitted()
        history = as_user_items(history, n_items, "history")
        out = check_pair_indices(rows, cols, history.shape[0], n_items)
        return self._codes(history, "history"), out[0], out[1]

    def rating_distribution(
        self, history: sp.csr_matrix, rows: Any, cols: Any, *, users: Any = None
    ) -> np.ndarray:
        """Exact p(r_q = k | ...) for (history row, item) pairs (paper eq. 5).

        Orientation "user": conditioned on the row's ratings in ``history`` (V_u). Orientation
        "item": conditioned on item q's training ratings by other users, with the user's learned
        weights (``users``) or weights folded in from the row's ratings (unknown users).

        Args:
            history: (U, I) CSR of rating values (each user's ratings; never the target).
            rows: (P,) row of ``history`` of each pair.
            cols: (P,) item index of each pair. If the user rated it, its own rating is left
                out (leave-one-out conditional).
            users: optional (U,) training-row index of each history row, -1 for a user not seen
                in training (orientation "item"; None = every row is folded in). The user
                orientation needs no user index and ignores it.

        Returns:
            (P, K) float array over :attr:`rating_levels`; each row sums to 1.

        Raises:
            ValueError: rows/cols/users malformed or out of range; a history value is not a
                level.
        """
        codes, rows, cols = self._check_pairs(history, rows, cols)
        users = self._check_users(users, codes.shape[0])
        return self._distribution(codes, rows, cols, users)

    def _distribution(
        self, codes: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, users: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError

    def predict_ratings(
        self, history: sp.csr_matrix, rows: Any, cols: Any, *, users: Any = None
    ) -> np.ndarray:
        """(P,) expected rating sum_k level_k p(r_q = k | ...) of each pair.

        Arguments as :meth:`rating_distribution`.
        """
        return self.rating_distribution(history, rows, cols, users=users) @ self.rating_levels

    # ------------------------------------------------------------------ training state hooks
    def parameters(self) -> dict[str, torch.Tensor]:
        """The fitted tensors by name: ``W`` (V, K, H), ``b`` (V, K), ``c`` (H,) (not copies)."""
        assert self.W is not None and self.b is not None and self.c is not None
        return {"W": self.W, "b": self.b, "c": self.c}

    def set_parameters(self, params: dict[str, torch.Tensor]) -> None:
        """Replace ``W``, ``b`` and ``c`` (the tensors are used as given)."""
        self.W, self.b, self.c = params["W"], params["b"], params["c"]

    def _block_rows(self, n_cols: int, batch_size: int | None) -> int:
        # a scoring block holds (B, I', K) level logits: bound it like the base's (B, I') block
        n_k = 1 if self.rating_levels is None else len(self.rating_levels)
        return super()._block_rows(n_cols * n_k, batch_size)

    def _energies_block(
        self, user_items: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        assert self.W is not None and self.rating_levels is not None
        return self._energies_codes(self._codes(user_items, "user_items"), users, items)

    def _energies_codes(
        self, codes: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train: sp.csr_matrix,
        valid: sp.csr_matrix | None = None,
        *,
        callback: EpochCallback | None = None,
    ) -> Self:
        """Train on a users x items CSR of **rating values** (``valid`` likewise, for early
        stopping on validation RMSE).

        Raises:
            TypeError: ``train`` is not a scipy sparse matrix.
            ValueError: ``train`` has fewer than two distinct values (binary data) or a value
                outside ``rating_levels``; ``valid`` has another shape or an unknown level.
            DivergenceError: the parameters diverged (names the epoch, step and quantity).
        """
        from recsys_ebm.models._softmax_rbm_train import train_softmax_rbm

        train, valid = check_fit_inputs(train, valid)
        self.rating_levels = training_levels(train, self.config.rating_levels)
        if 0.0 in train.data:
            raise ValueError("train: stored zeros are not ratings; drop them or shift the scale")
        codes = self._codes(train, "train")
        if valid is not None:
            self._codes(valid, "valid")  # same level check
        show = self.config.progress  # recsys_ebm.progress: a bar on a TTY, else log lines
        ckpt = Path(self.config.checkpoint_dir) if self.config.checkpoint_dir else None
        cases, vcases = self._cases(codes, valid)
        result = train_softmax_rbm(
            self, cases, vcases, callback=callback, progress=show, checkpoint_dir=ckpt
        )
        self.fit_info = {
            "history": result.history,
            "epochs_run": result.epochs_run,
            "best_valid_rmse": result.best_score,
            "best_epoch": result.best_epoch,
            "n_levels": int(self.W.shape[1]),
        }
        self._after_fit(cases, codes)
        return self

    def _cases(
        self, codes: sp.csr_matrix, valid: sp.csr_matrix | None
    ) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        """The training cases (level codes) and validation ratings, cases x units."""
        return codes, valid

    def _after_fit(self, cases: sp.csr_matrix, codes: sp.csr_matrix) -> None:
        return None

    def fit_dataset(self, dataset: Any, *, callback: EpochCallback | None = None) -> Self:
        """Train on ``dataset.ratings("train")``, early-stopping on ``ratings("valid")``.

        Raises:
            ValueError: the dataset has no ratings.
        """
        if not dataset.has_ratings:
            raise ValueError(
                f"dataset: {self.name} needs explicit ratings, but {dataset.path or 'the dataset'}"
                " has none (prepare it from a log with a rating column)"
            )
        valid = dataset.ratings("valid") if "valid" in dataset.splits else None
        self.fit(dataset.ratings("train"), valid, callback=callback)
        self.item_ids = dataset.item_ids
        self.user_ids = dataset.user_ids
        return self

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.W is not None
        return {"W": self.W, "b": self.b, "c": self.c}

    def _extra_meta(self) -> dict[str, Any]:
        assert self.rating_levels is not None
        return {"rating_levels": self.rating_levels.tolist()}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.rating_levels = np.asarray(meta["rating_levels"], dtype=np.float64)
        self.W = tensors["W"].to(self.device)
        self.b = tensors["b"].to(self.device)
        self.c = tensors["c"].to(self.device)


class UserSoftmaxRBM(SoftmaxRBM):
    """The paper's softmax RBM (``orientation = "user"``): a user is a training case whose
    visible layer holds their ratings; p(r_ui | ...) conditions on u's own other ratings."""

    orientation = "user"
    item_cases = False

    def _distribution(
        self, codes: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, users: np.ndarray | None
    ) -> np.ndarray:
        return self._pair_probs(codes, rows, cols)

    def free_energy(self, user_items: sp.csr_matrix) -> np.ndarray:
        """(U,) F(V) of each rating row (lower = a more plausible set of ratings)."""
        codes = self._codes(as_user_items(user_items, self._check_fitted()), "user_items")
        with torch.no_grad():
            r, i, lv = self._tensors(codes)
            return free_energy(r, i, lv, codes.shape[0], self.W, self.b, self.c).cpu().numpy()

    def _energies_codes(
        self, codes: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        return user_energies(self, codes, items)


class ItemSoftmaxRBM(SoftmaxRBM):
    """The item-oriented softmax RBM (``orientation = "item"``, Georgiev & Nakov 2013): an item
    is a training case whose visible units are the users who rated it; unseen users are folded
    in (:mod:`recsys_ebm.models._softmax_rbm_items`). It has no free energy of a user's ratings.
    """

    orientation = "item"
    item_cases = True

    def __init__(self, config: SoftmaxRBMConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.context: sp.csr_matrix | None = None  # (I, U) training level codes
        self._by_user: sp.csr_matrix | None = None

    @property
    def context_by_user(self) -> sp.csr_matrix:
        """(U, I) level codes of the training ratings, cached."""
        assert self.context is not None
        if self._by_user is None:
            self._by_user = self.context.T.tocsr()
        return self._by_user

    def _distribution(
        self, codes: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, users: np.ndarray | None
    ) -> np.ndarray:
        from recsys_ebm.models._softmax_rbm_items import item_pair_probs

        return item_pair_probs(self, codes, rows, cols, users)

    def _energies_codes(
        self, codes: sp.csr_matrix, users: np.ndarray | None, items: np.ndarray | None
    ) -> torch.Tensor:
        from recsys_ebm.models._softmax_rbm_items import item_energies

        return item_energies(self, codes, users, items)

    def _cases(
        self, codes: sp.csr_matrix, valid: sp.csr_matrix | None
    ) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        self.context = self._by_user = None
        cases = codes.T.tocsr()  # items are the cases: train on the transposed matrices
        cases.sort_indices()
        return cases, None if valid is None else valid.T.tocsr()

    def _after_fit(self, cases: sp.csr_matrix, codes: sp.csr_matrix) -> None:
        self.context, self.n_items = cases, codes.shape[1]

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = super()._state_tensors()
        ctx = self.context  # the item cases' training ratings
        assert ctx is not None
        out.update(codes_to_tensors(ctx, "context"))
        return out

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super()._load_state(tensors, meta)
        self.context = codes_from_tensors(tensors, "context", int(self.W.shape[0]))
        self._by_user = None


_BY_ORIENTATION: dict[str, type[SoftmaxRBM]] = {"user": UserSoftmaxRBM, "item": ItemSoftmaxRBM}
