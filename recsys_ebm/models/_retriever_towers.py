"""The two towers of :class:`~recsys_ebm.models.retriever.Retriever` and their energy.

Energy (lower = better): E(u, i) = -sim(f(u), g(i)) / tau, with sim the cosine or the dot product
and tau a fixed or learned temperature clamped to [tau_min, tau_max]. The conditional EBM
p(i | u) = exp(-E(u, i)) / sum_j exp(-E(u, j)) is what InfoNCE trains (see ``_retriever_loss``).

* **Item tower** g(i) = e_id[i] + phi_i W_meta: an item-id embedding plus, when the dataset has
  them, a linear map of the item's genre multi-hot phi_i (rows normalised to sum 1).
  *Out-of-vocabulary fallback*: items with no training interaction ("cold") have no trained id
  embedding, so they all share one OOV row, e_id[I]; an unseen item is thus served as "an average
  item with these genres". The OOV row is learned by item-id dropout during training when
  ``item_id_dropout > 0``, else set to the mean warm id embedding after training.
* **User tower** f(u) = h + MLP(h), h = pool({g_in(j) : j in H_u}) + e_user[u]: the user's history
  H_u (a CSR row) pooled by mean or by attention with a learned query (one-seed, one-head
  pooling-by-attention, Lee et al., "Set Transformer", ICML 2019: weights
  softmax_j(q . tanh(W g_j))), then a residual MLP. The optional user-id embedding e_user is
  added only for known training rows; unknown users (-1) get zero, so any history is served
  without retraining. Empty histories pool to the zero vector: the user tower then returns its
  learned "no information" vector.

Pooling is a sparse (B, I) x (I, D) product, so histories of any length need no padding.

Determinism: every row lookup goes through :func:`lookup` (``F.embedding``), whose CPU backward
sums gradients in a fixed order. Advanced indexing (``table[idx]``) back-propagates through
``index_put_(accumulate=True)``, whose multi-threaded CPU kernel adds in whatever order the
threads finish: two runs with one seed then differ in the last bits, and ranking ties amplify
that into different top-20 lists (478 of 943 ML-100K users). Values are the same either way.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

__all__ = ["PairedHistory", "TwoTower", "canonical_csr", "csr_ones", "lookup", "sparse_history"]

# attention logits are bounded to +-_ATT_BOUND so exp() of them never under/overflows in fp32
_ATT_BOUND = 10.0


def lookup(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[idx]`` for 1-D ``idx``, with a deterministic backward (module docstring)."""
    return nn.functional.embedding(idx, table)


def csr_ones(
    indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """(B, I) torch sparse CSR of ones from a CSR structure (sorted, distinct columns per row).

    CSR rather than COO: torch's CSR x dense product is several times faster on the CPU
    (ML-100K's 943 x 1682 histories x (1682, 129): 0.65 ms vs 4.4 ms forward, 2.5 ms vs 7.9 ms
    with the backward), which the validation pass and every training step pay.
    """
    with warnings.catch_warnings():  # "CSR support is in beta": the product used here is stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        t = torch.sparse_csr_tensor(
            torch.as_tensor(np.asarray(indptr, dtype=np.int64)),
            torch.as_tensor(np.asarray(indices, dtype=np.int64)),
            torch.ones(len(indices), dtype=torch.float32),
            size=shape,
            check_invariants=False,  # built from a canonical CSR
        )
    return t.to(device)


def canonical_csr(m: sp.spmatrix) -> sp.csr_matrix:
    """``m`` as CSR with sorted, distinct columns per row (a copy only when it is not already)."""
    m = sp.csr_matrix(m)
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    return m


def sparse_history(m: sp.spmatrix, device: torch.device) -> torch.Tensor:
    """(B, I) scipy sparse history -> torch sparse CSR of ones on ``device`` (each stored item
    once, whatever its value)."""
    m = canonical_csr(m)
    return csr_ones(m.indptr, m.indices, m.shape, device)


class PairedHistory(NamedTuple):
    """A (B, I) sparse CSR history of ones and its (I, B) transpose, also CSR: the pooling's
    backward (H^T @ grad) then reads the transpose as built with the batch, where autograd would
    convert H^T to CSR by a sort at every step (0.6 of the 1.3 ms of an ML-100K batch's pooling,
    forward and backward; the values are bitwise the same)."""

    rows: torch.Tensor
    cols: torch.Tensor


