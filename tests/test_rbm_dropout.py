"""The dropout RBM (``RBMConfig.hidden_dropout``; Srivastava et al. 2014, sec. 8): each training
row's thinned chain, and the geometric mean of the thinned RBMs served as one plain RBM."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models.rbm import RBM
from tests.test_rbm import small

# The shared Recommender contract with dropout: tests/test_rbm.py's TestRBM and
# TestPersistentRBM run the defaults (hidden_dropout 0.2); TestRBMWithoutDropout the plain RBM.


def test_served_rbm_is_the_geometric_mean_of_the_thinned_rbms():
    """The identity serving rests on, by brute force over every mask r and every visible vector
    of a tiny fitted model: the mean over masks of the thinned free energies F_r (visible bias
    q b_stored, as the chain uses; hidden unit j present iff r_j = 1) is q times the served
    RBM's free energy, so the served energies (dF) rank as the geometric mean's."""
    n_items, n_hidden, p = 5, 3, 0.4
    q = 1 - p
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((12, n_items)) < 0.4).astype(np.float32))
    m = RBM(n_hidden=n_hidden, epochs=3, batch_size=4, hidden_dropout=p, progress=False)
    m.fit(train)
    W, b, c = (t.double() for t in (m.W, m.b, m.c))
    vs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n_items)), dtype=torch.float64)
    mean_f = torch.zeros(len(vs), dtype=torch.float64)
    for r in itertools.product([0.0, 1.0], repeat=n_hidden):
        r = torch.tensor(r, dtype=torch.float64)
        weight = q ** r.sum() * p ** (n_hidden - r.sum())
        thinned = -(vs @ (q * b)) - (torch.nn.functional.softplus(vs @ W + c) * r).sum(1)
        mean_f += weight * thinned
    served = m.free_energy(sp.csr_matrix(vs.numpy().astype(np.float32)))
    np.testing.assert_allclose(mean_f.numpy(), q * served, rtol=1e-5, atol=1e-5)


def test_each_row_trains_its_own_thinned_rbm():
    """A hidden unit a row dropped is off in both phases of its chain, so with one row its
    column of the W gradient and its c gradient are exactly zero; without dropout none is."""
    board = checkerboard(seed=0)
    v0 = torch.as_tensor(board.train[:1].toarray())  # (1, I) one row
    for p, dropped in ((0.5, True), (0.0, False)):
        m = small(hidden_dropout=p)
        m.init_params(board.train.shape[1], torch.Generator().manual_seed(0), board.train)
        m.W = torch.randn(m.W.shape, generator=torch.Generator().manual_seed(1))  # (I, H)
        gen = torch.Generator().manual_seed(2)
        grads, _, _ = m.cd_step(v0, 1, gen)
        zero_w = (grads["W"] == 0).all(dim=0)  # (H,)
        assert zero_w.any() == dropped
        assert torch.equal(zero_w, grads["c"] == 0)


def test_chain_runs_on_the_thinned_bias_and_moves_it_by_cds_gradient():
    """The Gibbs chain samples the thinned RBM, whose visible bias is q x the stored one (with
    W = 0 the reconstruction is sigmoid(q b)), and the stored b / q gets CD's gradient / q, so
    the thinned bias moves by CD's gradient."""
    board = checkerboard(seed=0)
    v0 = torch.as_tensor(board.train[:6].toarray())  # (6, I)
    m = small(hidden_dropout=0.25)
    m.init_params(board.train.shape[1], torch.Generator().manual_seed(0), board.train)
    m.W = torch.zeros_like(m.W)
    grads, vk, recon = m.cd_step(v0, 1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(recon, torch.sigmoid(0.75 * m.b).expand_as(recon))
    torch.testing.assert_close(grads["b"] * 0.75, v0.mean(0) - vk.mean(0))


def test_stored_bias_is_the_thinned_bias_over_q():
    """The visible biases start at the items' log-odds for the thinned RBMs, stored as b / q."""
    board = checkerboard(seed=0)
    g = torch.Generator().manual_seed(0)
    plain, drop = small(hidden_dropout=0.0), small(hidden_dropout=0.25)
    plain.init_params(board.train.shape[1], g, board.train)
    drop.init_params(board.train.shape[1], torch.Generator().manual_seed(0), board.train)
    torch.testing.assert_close(drop.b * 0.75, plain.b)


def test_bad_hidden_dropout_names_the_field():
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"RBMConfig.hidden_dropout: expected \[0, 1\)"):
            small(hidden_dropout=bad)


def test_conditional_objectives_train_without_dropout():
    """hidden_dropout is CD's: the conditional objectives train the served model itself, so
    their stored bias is not divided by q (and the default needs no change to use them)."""
    assert small(objective="conditional").config.keep == 1.0
    assert small(objective="hybrid").config.keep == 1.0
    assert small().config.keep == pytest.approx(0.8)
