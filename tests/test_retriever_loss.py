"""The retriever's InfoNCE is the cross-entropy of its conditional EBM; masking; temperature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.models._retriever_loss import (
    NegativeSampler,
    accidental_hit_mask,
    info_nce,
    log_expected_counts,
)
from recsys_ebm.models.retriever import Retriever


def ebm_cross_entropy(energies, labels, mask=None, log_q=None):
    """Independent float64 reference: -mean_b log p(label_b | u_b) over b's kept candidates,
    p(i | u) = exp(-E(u, i)) / Q(i) / sum_j exp(-E(u, j)) / Q(j)."""
    e = np.asarray(energies, dtype=np.float64)
    q = np.zeros(e.shape[1]) if log_q is None else np.asarray(log_q, dtype=np.float64)
    out = []
    for b in range(e.shape[0]):
        kept = [c for c in range(e.shape[1]) if mask is None or not mask[b, c] or c == labels[b]]
        weights = {c: math.exp(-e[b, c] - q[c]) for c in kept}
        out.append(-math.log(weights[labels[b]] / sum(weights.values())))
    return float(np.mean(out))


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    energies = rng.normal(0, 3, size=(6, 9))
    labels = np.array([0, 1, 2, 3, 4, 5])
    mask = rng.random((6, 9)) < 0.3
    log_q = np.log(rng.uniform(0.5, 40, size=9))
    return energies, labels, mask, log_q


def test_infonce_equals_ebm_cross_entropy(batch):
    energies, labels, mask, log_q = batch
    e, y = torch.tensor(energies, dtype=torch.float32), torch.tensor(labels)
    for m in (None, mask):
        for q in (None, log_q):
            ours = info_nce(
                e,
                y,
                mask=None if m is None else torch.tensor(m),
                log_q=None if q is None else torch.tensor(q, dtype=torch.float32),
            )
            assert float(ours) == pytest.approx(ebm_cross_entropy(energies, labels, m, q), rel=1e-5)


def test_logq_correction_changes_the_loss_and_constant_q_does_not(batch):
    energies, labels, _, log_q = batch
    e, y = torch.tensor(energies, dtype=torch.float32), torch.tensor(labels)
    plain = float(info_nce(e, y))
    assert float(info_nce(e, y, log_q=torch.tensor(log_q))) != pytest.approx(plain, rel=1e-3)
    # a constant log Q (a uniform sampler) cancels in the softmax
    const = torch.full((e.shape[1],), 2.5)
    assert float(info_nce(e, y, log_q=const)) == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("logq", [False, True])
def test_infonce_on_the_models_own_energies(logq):
    """The loss on E(u, i) from a fitted model is -log p(i | u) of its conditional EBM, with the
    logQ correction the training loop computes (in-batch counts + sampled negatives) too."""
    board = checkerboard(n_groups=4, users_per_group=5, items_per_group=6, seed=1)
    model = Retriever(epochs=3, batch_size=16, device="cpu", progress=False, embedding_size=8)
    model.fit(board.train)
    sampled = np.array([0, 7, 7, 13])  # sampled negatives (one repeated) after the positives
    cands = np.concatenate([board.expected_top1, sampled])  # (U + 4,)
    energies = model.energies(board.train, items=cands)  # (U, U + 4)
    labels = np.arange(board.train.shape[0])
    hits = accidental_hit_mask(board.train + board.test, labels, cands, labels)
    log_q = None
    if logq:
        counts = np.asarray(board.train.getnnz(axis=0))
        freq = torch.tensor(counts / counts.sum(), dtype=torch.float64)
        probs = NegativeSampler(counts, "popularity").probs
        log_q = log_expected_counts(torch.tensor(cands), len(labels), len(sampled), freq, probs)
        assert log_q.std() > 0  # a non-trivial correction
    ours = info_nce(
        torch.tensor(energies), torch.tensor(labels), mask=torch.tensor(hits), log_q=log_q
    )
    ref = ebm_cross_entropy(energies, labels, hits, None if log_q is None else log_q.numpy())
    assert float(ours) == pytest.approx(ref, rel=1e-5)


def test_accidental_hit_mask_is_exact():
    # user 0 likes {0, 1, 2}, user 1 likes {1, 3}, user 2 likes {4}
    pos = sp.csr_matrix(
        (np.ones(6, np.float32), ([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 3, 4])), shape=(3, 5)
    )
    users = np.array([0, 1, 2, 0])
    cands = np.array([0, 1, 4, 2, 3, 2])  # batch positives, then sampled negatives 3 and 2
    labels = np.array([0, 1, 2, 3])
    got = accidental_hit_mask(pos, users, cands, labels)
    want = np.array(
        [
            [0, 1, 0, 1, 0, 1],  # user 0: items 1 and 2 (twice) are their own positives
            [0, 0, 0, 0, 1, 0],  # user 1: the sampled item 3 is theirs; item 1 is the label
            [0, 0, 0, 0, 0, 0],  # user 2: nothing but the label
            [1, 1, 0, 0, 0, 1],  # user 0 again (label item 2): items 0, 1 and the sampled 2
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(got, want)


def test_masking_removes_exactly_the_duplicates():
    """Masked InfoNCE = plain softmax CE over each row's candidates minus its accidental hits."""
    rng = np.random.default_rng(1)
    pos = sp.random(8, 12, density=0.4, format="csr", random_state=rng, dtype=np.float32)
    pos.data[:] = 1
    users = np.arange(8)
    labels = np.arange(8)
    cands = np.array([rng.choice(pos[u].indices) for u in users])  # each row's positive
    cands = np.concatenate([cands, rng.integers(0, 12, 4)])  # + 4 sampled negatives
    mask = accidental_hit_mask(pos, users, cands, labels)
    energies = rng.normal(size=(8, len(cands)))
    got = float(info_nce(torch.tensor(energies), torch.tensor(labels), mask=torch.tensor(mask)))
    per_row = []
    for b in range(8):
        keep = [c for c in range(len(cands)) if cands[c] not in set(pos[b].indices) or c == b]
        row = torch.tensor(energies[b, keep])
        target = torch.tensor([keep.index(b)])
        per_row.append(float(torch.nn.functional.cross_entropy(-row[None], target)))
        assert mask[b].sum() == len(cands) - len(keep)  # exactly the non-label hits
    assert got == pytest.approx(np.mean(per_row), rel=1e-6)


