"""The conditional objective of the binary RBM: its gradient, its exactness against enumeration,
and that it trains a better ranker than CD on a planted structure."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.evaluation.protocol import evaluate_ranking
from recsys_ebm.models._rbm_conditional import (
    conditional_gradient,
    conditional_log_prob,
    sampled_conditional_gradient,
)
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.models.rbm import RBM
from recsys_ebm.models.rbm_likelihood import all_states
from tests.checkpointing import resumed_after_stop


def _params(n_v, n_h, scale, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_v, n_h, generator=g, dtype=torch.float64) * scale
    b = torch.randn(n_v, generator=g, dtype=torch.float64) * 0.5
    c = torch.randn(n_h, generator=g, dtype=torch.float64) * 0.5
    v = (torch.rand(6, n_v, generator=g) < 0.3).double()
    target = ((torch.rand(6, n_v, generator=g) < 0.4) & (v == 0)).double()
    return W, b, c, v, target


def _autograd_scores(v, W, b, c):
    """(B, I) -dF_i(v) through softplus differences, differentiable."""
    x = v @ W + c
    return b + (F.softplus(x[:, None, :] + W[None]) - F.softplus(x)[:, None, :]).sum(2)


@pytest.mark.parametrize("scale", [0.3, 12.0])  # 12: the softplus-difference path
def test_conditional_gradient_matches_autograd(scale):
    W, b, c, v, target = _params(9, 4, scale, seed=1)
    leaves = [t.clone().requires_grad_() for t in (W, b, c)]
    logp = torch.log_softmax(_autograd_scores(v, *leaves).masked_fill(v > 0, -torch.inf), 1)
    ref = -torch.where(target > 0, logp, torch.zeros_like(logp)).sum() / v.shape[0]
    ref.backward()
    loss, grads = conditional_gradient(v, target, W, b, c, max_block=8)  # several item chunks
    assert loss == pytest.approx(ref.item(), rel=1e-10)
    for name, leaf in zip("Wbc", leaves, strict=True):
        torch.testing.assert_close(grads[name], leaf.grad, rtol=1e-7, atol=1e-9)


def test_sampled_gradient_matches_autograd_of_the_sampled_loss():
    W, b, c, v, target = _params(20, 4, 0.7, seed=2)
    neg = torch.tensor([0, 3, 3, 7, 11, 19, 5])  # with a repeat, as sampling with replacement
    log_q = torch.log(torch.linspace(0.02, 0.1, len(neg), dtype=torch.float64))
    leaves = [t.clone().requires_grad_() for t in (W, b, c)]
    s = _autograd_scores(v, *leaves)
    s_neg = s[:, neg] - log_q - np.log(len(neg))
    s_neg = s_neg.masked_fill((v[:, neg] > 0) | (target[:, neg] > 0), -torch.inf)
    log_z = torch.logsumexp(torch.cat([s.masked_fill(target == 0, -torch.inf), s_neg], 1), 1)
    ref = -(torch.where(target > 0, s, 0.0).sum() - (target.sum(1) * log_z).sum()) / v.shape[0]
    ref.backward()
    loss, grads = sampled_conditional_gradient(v, target, W, b, c, neg, log_q, max_block=8)
    assert loss == pytest.approx(ref.item(), rel=1e-9)
    for name, leaf in zip("Wbc", leaves, strict=True):
        torch.testing.assert_close(grads[name], leaf.grad, rtol=1e-7, atol=1e-9)


def test_sampled_loss_with_the_whole_catalogue_equals_the_exact_one():
    W, b, c, v, target = _params(12, 3, 0.5, seed=3)
    n = W.shape[0]  # every item once, q = 1/I: K q = 1, no correction
    neg, log_q = torch.arange(n), torch.full((n,), -np.log(n), dtype=torch.float64)
    exact, g_exact = conditional_gradient(v, target, W, b, c)
    approx, g_approx = sampled_conditional_gradient(v, target, W, b, c, neg, log_q)
    assert approx == pytest.approx(exact, rel=1e-9)
    for name in "Wbc":
        torch.testing.assert_close(g_approx[name], g_exact[name], rtol=1e-7, atol=1e-9)


def test_conditional_equals_brute_force_enumeration():
    """softmax(-dF)_i = p(v + e_i) / sum_{j off in v} p(v + e_j), p(v) by summing out every
    hidden state (no free-energy formula used)."""
    n_v, n_h = 6, 4
    W, b, c, v, _ = _params(n_v, n_h, 2.0, seed=4)
    hs = all_states(n_h)  # (2^H, H)

    def log_p_unnorm(x):  # log sum_h exp(-E(x, h)), E = -b.x - c.h - x W h
        return torch.logsumexp(x @ b + hs @ c + hs @ (W.T @ x), 0)

    got = conditional_log_prob(v, W, b, c).exp()
    for r in range(v.shape[0]):
        off = [i for i in range(n_v) if v[r, i] == 0]
        logs = torch.stack([log_p_unnorm(v[r] + F.one_hot(torch.tensor(i), n_v)) for i in off])
        want = torch.softmax(logs, 0)
        torch.testing.assert_close(got[r, off], want, rtol=1e-9, atol=1e-12)
        assert float(got[r, v[r] > 0].sum()) == 0.0  # items in the history are not candidates


def _planted_split(seed=0):
    log = planted_communities(n_users=300, n_items=120, n_interactions=9000, seed=seed)
    x = sp.csr_matrix(
        (np.ones(log.height, np.float32), (log["user_id"].to_numpy(), log["item_id"].to_numpy())),
        shape=(300, 120),
    )
    x.data[:] = 1.0
    coo = x.tocoo()
    held = np.random.default_rng(seed).random(coo.nnz) < 0.2
    part = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=x.shape)  # noqa: E731
    return part(~held), part(held)


def test_conditional_beats_cd_and_popularity_on_planted_communities():
    train, test = _planted_split()
    base = dict(n_hidden=16, epochs=15, patience=0, progress=False, device="cpu", seed=0)
    cond = RBM(**base, objective="conditional", batch_size=16, conditional_lr=0.05).fit(train)
    cd = RBM(**base, objective="cd", batch_size=16, learning_rate=0.05).fit(train)
    score = {
        name: evaluate_ranking(m, train, test, (10,))["ndcg@10"]
        for name, m in {"cond": cond, "cd": cd, "pop": Popularity().fit(train)}.items()
    }
    assert score["cond"] > score["cd"] and score["cond"] > score["pop"] + 0.02, score
    assert len(cond.fit_info["history"]) == 15  # no validation: exactly `epochs` epochs


def test_hybrid_and_sampled_variants_train_past_popularity():
    train, test = _planted_split()
    pop = evaluate_ranking(Popularity().fit(train), train, test, (10,))["ndcg@10"]
    base = dict(n_hidden=8, epochs=8, batch_size=16, conditional_lr=0.05, patience=0)
    for over in (
        {"objective": "hybrid", "cd_weight": 0.5},
        {"objective": "conditional", "n_negatives": 30},
    ):
        m = RBM(**base, **over, progress=False, device="cpu").fit(train)
        assert len(m.fit_info["history"]) == 8
        score = evaluate_ranking(m, train, test, (10,))["ndcg@10"]
        assert score > pop + 0.05, (over, score, pop)


def test_conditional_checkpoint_resume_equals_uninterrupted(tmp_path):
    train, valid = _planted_split(seed=2)
    kw = dict(objective="conditional", n_hidden=8, epochs=4, batch_size=64, patience=0)
    kw.update(progress=False, device="cpu")
    ref = RBM(**kw).fit(train, valid)

    resumed = resumed_after_stop(lambda **c: RBM(**kw, **c), train, valid, tmp_path / "ckpt", 1)
    for name in ("W", "b", "c"):
        torch.testing.assert_close(getattr(resumed, name), getattr(ref, name))


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"holdout_fraction": 1.0}, r"RBMConfig.holdout_fraction: expected in \(0, 1\), got 1.0"),
        ({"conditional_lr": 0.0}, r"RBMConfig.conditional_lr: expected > 0"),
        ({"n_negatives": -1}, r"RBMConfig.n_negatives: expected >= 0"),
        ({"objective": "ml"}, r"objective: expected one of \['cd', 'conditional', 'hybrid'\]"),
    ],
)
def test_bad_conditional_settings_are_refused(over, match):
    with pytest.raises(ConfigError, match=match):
        RBM(**over)


def test_a_model_saved_before_the_objectives_loads_and_scores_the_same(tmp_path):
    """model.json written before these fields existed: they take their defaults."""
    import json

    train, _ = _planted_split(seed=3)
    m = RBM(n_hidden=4, epochs=1, progress=False, device="cpu").fit(train)
    m.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    new = ("objective", "holdout_fraction", "conditional_lr", "cd_weight", "n_negatives")
    for key in new:
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    loaded = RBM.load(tmp_path / "m", device="cpu")
    assert loaded.config.objective == "cd"
    np.testing.assert_allclose(loaded.energies(train), m.energies(train), rtol=1e-6)
