"""Tie the RBM code to the theory on tiny models, by exact enumeration."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.models._rbm_math import free_energy_delta, gibbs_vhv, hidden_prob
from recsys_ebm.models.rbm import RBM
from recsys_ebm.models.rbm_likelihood import (
    ais_log_z,
    all_states,
    exact_cd_gradient,
    exact_gradient,
    exact_log_likelihood,
    exact_log_z,
)


def tiny(n_v=5, n_h=3, scale=1.5, seed=0, hidden_dropout=0.0):
    g = torch.Generator().manual_seed(seed)
    m = RBM(n_hidden=n_h, device="cpu", progress=False, hidden_dropout=hidden_dropout)
    m.n_items = n_v
    m.W = torch.randn(n_v, n_h, generator=g, dtype=torch.float64) * scale
    m.b = torch.randn(n_v, generator=g, dtype=torch.float64) * 0.5
    m.c = torch.randn(n_h, generator=g, dtype=torch.float64) * 0.5
    data = torch.tensor(
        [[1, 1, 0, 0, 1], [1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.float64
    )[:, :n_v]
    return m, data


def norm(g):
    return float(sum((t**2).sum() for t in g.values()) ** 0.5)


def test_cd0_gives_exactly_zero_update():
    m, data = tiny()
    grads, _ = m.cd_gradient(data, 0, torch.Generator().manual_seed(0))
    for t in grads.values():
        assert torch.count_nonzero(t) == 0


def test_log_z_enumeration_of_either_layer_agrees():
    m, _ = tiny(n_v=6, n_h=4)
    brute = torch.logsumexp(
        torch.tensor(
            [float(v @ m.b + h @ m.c + v @ m.W @ h) for v in all_states(6) for h in all_states(4)],
            dtype=torch.float64,
        ),
        0,
    )
    assert abs(exact_log_z(m.W, m.b, m.c) - float(brute)) < 1e-9  # enumerates the hidden layer
    assert abs(exact_log_z(m.W.T, m.c, m.b) - float(brute)) < 1e-9  # transposed: visible


def test_cd_k_bias_shrinks_with_k_and_matches_the_sampler():
    m, data = tiny()
    exact = exact_gradient(m.W, m.b, m.c, data)
    biases = []
    for k in (1, 3, 10, 50):
        cd = exact_cd_gradient(m.W, m.b, m.c, data, k)
        biases.append(norm({n: cd[n] - exact[n] for n in cd}))
    assert biases[0] > biases[1] > biases[2] > biases[3]
    assert biases[3] < 0.05 * biases[0]
    # the code's stochastic CD-1 estimate averages to the exact CD-1 expectation
    reps = data.repeat(20000, 1)
    grads, _ = m.cd_gradient(reps, 1, torch.Generator().manual_seed(1))
    cd1 = exact_cd_gradient(m.W, m.b, m.c, data, 1)
    for n in grads:
        torch.testing.assert_close(grads[n], cd1[n], atol=0.02, rtol=0)


def test_dropout_cd1_averages_to_the_thinned_rbms_exact_cd1_over_masks():
    """Dropout RBM (Srivastava et al. 2014, sec. 8): the code's CD-1 estimate with
    hidden_dropout p averages to the mean over masks r of the exact CD-1 gradient of each thinned
    RBM (hidden units r_j = 1 only, visible bias q b_stored), whose b gradient the stored b / q
    receives divided by q, enumerated exactly."""
    q = 0.5
    m, data = tiny(hidden_dropout=1 - q)
    want = {"W": torch.zeros_like(m.W), "b": torch.zeros_like(m.b), "c": torch.zeros_like(m.c)}
    for r in all_states(3):
        on = r.bool()
        w = q ** float(r.sum()) * (1 - q) ** float(3 - r.sum())
        if on.any():
            g = exact_cd_gradient(m.W[:, on], q * m.b, m.c[on], data, 1)
        else:  # no hidden unit: independent visibles, one Gibbs step draws them from q b
            g = {"b": data.mean(0) - torch.sigmoid(q * m.b)}
            g["W"], g["c"] = torch.zeros(5, 0, dtype=m.W.dtype), torch.zeros(0, dtype=m.W.dtype)
        want["W"][:, on] += w * g["W"]
        want["c"][on] += w * g["c"]
        want["b"] += w * g["b"] / q
    reps = data.repeat(20000, 1)
    grads, _ = m.cd_gradient(reps, 1, torch.Generator().manual_seed(1))
    for n in grads:
        torch.testing.assert_close(grads[n], want[n], atol=0.02, rtol=0)
    plain = exact_cd_gradient(m.W, q * m.b, m.c, data, 1)  # no dropout: far from it
    assert max(float((want[n] - plain[n]).abs().max()) for n in ("W", "c")) > 0.05


def test_long_pcd_chain_approaches_exact_gradient():
    m, data = tiny()
    exact = exact_gradient(m.W, m.b, m.c, data)
    g = torch.Generator().manual_seed(2)
    chain = torch.bernoulli(torch.full((20000, 5), 0.5, dtype=torch.float64), generator=g)
    for _ in range(10):  # persistent chains carried across 10 "minibatches" of 20 steps
        chain, _ = gibbs_vhv(chain, m.W, m.b, m.c, 20, g)
    grads, _ = m.cd_gradient(data, 1, g, chain=chain)
    cd1 = exact_cd_gradient(m.W, m.b, m.c, data, 1)
    err_pcd = norm({n: grads[n] - exact[n] for n in grads})
    err_cd1 = norm({n: cd1[n] - exact[n] for n in cd1})
    assert err_pcd < 0.05 and err_pcd < 0.25 * err_cd1


def test_exact_gradient_is_the_derivative_of_log_likelihood():
    m, data = tiny()
    grad = exact_gradient(m.W, m.b, m.c, data)
    eps = 1e-5
    for i, j in ((0, 0), (3, 2)):
        W2 = m.W.clone()
        W2[i, j] += eps
        num = (
            exact_log_likelihood(W2, m.b, m.c, data) - exact_log_likelihood(m.W, m.b, m.c, data)
        ) / eps
        assert abs(num - float(grad["W"][i, j])) < 1e-4


def test_ais_log_z_close_to_exact():
    m, _ = tiny(n_v=12, n_h=8, scale=0.7, seed=3)
    exact = exact_log_z(m.W, m.b, m.c)
    est, se = ais_log_z(
        m.W, m.b, m.c, n_runs=200, n_betas=1000, generator=torch.Generator().manual_seed(0)
    )
    assert se < 0.2
    assert abs(est - exact) < max(0.15, 4 * se)


def test_df_ranking_equals_exact_conditional_by_enumeration():
    m, _ = tiny(n_v=7, n_h=4, seed=5)
    hs = all_states(4)
    v = torch.tensor([[1, 0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 1, 0, 0]], dtype=torch.float64)
    dF = free_energy_delta(v, m.W, m.b, m.c)
    for u in range(2):
        cond = []
        for i in range(7):
            on, off = v[u].clone(), v[u].clone()
            on[i], off[i] = 1.0, 0.0
            # unnormalised p(v) = sum_h exp(-E(v, h)), straight from the energy function
            p_on = torch.exp(on @ m.b + hs @ m.c + (on @ m.W) @ hs.T).sum()
            p_off = torch.exp(off @ m.b + hs @ m.c + (off @ m.W) @ hs.T).sum()
            cond.append(float(p_on / (p_on + p_off)))
        cond = np.array(cond)
        np.testing.assert_allclose(torch.sigmoid(-dF[u]).numpy(), cond, rtol=1e-9)
        assert list(np.argsort(dF[u].numpy(), kind="stable")) == list(
            np.argsort(-cond, kind="stable")
        )
    # and the model's public energies are these dF values
    m.W, m.b, m.c = m.W.float(), m.b.float(), m.c.float()
    e = m.energies(sp.csr_matrix(v.numpy().astype(np.float32)))
    np.testing.assert_allclose(e, dF.numpy(), rtol=1e-4, atol=1e-5)


def test_hidden_prob_is_the_exact_posterior():
    m, _ = tiny(n_v=4, n_h=3)
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    hs = all_states(3)
    w = torch.exp(hs @ m.c + (v @ m.W) @ hs.T)[0]  # (2^H,)
    post = (w[:, None] * hs).sum(0) / w.sum()
    torch.testing.assert_close(hidden_prob(v, m.W, m.c)[0], post)