def test_a_positive_repeated_in_the_batch_is_counted_once():
    """Two anchors with the same positive item: each row's softmax holds that item once (its own
    label column), so the loss equals the loss over the batch with the duplicate column dropped."""
    pos = sp.csr_matrix((np.ones(5, np.float32), ([0, 0, 1, 1, 2], [5, 6, 5, 7, 8])), shape=(3, 10))
    users = np.array([0, 1, 2])
    cands = np.array([5, 5, 8, 1])  # rows 0 and 1 share positive item 5; 1 = sampled negative
    labels = np.array([0, 1, 2])
    mask = accidental_hit_mask(pos, users, cands, labels)
    np.testing.assert_array_equal(mask, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    rng = np.random.default_rng(3)
    energies = rng.normal(size=(3, 4))
    got = float(info_nce(torch.tensor(energies), torch.tensor(labels), mask=torch.tensor(mask)))
    ref = ebm_cross_entropy(energies, labels, mask)
    assert got == pytest.approx(ref, rel=1e-6)
    # without the mask item 5 enters rows 0 and 1's denominators twice: a strictly larger loss
    unmasked = float(info_nce(torch.tensor(energies), torch.tensor(labels)))
    assert unmasked > got + 1e-3


def test_log_expected_counts_and_sampler():
    counts = np.array([0, 1, 3, 6])
    freq = torch.tensor(counts / counts.sum(), dtype=torch.float64)
    pop = NegativeSampler(counts, "popularity", alpha=1.0)
    np.testing.assert_allclose(pop.probs.numpy(), [0, 0.1, 0.3, 0.6])
    uni = NegativeSampler(counts, "uniform")
    np.testing.assert_allclose(uni.probs.numpy(), [0, 1 / 3, 1 / 3, 1 / 3])
    items = torch.tensor([1, 2, 3])
    got = log_expected_counts(items, 10, 5, freq, pop.probs)
    np.testing.assert_allclose(
        got.numpy(), np.log(10 * counts[1:] / 10 + 5 * pop.probs[1:].numpy())
    )
    g = torch.Generator().manual_seed(0)
    draws = pop.sample(20_000, g).numpy()
    assert (draws != 0).all()  # never an item without training interactions
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 20_000, pop.probs, atol=0.01)
    with pytest.raises(ValueError, match="kind"):
        NegativeSampler(counts, "hard")


