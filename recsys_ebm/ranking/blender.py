"""The blend stage on its own: per-user standardisation, weights on the simplex, weighted sums.

A :class:`Blender` needs no :class:`~recsys_ebm.ranking.ranker.Ranker`: give it each
component's energies of the same history rows (any models' public
:meth:`~recsys_ebm.models.base.Recommender.energies`), the rows' seen items and, to learn
weights, their validation items::

    h = dataset.history("valid")
    blender = Blender()
    weights = blender.fit([ease.energies(h), als.energies(h)], dataset.valid, seen=h)
    e = blender.blend([ease.energies(h), als.energies(h)], seen=h)  # (U, I), lower = better

The maths (z-scores over each user's unseen candidates, or calibrated energies; the coordinate
search maximising NDCG@10; weights per history-length segment) is in
:mod:`recsys_ebm.ranking._blend`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.models.base import csr_to_torch
from recsys_ebm.ranking._blend import (
    _ndcg,
    bagged_grid_weights,
    blend,
    blend_segments,
    centre,
    fit_inverse_temperature,
    search_weights,
    segment_edges,
    segment_of,
    zscore,
)

__all__ = ["NORMS", "Blender"]

#: how each component's energies are put on a common scale before the weighted sum
NORMS = ("zscore", "calibrated")


class Blender:
    """Blends K components' energies: E(u, i) = sum_k w_k z_k(u, i), w on the simplex.

    ``norm`` chooses z_k. ``"zscore"``: per-user z-scores over the unseen candidates.
    ``"calibrated"``: z_k = beta_k (e_k - mean_u e_k), with beta_k the maximum-likelihood inverse
    temperature of the component's conditional softmax_i(-beta_k e_k(u, i)) on the validation
    items (:func:`~recsys_ebm.ranking._blend.fit_inverse_temperature`); the blend is then the
    log-linear pool (product of experts, Hinton 2002) of calibrated conditionals,
    log p(i | u) = sum_k w_k log p_k(i | u) + const(u), and a component keeps its per-user
    confidence (a user it separates sharply weighs more), which z-scores remove.
    ``segments`` > 1 learns one weight vector per history-length segment (quantile edges of the
    fit users' history lengths); a segment with fewer than ``min_segment_users`` users keeps the
    global weights.

    Args:
        weights: fixed weights, one per component (>= 0, not all 0; normalised to sum 1
            unless they already do, to float32 precision), or None to learn them with
            :meth:`fit`.
        step: grid step of the coordinate search (each move tries t in {0, step, ..., 1}).
        rounds: passes over the coordinates (the search stops early at a pass without gain).
        device: where the (K, U, I) standardised energies are computed ("cpu", "cuda", ...).
        norm: ``"zscore"`` or ``"calibrated"`` (see above).
        segments: number of history-length segments with their own weights (1 = one global
            weight vector).
        min_segment_users: fewest fit users for a segment to get its own weights.
        search: :meth:`fit` searches the weights (coordinate search maximising validation
            NDCG@10); False keeps equal weights and fits only the calibration (``norm =
            "calibrated"``: the equal-weight log-linear pool of calibrated conditionals).
        bags: 0: the coordinate search; > 0: the bagged grid (:func:`~recsys_ebm.ranking._blend.
            bagged_grid_weights`: the mean over ``bags`` bootstrap resamples of the validation
            users of each one's best point on the simplex grid of step ``step``; per segment
            with ``segments`` > 1).
        seed: seeds the bootstrap resamples.

    Attributes:
        weights: (K,) float32 tensor of the current weights (None before :meth:`fit` when none
            were given).
        valid_ndcg: validation NDCG@10 of the weights :meth:`fit` found (None before).
        betas: (K,) float32 inverse temperatures (``norm="calibrated"``, after :meth:`fit`).
        edges: (S - 1,) float64 history-length edges of the segments (None: one segment).
        segment_weights: (S, K) float32 weights per segment (None: :attr:`weights` for all).
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        *,
        step: float = 0.1,
        rounds: int = 3,
        device: str | torch.device = "cpu",
        norm: str = "zscore",
        segments: int = 1,
        min_segment_users: int = 50,
        search: bool = True,
        bags: int = 0,
        seed: int = 0,
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        for name, v in (("segments", segments), ("min_segment_users", min_segment_users)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0:
            raise ValueError(f"step: expected a grid step > 0, got {step!r}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds <= 0:
            raise ValueError(f"rounds: expected a positive int, got {rounds!r}")
        if isinstance(bags, bool) or not isinstance(bags, int) or bags < 0:
            raise ValueError(f"bags: expected an int >= 0, got {bags!r}")
        if bags and not search:
            raise ValueError(f"bags: expected 0 with search=False, got {bags}")
        if segments > 1 and not search:
            raise ValueError(
                f"segments: expected 1 with search=False (equal weights leave nothing to learn "
                f"per segment), got {segments}"
            )
        self.step = float(step)
        self.rounds = rounds
        self.device = torch.device(device)
        self.weights: torch.Tensor | None = None
        self.valid_ndcg: float | None = None
        self.norm, self.segments, self.min_segment_users = norm, segments, min_segment_users
        self.search = bool(search)
        self.bags, self.seed = bags, int(seed)
        self.betas: torch.Tensor | None = None
        self.edges: torch.Tensor | None = None
        self.segment_weights: torch.Tensor | None = None
        if weights is not None:
            self.weights = _simplex(weights)

    def __repr__(self) -> str:
        w = None if self.weights is None else [round(float(x), 4) for x in self.weights]
        return (
            f"Blender(weights={w}, step={self.step}, rounds={self.rounds}, norm={self.norm!r}, "
            f"segments={self.segments}, search={self.search}, bags={self.bags})"
        )

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, torch.Tensor]:
        """The fitted calibration and segment tensors (to save beside :attr:`weights`)."""
        out = {}
        for key in ("betas", "edges", "segment_weights"):
            if (t := getattr(self, key)) is not None:
                out[key] = t.detach().cpu()
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> Blender:
        """Restore :meth:`state` (missing keys: no calibration / one segment); returns self."""
        self.betas = tensors["betas"].float() if "betas" in tensors else None
        self.edges = tensors["edges"].double() if "edges" in tensors else None
        sw = tensors.get("segment_weights")
        self.segment_weights = None if sw is None else sw.float()
        if self.norm == "calibrated" and self.betas is None:
            raise ValueError("tensors: norm 'calibrated' needs the fitted 'betas'")
        return self

    # ------------------------------------------------------------------ stages
    def standardise(
        self, energies: Any, *, seen: Any, candidates: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-user z-scores of each component over its unseen candidates.

        Args:
            energies: K arrays or tensors (U, I), one per component (any iterable, consumed
                one at a time, e.g. a generator calling each model's ``energies``), or one
                (K, U, I) array.
            seen: (U, I) CSR history (its non-zeros are the seen items) or a bool mask; it
                fixes the shape every component's energies must have.
            candidates: None (every item), a (U, I) bool mask, or (U, C) int item indices
                per user padded with -1 (a retriever's output).

        Returns:
            ``(z, seen, candidates)``: (K, U, I) float32 z-scores and the (U, I) bool masks,
            on :attr:`device`.

        Raises:
            ValueError: the shapes disagree; TypeError: an argument of the wrong kind.
        """
        seen_t = _mask(seen, "seen", self.device)
        n_users, n_items = seen_t.shape
        cand = candidate_mask(candidates, n_users, n_items, self.device)
        stats = cand & ~seen_t
        # one component at a time: its raw energies are freed once standardised
        norm = zscore if self.norm == "zscore" else centre
        zs = [norm(e, stats) for e in _each(energies, (n_users, n_items), self.device)]
        if not zs:
            raise ValueError("energies: expected at least one component's energies, got none")
        z = torch.stack(zs)  # (K, U, I)
        if self.norm == "calibrated" and self.betas is not None:
            if self.betas.numel() != z.shape[0]:
                raise ValueError(
                    f"energies: expected {self.betas.numel()} components (one per fitted "
                    f"temperature), got {z.shape[0]}"
                )
            z = z * self.betas.to(z.device)[:, None, None]
        return z, seen_t, cand

    def fit(
        self,
        energies: Any,
        targets: sp.spmatrix,
        *,
        seen: Any,
        candidates: Any = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
    ) -> np.ndarray:
        """Learn the weights: coordinate search on the simplex maximising NDCG@10 on ``targets``,
        or with ``bags`` > 0 the bagged grid maxima (:func:`~recsys_ebm.ranking._blend.
        bagged_grid_weights`); equal weights with ``search=False``. The calibration is fitted
        either way.

        The coordinate search starts from the best of equal weights and each single component,
        so its result never scores below them on ``targets`` (the bagged weights can: they trade
        that for stability across resamples of the validation users).

        Args:
            energies: as in :meth:`standardise`, for the validation users' history rows.
            targets: (U, I) sparse matrix of the users' validation items.
            seen: the (U, I) history behind ``energies`` (masked, never recommended).
            candidates: as in :meth:`standardise`.
            callback: ``callback(round, figures)`` after the start and each round
                (``valid_ndcg@10`` and ``w0``, ``w1``, ...).

        Returns:
            (K,) float64 weights summing to 1 (also kept in :attr:`weights` as float32, with
            the score in :attr:`valid_ndcg`).
        """
        if not sp.issparse(targets):
            raise TypeError(
                f"targets: expected a scipy.sparse matrix (users x items), "
                f"got {type(targets).__name__}"
            )
        self.betas = None  # fitted below from the raw (centred) energies
        z, seen_t, cand = self.standardise(energies, seen=seen, candidates=candidates)
        if targets.shape != tuple(seen_t.shape):
            raise ValueError(
                f"targets: expected shape {tuple(seen_t.shape)} (the energies' users x items), "
                f"got {targets.shape}"
            )
        targets = sp.csr_matrix(targets)
        if self.norm == "calibrated":  # (K,): one maximum-likelihood temperature per component
            stats = cand & ~seen_t
            betas = [fit_inverse_temperature(zk, stats, targets) for zk in z]
            self.betas = torch.as_tensor(betas, dtype=torch.float32)
            z = z * self.betas.to(z.device)[:, None, None]
        kw = dict(step=self.step, rounds=self.rounds)
        if self.search and not self.bags:  # reports its own rounds through the callback
            w, score = search_weights(z, seen_t, cand, targets, callback=callback, **kw)
        else:
            if self.bags:
                w, score = bagged_grid_weights(
                    z, seen_t, cand, targets, step=self.step, bags=self.bags, seed=self.seed
                )
            else:  # equal weights: only the calibration above is fitted
                w = np.full(z.shape[0], 1.0 / z.shape[0])
                score = _ndcg(z, torch.as_tensor(w, dtype=torch.float32), seen_t, cand, targets)
            if callback is not None:
                figures = {f"w{j}": float(x) for j, x in enumerate(w)}
                callback(0, {"valid_ndcg@10": score, **figures})
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.float32)
        self.valid_ndcg = score
        self.edges = self.segment_weights = None
        if self.segments > 1:
            lengths = seen_t.sum(dim=1).cpu().numpy()  # (U,) history lengths
            edges = torch.as_tensor(segment_edges(lengths, self.segments))
            seg = segment_of(lengths, edges)  # (U,)
            rows = [torch.nonzero(seg == s).ravel() for s in range(len(edges) + 1)]
            per = []
            for r in rows:
                if r.numel() < self.min_segment_users:
                    per.append(w / w.sum())  # too few users to learn from: global weights
                    continue
                rd = r.to(z.device)
                args = (z[:, rd], seen_t[rd], cand[rd], targets[r.numpy()])
                if self.bags:
                    ws, _ = bagged_grid_weights(
                        *args, step=self.step, bags=self.bags, seed=self.seed
                    )
                else:
                    ws, _ = search_weights(*args, **kw)
                per.append(ws)
            self.edges = edges
            self.segment_weights = torch.as_tensor(np.stack(per), dtype=torch.float32)
            e = blend_segments(z, self.segment_weights, seg, cand)
            self.valid_ndcg = _ndcg(e[None], torch.ones(1), seen_t, cand, targets)
        return w

    def combine(
        self,
        z: torch.Tensor,
        candidates: torch.Tensor | None = None,
        *,
        lengths: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(K, U, I) z-scores -> (U, I) blended energies; non-candidates rank after candidates.

        ``lengths`` (U,): the users' history lengths, which pick each user's segment weights
        when there are several (required then).
        """
        w = self._fitted_weights(z.shape[0])
        if self.segment_weights is None or self.edges is None:
            return blend(z, w.to(z.device), candidates)
        if lengths is None:
            raise ValueError("lengths: this Blender has segment weights; pass history lengths")
        seg = segment_of(lengths, self.edges)  # (U,)
        if seg.numel() != z.shape[1]:
            raise ValueError(f"lengths: expected {z.shape[1]} history lengths, got {seg.numel()}")
        return blend_segments(z, self.segment_weights, seg, candidates)

    def blend(self, energies: Any, *, seen: Any, candidates: Any = None) -> np.ndarray:
        """Blended energies (U, I) of raw component energies (standardised here), float32.

        Arguments as in :meth:`standardise`; lower = better, as every energy.
        """
        z, seen_t, cand = self.standardise(energies, seen=seen, candidates=candidates)
        return self.combine(z, cand, lengths=seen_t.sum(dim=1)).cpu().numpy()

    def user_coefficients(self, lengths: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, K) a_k(u) = w_k(u) beta_k: each user's coefficient on component k's raw energy in
        the calibrated blend (E = sum_k a_k e_k + const(u)); ``lengths`` (B,) pick each user's
        segment weights.

        Raises:
            ValueError: the blend is not calibrated or not fitted.
        """
        if self.norm != "calibrated" or self.betas is None:
            raise ValueError("norm: user coefficients need a fitted 'calibrated' blend")
        w = self._fitted_weights(self.betas.numel())  # (K,)
        n = len(lengths)
        if self.segment_weights is None or self.edges is None:
            per_user = w[None, :].expand(n, -1)  # (B, K)
        else:
            per_user = self.segment_weights[segment_of(lengths, self.edges).cpu()]  # (B, K)
        return per_user * self.betas[None, :]

    def _fitted_weights(self, k: int) -> torch.Tensor:
        if self.weights is None:
            raise ValueError("weights: this Blender has none; give weights or call fit() first")
        if self.weights.numel() != k:
            raise ValueError(
                f"energies: expected {self.weights.numel()} components (one per weight), got {k}"
            )
        return self.weights


def _simplex(weights: Any) -> torch.Tensor:
    """(K,) float32 weights on the simplex; weights already on it are kept bit for bit."""
    w = torch.as_tensor(weights).detach().cpu()
    if w.ndim != 1 or not w.numel() or w.is_complex() or not bool(torch.isfinite(w).all()):
        raise ValueError(f"weights: expected a 1-D sequence of finite numbers, got {weights!r}")
    w64 = w.double()
    if bool((w64 < 0).any()) or float(w64.sum()) <= 0:
        raise ValueError(f"weights: expected weights >= 0, not all 0, got {weights!r}")
    if w.dtype == torch.float32 and abs(float(w64.sum()) - 1.0) <= 1e-6:
        return w.clone()
    return torch.as_tensor((w64 / w64.sum()).numpy(), dtype=torch.float32)


def candidate_mask(
    candidates: Any, n_users: int, n_items: int, device: torch.device
) -> torch.Tensor:
    """(U, I) bool candidate mask from None (all), a bool mask, or (U, C) indices padded -1."""
    if candidates is None:
        return torch.ones(n_users, n_items, dtype=torch.bool, device=device)
    c = torch.as_tensor(np.asarray(candidates) if not torch.is_tensor(candidates) else candidates)
    if c.dtype == torch.bool:
        return _mask(c, "candidates", device, (n_users, n_items))
    if c.is_floating_point() or c.ndim != 2 or c.shape[0] != n_users:
        raise ValueError(
            f"candidates: expected a ({n_users}, {n_items}) bool mask or ({n_users}, C) int item "
            f"indices (-1 = padding), got {c.dtype} of shape {tuple(c.shape)}"
        )
    ids = c.to(device=device, dtype=torch.long)  # (U, C)
    if ids.numel() and (int(ids.max()) >= n_items or int(ids.min()) < -1):
        raise ValueError(f"candidates: item indices must lie in [0, {n_items}) (or -1 padding)")
    cand = torch.zeros(n_users, n_items, dtype=torch.bool, device=device)
    rows = torch.arange(n_users, device=device)[:, None].expand_as(ids)
    ok = ids >= 0
    cand[rows[ok], ids[ok]] = True
    return cand


def _each(energies: Any, shape: tuple[int, int], device: torch.device) -> Iterator[torch.Tensor]:
    """Each component's (U, I) energies as a tensor on ``device``, checked against ``shape``."""
    if isinstance(energies, np.ndarray | torch.Tensor) and energies.ndim == 2:
        energies = [energies]
    elif isinstance(energies, str | bytes) or not isinstance(
        energies, Iterable | np.ndarray | torch.Tensor
    ):
        raise TypeError(
            "energies: expected a sequence of (users x items) arrays, one per component, "
            f"got {type(energies).__name__}"
        )
    for k, e in enumerate(energies):
        t = torch.as_tensor(e).to(device)
        if tuple(t.shape) != shape:
            raise ValueError(
                f"energies: expected a {shape} array per component (users x items of seen), "
                f"got shape {tuple(t.shape)} for component {k}"
            )
        yield t


def _mask(
    m: Any, name: str, device: torch.device, shape: tuple[int, int] | None = None
) -> torch.Tensor:
    """(U, I) bool tensor from a sparse matrix (its non-zeros) or a dense bool array/tensor."""
    want = "(users x items)" if shape is None else f"{shape} (users x items)"
    if sp.issparse(m):
        if m.ndim != 2 or (shape is not None and m.shape != shape):
            raise ValueError(f"{name}: expected shape {want}, got {m.shape}")
        return csr_to_torch(sp.csr_matrix(m), device).to_dense() > 0
    t = m if torch.is_tensor(m) else torch.as_tensor(np.asarray(m))
    if t.dtype != torch.bool or t.ndim != 2 or (shape is not None and tuple(t.shape) != shape):
        raise ValueError(
            f"{name}: expected a sparse matrix or a bool mask of shape {want}, "
            f"got {t.dtype} of shape {tuple(t.shape)}"
        )
    return t.to(device)
