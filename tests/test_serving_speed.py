"""Serving fast paths (issue 13): bounds, certified candidates, the ranker's approximate blend,
and chunk sizing. Each fast path is checked against the exact full-catalogue ranking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.models._candidates import BLOCK_BYTES, block_rows, bounded_topk, candidate_count
from recsys_ebm.models._rbm_math import (
    free_energy,
    free_energy_delta,
    free_energy_delta_approx,
    free_energy_delta_at,
    free_energy_delta_lower,
)
from recsys_ebm.models.ease import EASE
from recsys_ebm.models.implicit_adapter import ALS
from recsys_ebm.models.rbm import RBM
from recsys_ebm.ranking import Ranker


def _rbm(n_items: int = 60, n_hidden: int = 12, scale: float = 0.5, seed: int = 0) -> RBM:
    """A fitted-looking RBM with random parameters (large enough W that bounds are not tight)."""
    g = torch.Generator().manual_seed(seed)
    m = RBM(n_hidden=n_hidden, device="cpu", progress=False)
    m.n_items = n_items
    m.W = torch.randn(n_items, n_hidden, generator=g) * scale
    m.b = torch.randn(n_items, generator=g)
    m.c = torch.randn(n_hidden, generator=g) * 0.5
    return m


def _histories(n_users: int, n_items: int, density: float = 0.15, seed: int = 1) -> sp.csr_matrix:
    m = sp.random(n_users, n_items, density=density, random_state=seed, format="csr")
    m.data[:] = 1.0
    return m.astype(np.float32)


def _exact_top(model: RBM, ui: sp.csr_matrix, n: int, exclude_seen: bool = True) -> np.ndarray:
    e = model.energies(ui)
    if exclude_seen:
        e[ui.nonzero()] = np.inf
    return np.argsort(e, axis=1, kind="stable")[:, :n], np.sort(e, axis=1)[:, :n]


# ---------------------------------------------------------------------------- RBM maths
def test_lower_bound_and_approximation_bracket_the_exact_free_energy_difference():
    m = _rbm()
    v = torch.as_tensor(_histories(30, 60).toarray())
    x = v @ m.W + m.c
    exact = free_energy_delta(v, m.W, m.b, m.c)  # (B, I)
    lower = free_energy_delta_lower(x, m.W, m.b)
    assert bool((lower <= exact + 1e-5).all())
    assert float((exact - lower).max()) > 0.01  # a real bound here, not an equality
    # brute force on one row: dF_i = F(v with i on) - F(v with i off)
    on, off = v[0].clone().repeat(60, 1), v[0].clone().repeat(60, 1)
    on[torch.arange(60), torch.arange(60)] = 1.0
    off[torch.arange(60), torch.arange(60)] = 0.0
    brute = free_energy(on, m.W, m.b, m.c) - free_energy(off, m.W, m.b, m.c)
    torch.testing.assert_close(exact[0], brute, atol=1e-4, rtol=1e-4)
    # second-order approximation (items off in v): error within sum |W|^3 / 62
    approx = free_energy_delta_approx(x, m.W, m.b)
    off_items = v == 0
    err = (approx - exact).abs()[off_items]
    bound = (m.W.abs() ** 3).sum(dim=1).expand_as(exact)[off_items] / 62
    assert bool((err <= bound + 1e-5).all())


def test_exact_at_per_user_items_matches_the_full_computation():
    m = _rbm()
    v = torch.as_tensor(_histories(25, 60).toarray())
    x = v @ m.W + m.c
    full = free_energy_delta(v, m.W, m.b, m.c)
    g = torch.Generator().manual_seed(3)
    items = torch.stack([torch.randperm(60, generator=g)[:17] for _ in range(25)])  # (B, C)
    at = free_energy_delta_at(v, x, m.W, m.b, items, max_block=500)  # several row blocks
    torch.testing.assert_close(at, full.gather(1, items), atol=1e-5, rtol=1e-5)
    rows = torch.tensor([4, 0, 9])
    at_rows = free_energy_delta_at(v, x, m.W, m.b, items[rows], rows)
    torch.testing.assert_close(at_rows, full[rows].gather(1, items[rows]), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- certified top-k
@pytest.mark.parametrize("n_candidates", [None, 5, 60])
def test_bounded_topk_equals_the_exact_topk_for_any_candidate_count(n_candidates):
    g = torch.Generator().manual_seed(0)
    exact = torch.randn(40, 60, generator=g)
    lower = exact - torch.rand(40, 60, generator=g) * 2.0  # loose: many rows need a wider C
    lower[:, :3] = float("inf")  # masked items are never served
    calls = []

    def exact_at(rows, items):
        calls.append(items.shape[1])
        return exact[rows[:, None], items]

    en, items = bounded_topk(lower, exact_at, 10, n_candidates)
    want = exact.clone()
    want[:, :3] = float("inf")
    top = torch.topk(want, 10, dim=1, largest=False, sorted=True)
    torch.testing.assert_close(en, top.values)
    assert torch.equal(items, top.indices)
    if n_candidates == 5:
        assert calls[0] == 10 and len(calls) > 1  # C starts at k and widens for uncertified rows
    if n_candidates == 60:
        assert calls == [60]  # the whole catalogue at once: exact by construction


def test_candidate_count_defaults_and_clips():
    assert candidate_count(100, 5000) == 200
    assert candidate_count(10, 5000) == 42
    assert candidate_count(10, 30) == 30
    assert candidate_count(10, 5000, 3) == 10  # never fewer than k


# ---------------------------------------------------------------------------- RBM serving
@pytest.mark.parametrize("serve", [None, 1, 60])
def test_rbm_recommend_fast_path_equals_the_exact_ranking(serve):
    m = _rbm()
    m.serve_candidates = serve  # 60 = the whole catalogue
    ui = _histories(40, 60)
    items, en = m.recommend(ui, n=8)
    want_items, want_en = _exact_top(m, ui, 8)
    np.testing.assert_allclose(en, want_en, atol=1e-5)
    assert (items == want_items).mean() > 0.99  # ties at float precision aside
    assert not np.isin(items[0], ui[0].indices).any()


def test_rbm_fast_path_with_exclude_and_seen_items_kept():
    m = _rbm()
    ui = _histories(20, 60)
    items, en = m.recommend(ui, n=5, exclude=np.array([0, 1, 2]), exclude_seen=False)
    e = m.energies(ui)
    e[:, :3] = np.inf
    np.testing.assert_allclose(en, np.sort(e, axis=1)[:, :5], atol=1e-5)
    assert not np.isin(items, [0, 1, 2]).any()


def test_rbm_candidates_and_energies_at():
    m = _rbm()
    ui = _histories(10, 60)
    cand = m.candidates(ui, 15)
    assert cand.shape == (10, 15)
    for r in range(10):
        assert not np.isin(cand[r], ui[r].indices).any()
    at = m.energies_at(ui, cand)
    np.testing.assert_allclose(at, np.take_along_axis(m.energies(ui), cand, 1), atol=1e-5)
    with pytest.raises(ValueError, match="items"):
        m.energies_at(ui, cand[:3])
    with pytest.raises(ValueError, match="n_candidates"):
        m.candidates(ui, 0)


# ---------------------------------------------------------------------------- ranker
@pytest.fixture(scope="module")
def small_ranker_parts():
    log = planted_communities(n_users=150, n_items=80, n_interactions=3000, seed=0)
    rows = log["user_id"].to_numpy()
    cols = log["item_id"].to_numpy()
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(150, 80))
    train.data[:] = 1.0
    rbm = RBM(n_hidden=16, epochs=3, patience=0, progress=False, device="cpu").fit(train)
    ease = EASE(l2=10.0, l2_grid=(), progress=False, device="cpu").fit(train)
    als = ALS(factors=8, epochs=3, num_threads=1).fit(train)
    return train, [ease, als, rbm]


def test_ranker_fast_path_with_every_candidate_equals_the_exact_path(small_ranker_parts):
    train, comps = small_ranker_parts
    fast = Ranker.from_fitted(comps, train, device="cpu")
    exact = Ranker.from_fitted(comps, train, device="cpu", fast_serving=False)
    ui = train[:60]
    fast.serve_candidates = train.shape[1]  # C = the whole catalogue
    f_items, f_en = fast.recommend(ui, n=10)
    e_items, e_en = exact.recommend(ui, n=10)
    # the RBM's standardisation statistics come from its approximation: equal to ~1e-4 here
    np.testing.assert_allclose(f_en, e_en, atol=2e-3)
    assert (f_items == e_items).mean() > 0.98
    fast.serve_candidates = None  # the default C = 42 for n = 10: the same lists
    d_items, _ = fast.recommend(ui, n=10)
    assert (d_items == f_items).mean() > 0.98


def test_ranker_fast_path_keeps_filters_and_fallback(small_ranker_parts):
    train, comps = small_ranker_parts
    r = Ranker.from_fitted(comps, train, device="cpu")
    ui = sp.vstack([train[:5], sp.csr_matrix((1, train.shape[1]), dtype=np.float32)]).tocsr()
    items, _ = r.recommend(ui, n=5, exclude=np.array([0, 1]))
    assert not np.isin(items, [0, 1]).any()
    for row in range(5):
        assert not np.isin(items[row], ui[row].indices).any()
    pop = np.argsort(r.pop_energy.numpy(), kind="stable")
    assert set(items[5]) == set([i for i in pop if i not in (0, 1)][:5])


# ---------------------------------------------------------------------------- chunk sizing
def test_block_rows_respect_the_memory_budget():
    for n_cols, arrays, budget in [(20_000, 12, BLOCK_BYTES), (5_000, 1, 2**20), (7, 3, 10**9)]:
        rows = block_rows(n_cols, arrays, budget)
        assert 1 <= rows <= 4096
        assert (
            rows == 4096 or rows * n_cols * arrays * 4 <= budget < (rows + 1) * n_cols * arrays * 4
        )
    assert block_rows(10**9, 12, 2**20) == 1  # never 0 rows
    with pytest.raises(ValueError, match="budget_bytes"):
        block_rows(10, 1, 0)


def test_ranker_block_rows_scale_with_the_components(small_ranker_parts):
    train, comps = small_ranker_parts
    r = Ranker.from_fitted(comps, train, device="cpu")
    rows = r._block_rows(20_000, None)
    assert rows * 20_000 * 4 * (2 * len(comps) + 4) <= BLOCK_BYTES  # 20k-item catalogue
    assert r._block_rows(20_000, 7) == 7  # an explicit batch size wins


def test_rbm_fast_path_reads_duplicate_entries_as_one_visible_unit():
    m = _rbm()
    data, indices = np.ones(5, np.float32), np.array([3, 3, 7, 5, 9])
    ui = sp.csr_matrix((data, indices, np.array([0, 3, 5])), shape=(2, 60))  # (0, 3) twice
    assert ui.nnz == 5
    clean = sp.csr_matrix(
        ([1.0] * 4, ([0, 0, 1, 1], [3, 7, 5, 9])), shape=(2, 60), dtype=np.float32
    )
    items, en = m.recommend(ui, n=6)
    want_items, want_en = _exact_top(m, clean, 6)
    np.testing.assert_allclose(en, want_en, atol=1e-5)
    assert (items == want_items).all()
