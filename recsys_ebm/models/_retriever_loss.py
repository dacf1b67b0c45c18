"""InfoNCE for the retriever: the cross-entropy of a conditional EBM over a candidate set.

For an anchor user u with positive item i+ and candidate set C (the batch's positives plus
optional sampled negatives), InfoNCE (van den Oord et al., 2018) is

    L(u) = -log  exp(-E(u, i+) - log Q(i+)) / sum_{j in C} exp(-E(u, j) - log Q(j)),

i.e. the negative log-likelihood of i+ under the conditional EBM p(i | u) ∝ exp(-E(u, i))
restricted to C. ``log Q(j)`` is the logQ correction (sampled softmax, Bengio & Senecal 2008; for
in-batch negatives Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys 2019): popular items appear as in-batch negatives more often than they
would in the full softmax, so each candidate's logit is lowered by the log of its expected count
in C. With log Q constant the loss is the plain softmax over C.

Accidental hits: a candidate that belongs to the anchor user's own positive set (any of their
training items, not only a row that shares the identical positive) is not a negative, so it is
removed from the anchor's softmax (its logit set to -inf). The label column is never removed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "NegativeSampler",
    "accidental_hit_mask",
    "info_nce",
    "log_expected_counts",
    "log_inclusion",
    "multi_positive_softmax",
    "target_softmax_each",
]

#: logit of a removed candidate: exp() of it is exactly 0 in fp32, yet sums of it stay finite, so
#: a row whose candidates are all removed has finite (zero) gradients where -inf would give NaN
_REMOVED = -1e30


def info_nce(
    energies: torch.Tensor,
    labels: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean InfoNCE loss over the rows of ``energies``.

    Args:
        energies: (B, C) E(u_b, c) for each anchor row and candidate column.
        labels: (B,) column of each row's positive.
        mask: (B, C) bool, True = candidate removed from that row's softmax (accidental hit).
        log_q: (C,) or (B, C) log expected count of each candidate under the sampler (logQ
            correction); None = no correction.

    Returns:
        scalar: mean over rows of logsumexp_c(logit_bc) - logit_{b, label_b}, logit = -E - log Q.
    """
    logits = -energies.float()  # (B, C)
    if log_q is not None:
        logits = logits - log_q.float()
    if mask is not None:
        rows = torch.arange(logits.shape[0], device=logits.device)
        keep_label = torch.zeros_like(mask)
        keep_label[rows, labels] = True
        logits = logits.masked_fill(mask & ~keep_label, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, labels)


def multi_positive_softmax(
    energies: torch.Tensor,
    targets: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    mode: str = "shared",
) -> torch.Tensor:
    """Mean over users of the mean negative log-likelihood of each user's held-out targets.

    Each row is a user whose history was split into an input (encoded into ``energies``) and a
    target set T_b; ``mask`` removes the row's input items (known positives: the accidental hits
    of a catalogue softmax, also masked when ranking). With logit z_bj = -E_bj - log Q_bj:

    * ``"shared"``: one softmax over the kept candidates, targets included, the multinomial
      likelihood of Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative
      Filtering", WWW 2018): L_b = -1/|T_b| sum_{t in T_b} log softmax(z_b)_t.
    * ``"each"``: every target against the non-positives only (the other targets removed from
      its denominator too): L_b = -1/|T_b| sum_t log(e^z_t / (e^z_t + sum_{j not in T_b} e^z_j)).

    Args:
        energies: (B, C) E(u_b, c).
        targets: (B, C) bool, the row's held-out positives (never removed by ``mask``).
        mask: (B, C) bool, True = candidate removed from the row's softmax.
        log_q: (C,) or (B, C) log inclusion probability of each candidate (sampled softmax,
            :func:`log_inclusion`); None for the exact catalogue softmax.
        mode: "shared" or "each".

    Returns:
        scalar: the mean over rows with at least one target (each user weighs the same).
    """
    if mode not in ("shared", "each"):
        raise ValueError(f"mode: expected 'shared' or 'each', got {mode!r}")
    logits = -energies.float()  # (B, C)
    if log_q is not None:
        logits = logits - log_q.float()
    t = targets.to(torch.bool)
    if mode == "each":
        rows, cols = t.nonzero(as_tuple=True)  # (|T|,) row-major
        return target_softmax_each(logits, t if mask is None else t | mask, rows, cols)
    if mask is not None:
        logits = logits.masked_fill(mask & ~t, _REMOVED)
    nll = -(torch.log_softmax(logits, dim=1) * t.to(logits.dtype)).sum(1)  # (B,)
    n_t = t.sum(1)  # (B,)
    rows = n_t > 0
    return (nll[rows] / n_t[rows]).mean()