@pytest.fixture(scope="module")
def fitted():
    board = checkerboard(seed=0)
    model = Retriever(  # the temperature laws below are those of sim / tau: no item log-prior
        epochs=10, batch_size=32, device="cpu", progress=False, embedding_size=16, n_hidden=32,
        item_bias=False,
    )
    return model.fit(board.train), board


def _probs_at(model, hist, tau):
    model.net.log_tau.fill_(math.log(tau))
    e = torch.tensor(model.energies(hist), dtype=torch.float64)  # (U, I)
    return torch.softmax(-e, dim=1).numpy()  # p(i | u) ∝ exp(-E)


def test_lower_temperature_sharpens_p_i_given_u(fitted):
    model, board = fitted
    hist = board.train[:20]
    taus = [1.0, 0.5, 0.2, 0.1, 0.05, 0.02]
    probs = [_probs_at(model, hist, t) for t in taus]
    entropy = np.array([-(p * np.log(p)).sum(axis=1) for p in probs])  # (T, U)
    # dH/d(1/tau) = -Var_p(sim)/tau^2 < 0: entropy falls strictly as tau falls, for every user
    assert (np.diff(entropy, axis=0) < 0).all()
    # ratio law: log p_i - log p_j = (s_i - s_j) / tau, so tau * log-ratio is tau-free
    ref = taus[0] * (np.log(probs[0]) - np.log(probs[0][:, :1]))
    for t, p in zip(taus[1:], probs[1:], strict=True):
        np.testing.assert_allclose(t * (np.log(p) - np.log(p[:, :1])), ref, rtol=1e-3, atol=1e-3)
    # the arg-max is tau-free, and its probability rises towards 1
    top = [p.max(axis=1) for p in probs]
    assert all((a <= b).all() for a, b in zip(top, top[1:], strict=False))
    assert (top[0] < top[2]).all()
    assert (np.argmax(probs[0], 1) == np.argmax(probs[-1], 1)).all()
    model.net.log_tau.fill_(math.log(model.config.temperature))


def test_temperature_is_clamped(fitted):
    model, _ = fitted
    model.net.log_tau.fill_(math.log(1e-5))
    assert model.temperature == pytest.approx(model.config.tau_min)
    model.net.log_tau.fill_(math.log(50.0))
    assert model.temperature == pytest.approx(model.config.tau_max)
    model.net.log_tau.fill_(math.log(model.config.temperature))


def test_learned_temperature_moves_and_stays_clamped():
    board = checkerboard(seed=0)
    m = Retriever(
        epochs=5,
        batch_size=32,
        device="cpu",
        progress=False,
        embedding_size=8,
        learn_temperature=True,
        temperature=0.5,
        tau_min=0.2,
        learning_rate=0.05,
    ).fit(board.train)
    taus = [h["temperature"] for h in m.fit_info["history"]]
    assert taus[-1] != pytest.approx(0.5)
    assert all(0.2 - 1e-6 <= t <= 1.0 + 1e-6 for t in taus)
