"""Exact and estimated likelihoods of a Bernoulli RBM, for diagnostics and tests.

* Exact log partition function by enumerating the smaller layer (up to ~20 units):
  log Z = logsumexp_v -F(v)   or   logsumexp_h -G(h),  G(h) = -c.h - sum_i softplus(b_i + W_i.h).
* Exact log-likelihood and the exact maximum-likelihood gradient (data minus model statistics).
* The exact *expected* CD-k gradient for tiny models, through the visible Gibbs transition matrix,
  so the bias of CD-k against maximum likelihood can be measured without sampling noise.
* Annealed importance sampling (Neal 2001; Salakhutdinov & Murray, ICML 2008) for log Z of
  real-sized models, with its standard error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recsys_ebm.models._rbm_math import free_energy, hidden_prob, visible_prob

__all__ = [
    "ais_log_z",
    "all_states",
    "exact_cd_gradient",
    "exact_gradient",
    "exact_log_likelihood",
    "exact_log_z",
]

_MAX_ENUM = 20


def all_states(n: int) -> torch.Tensor:
    """(2^n, n) every binary vector of length n."""
    if n > _MAX_ENUM:
        raise ValueError(f"n: enumeration is limited to {_MAX_ENUM} units, got {n}")
    idx = torch.arange(2**n)
    return ((idx[:, None] >> torch.arange(n)) & 1).to(torch.float64)


def _hidden_free_energy(h: torch.Tensor, W, b, c) -> torch.Tensor:  # noqa: ANN001
    return -(h @ c) - F.softplus(h @ W.T + b).sum(dim=1)


def exact_log_z(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
    """log Z, enumerating whichever layer is smaller (double precision)."""
    W, b, c = W.double(), b.double(), c.double()
    n_v, n_h = W.shape
    if min(n_v, n_h) > _MAX_ENUM:
        raise ValueError(f"W: both layers exceed {_MAX_ENUM} units ({n_v} x {n_h}); use AIS")
    if n_v <= n_h:
        return float(torch.logsumexp(-free_energy(all_states(n_v), W, b, c), dim=0))
    return float(torch.logsumexp(-_hidden_free_energy(all_states(n_h), W, b, c), dim=0))


def exact_log_likelihood(W, b, c, data: torch.Tensor) -> float:  # noqa: ANN001
    """Mean log p(v) over the rows of ``data``."""
    fe = free_energy(data.double(), W.double(), b.double(), c.double())
    return float((-fe).mean()) - exact_log_z(W, b, c)


def _model_stats(W, b, c):  # noqa: ANN001
    """E_model[v h^T], E[v], E[h] by enumeration of the smaller layer."""
    W, b, c = W.double(), b.double(), c.double()
    n_v, n_h = W.shape
    if n_v <= n_h:
        v = all_states(n_v)
        p = torch.softmax(-free_energy(v, W, b, c), dim=0)  # (2^I,)
        ph = hidden_prob(v, W, c)
        return (v * p[:, None]).T @ ph, p @ v, p @ ph
    h = all_states(n_h)
    p = torch.softmax(-_hidden_free_energy(h, W, b, c), dim=0)  # (2^H,)
    pv = visible_prob(h, W, b)
    return (pv * p[:, None]).T @ h, p @ pv, p @ h


def _data_stats(W, c, data):  # noqa: ANN001
    v = data.double()
    ph = hidden_prob(v, W.double(), c.double())
    return v.T @ ph / len(v), v.mean(0), ph.mean(0)


def exact_gradient(W, b, c, data: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """The exact gradient of the mean log-likelihood: data statistics minus model statistics."""
    dW, db, dc = _data_stats(W, c, data)
    mW, mb, mc = _model_stats(W, b, c)
    return {"W": dW - mW, "b": db - mb, "c": dc - mc}


def exact_cd_gradient(W, b, c, data: torch.Tensor, k: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Expected CD-k gradient: the negative phase is the data distribution pushed k steps
    through the exact visible-to-visible Gibbs transition matrix T (tiny models only)."""
    W, b, c = W.double(), b.double(), c.double()
    n_v, n_h = W.shape
    vs, hs = all_states(n_v), all_states(n_h)
    ph = hidden_prob(vs, W, c)  # (V, H)
    p_h_given_v = torch.exp(hs @ torch.log(ph).T + (1 - hs) @ torch.log1p(-ph).T).T  # (V, Hs)
    pv = visible_prob(hs, W, b)  # (Hs, I)
    p_v_given_h = torch.exp(vs @ torch.log(pv).T + (1 - vs) @ torch.log1p(-pv).T).T  # (Hs, V)
    T = p_h_given_v @ p_v_given_h  # (V, V) one block Gibbs step
    codes = (data.long() * (1 << torch.arange(n_v))).sum(1)
    dist = torch.bincount(codes, minlength=2**n_v).double() / len(data)
    dist = dist @ torch.linalg.matrix_power(T, k)
    neg_W = (vs * dist[:, None]).T @ ph
    dW, db, dc = _data_stats(W, c, data)
    return {"W": dW - neg_W, "b": db - dist @ vs, "c": dc - dist @ ph}


def ais_log_z(
    W: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    *,
    n_runs: int = 100,
    n_betas: int = 2000,
    base_visible_bias: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """AIS estimate of log Z and its standard error (Salakhutdinov & Murray 2008, sec. 4.1).

    The base model has visible biases ``base_visible_bias`` (default zeros) and no couplings;
    intermediate models p_k(v) ∝ exp(-F_k(v)) with
    F_k(v) = -(1-β_k) b_A.v - β_k b.v - sum_j softplus(β_k (c_j + (v W)_j)).
    """
    W, b, c = W.double(), b.double(), c.double()
    n_v, n_h = W.shape
    b_a = (
        torch.zeros(n_v, dtype=torch.float64)
        if base_visible_bias is None
        else base_visible_bias.double()
    )
    betas = torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64)

    def fe(v: torch.Tensor, beta: float) -> torch.Tensor:  # (R,)
        return -(1 - beta) * (v @ b_a) - beta * (v @ b) - F.softplus(beta * (v @ W + c)).sum(1)

    v = torch.bernoulli(torch.sigmoid(b_a).expand(n_runs, n_v), generator=generator)
    log_w = torch.zeros(n_runs, dtype=torch.float64)
    for k in range(1, n_betas):
        b0, b1 = float(betas[k - 1]), float(betas[k])
        log_w += fe(v, b0) - fe(v, b1)
        h = torch.bernoulli(torch.sigmoid(b1 * (v @ W + c)), generator=generator)
        v = torch.bernoulli(torch.sigmoid((1 - b1) * b_a + b1 * (h @ W.T + b)), generator=generator)
    log_z_a = float(F.softplus(b_a).sum()) + n_h * math.log(2.0)
    log_mean_w = float(torch.logsumexp(log_w, 0)) - math.log(n_runs)
    w = torch.exp(log_w - log_w.max())
    stderr = float(w.std() / (w.mean() * math.sqrt(n_runs)))  # delta method on log(mean w)
    return log_z_a + log_mean_w, stderr