def target_softmax_each(
    logits: torch.Tensor, removed: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """The ``"each"`` loss of :func:`multi_positive_softmax` from logits and target indices.

    Args:
        logits: (B, C) z = -E (- log Q), float.
        removed: (B, C) bool, the row's targets and input items (out of every denominator; the
            targets must be in it).
        rows, cols: (T,) the targets' row and column, distinct pairs, any order.

    Returns:
        scalar: mean over rows with a target of their mean -log p(t) (each user weighs the same).
    """
    return _EachSoftmax.apply(logits, removed, rows, cols)


class _EachSoftmax(torch.autograd.Function):
    """L = mean_b 1/|T_b| sum_{t in T_b} softplus(n_b - z_t), n_b = log sum_{j kept} e^{z_bj}.

    The gradient is written out rather than traced: dL/dz_bj = a_b q_bj for a kept j, with
    q_b = softmax over the kept candidates and a_b = sum_t dL/dn_b = sum_t sigma(n_b - z_t) / K_t
    (K_t = |T_b| x the number of rows with a target), and dL/dz_t = -sigma(n_b - z_t) / K_t at a
    target. One (B, C) pass in the backward instead of the four of masked_fill + logsumexp +
    indexing under autograd; the forward keeps one (B, C) buffer (the unnormalised q).
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any,
        logits: torch.Tensor,
        removed: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        z = logits.detach()
        q = z.masked_fill(removed, float("-inf"))  # (B, C)
        m = q.amax(1, keepdim=True)  # (B, 1); -inf where every candidate is removed
        m = m.masked_fill(~torch.isfinite(m), 0.0)
        q = q.sub_(m).exp_()  # (B, C) e^{z - m}, exactly 0 where removed
        s = q.sum(1)  # (B,)
        log_neg = m.squeeze(1) + torch.log(s)  # (B,); -inf for a row with nothing to rank against
        d = log_neg[rows] - z[rows, cols]  # (T,)
        n_t = torch.bincount(rows, minlength=z.shape[0]).to(z.dtype)  # (B,)
        n_rows = (n_t > 0).sum().clamp_min(1)
        k = n_t[rows] * n_rows  # (T,)
        loss = (torch.nn.functional.softplus(d) / k).sum()
        w = torch.sigmoid(d) / k  # (T,) dL/dn_b per target, = -dL/dz_t
        a = torch.zeros_like(s).index_add_(0, rows, w)  # (B,)
        ctx.save_for_backward(q, s, a, rows, cols, w)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        q, s, a, rows, cols, w = ctx.saved_tensors
        coef = torch.where(s > 0, a / s.clamp_min(torch.finfo(s.dtype).tiny), 0.0) * grad
        out = q * coef[:, None]  # (B, C)
        out[rows, cols] = -w * grad  # the targets' own terms (q is 0 there: targets are removed)
        return out, None, None, None


def log_inclusion(
    cand_items: torch.Tensor,
    n_in_batch: int,
    n_sampled: int,
    freq: torch.Tensor,
    probs: torch.Tensor | None,
) -> torch.Tensor:
    """(C,) log pi_j: log probability that item j is in a de-duplicated candidate set.

    The set holds the targets of ``n_in_batch`` training interactions (item j drawn with
    probability freq_j each time) and ``n_sampled`` draws from ``probs``:
    pi_j = 1 - (1 - freq_j)^n_in_batch (1 - probs_j)^n_sampled. Dividing each candidate's
    exp(logit) by pi_j (logit - log pi_j) is the Horvitz-Thompson estimate of the catalogue's
    partition function (the logQ correction of sampled softmax, Bengio & Senecal 2008, with
    unique candidates as in Jean et al., ACL 2015).
    """
    f = freq[cand_items].double()
    log_miss = n_in_batch * torch.log1p(-f.clamp(max=1 - 1e-12))
    if n_sampled and probs is not None:
        p = probs[cand_items].double()
        log_miss = log_miss + n_sampled * torch.log1p(-p.clamp(max=1 - 1e-12))
    # log(1 - exp(log_miss)), stable for log_miss near 0 (rare items) and very negative
    return torch.log(-torch.expm1(log_miss)).clamp_min(-1e4).float()


def accidental_hit_mask(
    positives: sp.csr_matrix, users: np.ndarray, cand_items: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """(B, C) bool: candidate c is in anchor b's positive set and is not b's label column.

    Args:
        positives: (U, I) CSR of every user's positive items (the training matrix).
        users: (B,) user row of each anchor.
        cand_items: (C,) item index of each candidate column.
        labels: (B,) the column holding each anchor's own positive.
    """
    hit = positives[users][:, cand_items].toarray() > 0  # (B, C)
    hit[np.arange(len(users)), labels] = False
    return hit


def log_expected_counts(
    cand_items: torch.Tensor,
    n_in_batch: int,
    n_sampled: int,
    freq: torch.Tensor,
    probs: torch.Tensor | None,
) -> torch.Tensor:
    """(C,) log Q(j): log of the expected number of copies of item j in the candidate set.

    In-batch candidates are the positives of ``n_in_batch`` training interactions drawn
    uniformly, so item j appears n_in_batch * freq_j times on average (freq = count / nnz);
    ``n_sampled`` extra negatives drawn from ``probs`` add n_sampled * probs_j.
    """
    q = n_in_batch * freq[cand_items]
    if n_sampled and probs is not None:
        q = q + n_sampled * probs[cand_items]
    return torch.log(q.clamp_min(1e-30))


class NegativeSampler:
    """Draws extra negatives (shared by the batch) with a seeded generator.

    Args:
        counts: (I,) training interaction count per item; only items with count > 0 are drawn.
        kind: "uniform" over those items, or "popularity" with p_j ∝ count_j ** alpha
            (word2vec's unigram^0.75 when alpha = 0.75).
        alpha: popularity exponent.
    """

    def __init__(self, counts: np.ndarray, kind: str, alpha: float = 0.75) -> None:
        if kind not in ("uniform", "popularity"):
            raise ValueError(f"kind: expected 'uniform' or 'popularity', got {kind!r}")
        counts = np.asarray(counts, dtype=np.float64)
        weights = (counts > 0).astype(np.float64) if kind == "uniform" else counts**alpha
        if weights.sum() <= 0:
            raise ValueError("counts: no item has a training interaction to sample from")
        self.kind = kind
        self.probs = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)  # (I,)

    def sample(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """(k,) int64 item indices drawn with replacement from ``probs``."""
        return torch.multinomial(self.probs, k, replacement=True, generator=generator)