class _PooledSum(torch.autograd.Function):
    """H @ X for a sparse CSR H with a given CSR H^T: dL/dX = H^T @ dL/dOut."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any, h: torch.Tensor, h_t: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        ctx.h_t = h_t
        return torch.sparse.mm(h, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        return None, None, torch.sparse.mm(ctx.h_t, grad)


def _row_counts(history: torch.Tensor) -> torch.Tensor:
    """(B,) entries per row of a sparse CSR (B, I) history of ones (the sum of a row's values),
    read off the row pointers."""
    crow = history.crow_indices()
    return crow[1:] - crow[:-1]


class TwoTower(nn.Module):
    """Item and user towers; every parameter is initialised from the caller's generator.

    Args:
        n_items: catalogue size I (the OOV row is index I).
        dim: embedding size D.
        n_hidden: width of the user tower's residual MLP.
        item_features: (I, G) float features (row-normalised genre multi-hot) or None.
        warm: (I,) bool, True for items with training interactions (others use the OOV row).
        n_users: training users for the user-id embedding; 0 disables it.
        pooling: "mean" or "attention".
        tie_embeddings: the user tower pools the item tower's own vectors (else its own table).
        similarity: "cosine" or "dot".
        temperature, learn_temperature, tau_min, tau_max: tau and its clamp.
        generator: seeded CPU generator for the initialisation.
        item_bias: a learned per-item log-prior b_i in the energy (module docstring of
            :mod:`recsys_ebm.models.retriever`, ``RetrieverConfig.item_bias``).
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        n_hidden: int,
        *,
        item_features: torch.Tensor | None,
        warm: torch.Tensor,
        n_users: int,
        pooling: str,
        tie_embeddings: bool,
        similarity: str,
        temperature: float,
        learn_temperature: bool,
        tau_min: float,
        tau_max: float,
        generator: torch.Generator,
        item_bias: bool = False,
    ) -> None:
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.pooling, self.similarity = pooling, similarity
        self.tau_min, self.tau_max = tau_min, tau_max
        g = generator
        std = 1.0 / math.sqrt(dim)

        def randn(*shape: int, scale: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * scale)

        self.id_emb = randn(n_items + 1, dim, scale=std)  # (I + 1, D), row I = OOV
        self.in_emb = None if tie_embeddings else randn(n_items + 1, dim, scale=std)
        self.register_buffer("warm", warm.bool().clone())  # (I,)
        if item_features is not None and item_features.shape[1] > 0:
            self.register_buffer("item_features", item_features.float().clone())  # (I, G)
            self.meta_proj = randn(item_features.shape[1], dim, scale=std)  # (G, D)
        else:
            self.register_buffer("item_features", None)
            self.meta_proj = None
        if pooling == "attention":
            self.att_w = randn(dim, dim, scale=std)  # keys k_j = tanh(g_j W)
            self.att_q = randn(dim, scale=std)  # learned query (the single seed)
        self.user_emb = randn(n_users, dim, scale=0.1 * std) if n_users > 0 else None
        self.w1 = randn(dim, n_hidden, scale=std)
        self.b1 = nn.Parameter(torch.zeros(n_hidden))
        # the residual branch starts small: f(u) ~ pooled history at initialisation
        self.w2 = randn(n_hidden, dim, scale=0.1 / math.sqrt(n_hidden))
        self.b2 = nn.Parameter(torch.zeros(dim))
        # (I + 1,) item log-prior b_i, row I = OOV (cold items share it, as their vectors); 0 at
        # the start: the initial energies are the bias-free model's
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1)) if item_bias else None
        log_tau = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    # ------------------------------------------------------------------ item tower
    @property
    def all_warm(self) -> bool:
        """Whether every item has its own trained row (no item falls back to the OOV row)."""
        return bool(self.warm.all())

    def _rows(self, id_drop: torch.Tensor | None = None) -> torch.Tensor:
        """(I,) id-embedding row of each item: itself if warm (and not dropped), else OOV."""
        idx = torch.arange(self.n_items, device=self.warm.device)
        keep = self.warm if id_drop is None else self.warm & ~id_drop
        return torch.where(keep, idx, torch.full_like(idx, self.n_items))

    def item_table(
        self, *, which: str = "out", id_drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(I, D) raw item vectors g(i) (``which="in"``: the user tower's input table)."""
        table = self.id_emb if which == "out" or self.in_emb is None else self.in_emb
        if id_drop is None and self.all_warm:
            v = table[: self.n_items]  # (I, D) every item its own row: a view, no gather
        else:
            v = lookup(table, self._rows(id_drop))  # (I, D)
        if self.meta_proj is not None:
            v = v + self.item_features @ self.meta_proj  # (I, G) @ (G, D)
        return v

    def biases(
        self, id_drop: torch.Tensor | None = None, items: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(I,) or (C,) item log-priors b_i (of ``items`` when given), each item's own row or the
        OOV row as :meth:`item_table` picks; None without ``item_bias``."""
        if self.item_bias is None:
            return None
        if id_drop is None and self.all_warm:
            b = self.item_bias[: self.n_items]  # (I,)
        else:
            b = self.item_bias[self._rows(id_drop)]  # (I,)
        return b if items is None else b[items]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm rows for cosine similarity; unchanged for dot products."""
        return nn.functional.normalize(x, dim=-1) if self.similarity == "cosine" else x

    def item_vectors(self, id_drop: torch.Tensor | None = None) -> torch.Tensor:
        """(I, D) candidate vectors, unit-norm for cosine similarity."""
        return self.normalize(self.item_table(which="out", id_drop=id_drop))

    # ------------------------------------------------------------------ user tower
    def encode(
        self,
        history: torch.Tensor | PairedHistory,
        users: torch.Tensor | None,
        in_table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, D) user vectors from a sparse CSR (B, I) binary history (:func:`sparse_history`, or a
        training batch's :class:`PairedHistory`) and (B,) user rows.

        ``users`` holds training-row indices, -1 for unknown users (no id embedding).
        ``in_table`` (I, D) lets the training step reuse one item-table computation.
        """
        v = self.item_table(which="in") if in_table is None else in_table  # (I, D)
        # sparse products in fp32, outside autocast: CUDA has no bf16 sparse addmm, and autocast
        # would cast the fp32 operands back to bf16 (first CUDA run: NotImplementedError)
        with torch.autocast(v.device.type, enabled=False):
            if self.pooling == "attention":
                if isinstance(history, PairedHistory):
                    history = history.rows
                s = torch.tanh(v @ self.att_w) @ self.att_q  # (I,) attention logits q . k_j
                s = _ATT_BOUND * torch.tanh(s / _ATT_BOUND)
                w = torch.exp(s - s.max().detach())[:, None]  # (I, 1) in (e^-2B, 1]: safe in fp32
                # one product: [sum_j w_j g_j, sum_j w_j]
                both = torch.sparse.mm(history, torch.cat([v * w, w], 1).float())
                num, den = both[:, :-1], both[:, -1:]  # (B, D), (B, 1)
            elif isinstance(history, PairedHistory):  # mean, a training batch
                num = _PooledSum.apply(history.rows, history.cols, v.float())  # (B, D)
                den = _row_counts(history.rows).to(num.dtype)[:, None]  # (B, 1)
            else:  # mean: the weights are 1, the denominator the history's length
                num = torch.sparse.mm(history, v.float())  # (B, D)
                den = _row_counts(history).to(num.dtype)[:, None]  # (B, 1)
        h = num / den.clamp_min(1e-12)  # empty history -> 0
        if self.user_emb is not None and users is not None:
            known = users >= 0
            uid = lookup(self.user_emb, users.clamp_min(0)) * known[:, None].to(h.dtype)
            h = h + uid
        h = h + torch.relu(h @ self.w1 + self.b1) @ self.w2 + self.b2  # residual MLP
        return self.normalize(h)

    # ------------------------------------------------------------------ energy
    def tau(self) -> torch.Tensor:
        """Temperature, clamped to [tau_min, tau_max] (a learned tau cannot run to 0)."""
        return self.log_tau.exp().clamp(self.tau_min, self.tau_max)

    def energy(
        self, user_vecs: torch.Tensor, item_vecs: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C) E(u, i) = -sim(u, i) / tau - b_i from (B, D) users, (C, D) candidate vectors
        and their (C,) log-priors ``bias`` (None: no bias term)."""
        # -1/tau scales the (B, D) factor, not the (B, C) product: one pass over B x C, not three
        scale = -1.0 / self.tau().to(user_vecs.dtype)
        e = (user_vecs * scale) @ item_vecs.T
        return e if bias is None else e - bias.to(e.dtype)

    def logits(
        self, user_vecs: torch.Tensor, item_vecs: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C) -E(u, i) = sim(u, i) / tau + b_i: a softmax's logits without a negation pass."""
        z = (user_vecs * (1.0 / self.tau().to(user_vecs.dtype))) @ item_vecs.T
        return z if bias is None else z + bias.to(z.dtype)
