"""The calibrated ranker's serving cascade (ranking/_cascade.py, issue 13): energy factors of
every component, EASE's exact energies at candidates, and the cascade's lists against the exact
full-catalogue path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models.capabilities import FactorScorer
from recsys_ebm.models.ease import EASE, _truncated_svd
from recsys_ebm.models.implicit_adapter import ALS, BPR
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.models.rbm import RBM
from recsys_ebm.models.retriever import Retriever
from recsys_ebm.ranking import Blender, Ranker, RankerConfig
from recsys_ebm.ranking._cascade import cascade_candidates, supports_cascade


def _split(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    log = planted_communities(n_users=160, n_items=70, n_interactions=3200, seed=seed)
    rows, cols = log["user_id"].to_numpy(), log["item_id"].to_numpy()
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(160, 70))
    m.data[:] = 1.0
    coo = m.tocoo()
    held = np.random.default_rng(seed).random(coo.nnz) < 0.2
    parts = [
        sp.csr_matrix((coo.data[k], (coo.row[k], coo.col[k])), shape=m.shape) for k in (~held, held)
    ]
    return parts[0], parts[1]


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    train, valid = _split()
    comps = [
        EASE(l2=10.0, l2_grid=(), progress=False, device="cpu").fit(train),
        ALS(factors=8, epochs=3, num_threads=1).fit(train),
        RBM(n_hidden=16, epochs=3, patience=0, progress=False, device="cpu").fit(train),
        Retriever(embedding_size=8, n_hidden=8, epochs=2, patience=0, progress=False,
                  device="cpu").fit(train),
    ]  # fmt: skip
    return train, valid, comps


def _ranker(train, valid, comps, **kw) -> Ranker:
    r = Ranker.from_fitted(comps, train, valid=valid, device="cpu", **kw)
    assert "betas" in r.blend_state  # the calibrated blend: the cascade serves it
    return r


def test_every_component_gives_factors_of_its_energies(fitted):
    train, _, comps = fitted
    ui, users = train[:40], np.arange(40)
    bpr = BPR(factors=6, epochs=3, num_threads=1).fit(train)
    pop = Popularity().fit(train)
    for m in [comps[1], comps[3], bpr, pop]:  # exact factors
        f = m.energy_factors(ui, users=users)
        assert isinstance(m, FactorScorer) and f.exact
        e = f.user @ f.item.T + (0 if f.bias is None else f.bias)
        np.testing.assert_allclose(e.numpy(), m.energies(ui, users=users), atol=1e-4)
    rbm = comps[2]  # the RBM: its second-order expansion, exactly
    f = rbm.energy_factors(ui)
    assert not f.exact and not f.rescore
    np.testing.assert_allclose((f.user @ f.item.T + f.bias).numpy(), rbm.approx_energies(ui),
                               atol=1e-5)  # fmt: skip
    ease = comps[0]  # EASE: a low-rank proxy, re-scored exactly at the candidates
    f = ease.energy_factors(ui)
    assert not f.exact and f.rescore
    err = np.abs((f.user @ f.item.T).numpy() - ease.energies(ui)).max()
    assert 0 < err < np.abs(ease.energies(ui)).max()


def test_truncated_svd_is_exact_at_full_rank_and_seeded():
    a = torch.randn(30, 30, generator=torch.Generator().manual_seed(1))
    u, s, v = _truncated_svd(a, 30)
    torch.testing.assert_close(u * s @ v.T, a, atol=1e-4, rtol=1e-4)
    u5, s5, _ = _truncated_svd(a, 5)
    torch.testing.assert_close(s5, torch.linalg.svdvals(a)[:5], atol=0.3, rtol=0.05)
    torch.testing.assert_close(_truncated_svd(a, 5)[1], s5)  # the same draw every call


@pytest.mark.parametrize("layout", ["column-major", "row-major"])
def test_ease_energies_at_equal_its_energies(fitted, layout):
    train, _, comps = fitted
    ease = copy.copy(comps[0])
    ease.B = ease.B.contiguous() if layout == "row-major" else ease.B.T.contiguous().T
    assert ease.B.is_contiguous() == (layout == "row-major")
    ui = train[:25]
    cand = np.random.default_rng(0).integers(0, train.shape[1], (25, 9))
    want = np.take_along_axis(ease.energies(ui), cand, 1)
    np.testing.assert_allclose(ease.energies_at(ui, cand), want, atol=1e-5)
    weighted = ui.copy()
    weighted.data *= 3.0  # stored values other than 1 count as 1, as in energies
    np.testing.assert_allclose(ease.energies_at(weighted, cand), want, atol=1e-5)
    with pytest.raises(ValueError, match=r"^items: expected \(25, C\)"):
        ease.energies_at(ui, cand[:3])


def test_cascade_with_every_candidate_and_exact_rescoring_equals_the_exact_path(fitted):
    train, valid, comps = fitted
    r = _ranker(train, valid, comps, segments=2, weight_fit="search")  # per-segment weights
    assert supports_cascade(r.components, r._blender(r.weights))
    exact = copy.copy(r)
    exact.config = r.config.replace(fast_serving=False)
    casc = copy.copy(r)
    casc.config = r.config.replace(rescore="all")
    casc.serve_candidates = train.shape[1]  # C = the whole catalogue
    ui = sp.vstack([train[:50], sp.csr_matrix((1, train.shape[1]), dtype=np.float32)]).tocsr()
    users = np.r_[np.arange(50), -1]
    e_items, e_en = exact.recommend(ui, n=10, users=users, exclude=np.array([3]))
    c_items, c_en = casc.recommend(ui, n=10, users=users, exclude=np.array([3]))
    np.testing.assert_array_equal(c_items, e_items)
    # the same energies up to one constant per user (c(u), the ranking-neutral centring)
    diff = c_en - e_en
    np.testing.assert_allclose(diff - diff[:, :1], 0.0, atol=1e-4)
    np.testing.assert_allclose(c_en[-1], e_en[-1], atol=1e-6)  # popularity fallback, as is


def test_default_cascade_keeps_filters_and_is_close_to_the_exact_path(fitted):
    train, valid, comps = fitted
    r = _ranker(train, valid, comps)
    exact = copy.copy(r)
    exact.config = r.config.replace(fast_serving=False)
    ui = train[:80]
    items, _ = r.recommend(ui, n=10, exclude=np.array([0, 1]))
    want, _ = exact.recommend(ui, n=10, exclude=np.array([0, 1]))
    assert not np.isin(items, [0, 1]).any()
    for row in range(80):
        assert not np.isin(items[row], ui[row].indices).any()
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(items, want, strict=True)])
    assert overlap > 0.95  # only the RBM keeps its bounded proxy; EASE is exact


def test_zero_weight_components_are_skipped_and_change_nothing(fitted):
    train, valid, comps = fitted
    r = _ranker(train, valid, comps)
    r.weights = torch.tensor([0.5, 0.0, 0.0, 0.5])  # ALS and the RBM out of the blend
    exact = copy.copy(r)
    exact.config = r.config.replace(fast_serving=False)
    r.serve_candidates = train.shape[1]
    a, _ = r.recommend(train[:40], n=10)
    b, _ = exact.recommend(train[:40], n=10)
    np.testing.assert_array_equal(a, b)  # EASE re-scored exactly, the retriever exact


def test_cascade_needs_a_calibrated_blend_and_bad_options_are_named():
    b = Blender([0.5, 0.5], norm="zscore")
    assert not supports_cascade([], b)
    with pytest.raises(ValueError, match="^norm: user coefficients need"):
        b.user_coefficients(np.array([3, 4]))
    with pytest.raises(ConfigError, match=r"RankerConfig.rescore: expected one of \['cheap'"):
        RankerConfig(rescore="some")
    assert cascade_candidates(10, 1000) == 30 and cascade_candidates(100, 1000) == 125
    assert cascade_candidates(10, 25) == 25 and cascade_candidates(10, 1000, 5) == 10


def test_integer_topk_of_shifted_energies_equals_the_float_topk():
    from recsys_ebm.models._candidates import smallest as _smallest

    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 50, generator=g) * 100 - 40  # negatives and positives
    s[0, :7] = float("inf")  # masked items
    s[1] = float("inf")  # every item masked: no shift, still C entries
    s[2, :5] = 0.0
    s[2, 5:8] = -0.0
    want = torch.topk(s, 9, dim=1, largest=False).values
    val, idx = _smallest(s.clone(), 9)
    torch.testing.assert_close(torch.sort(val, dim=1).values, want, atol=1e-4, rtol=0)
    torch.testing.assert_close(s.gather(1, idx), val, atol=1e-4, rtol=0)


def test_cascade_blocks_hold_four_arrays_and_the_exact_path_keeps_its_budget(fitted):
    from recsys_ebm.models._candidates import block_rows

    train, valid, comps = fitted
    r = _ranker(train, valid, comps)
    assert r._recommend_rows(20_000, None) == block_rows(20_000, 4)
    assert r._recommend_rows(20_000, 7) == 7  # an explicit batch size wins
    exact = copy.copy(r)
    exact.config = r.config.replace(fast_serving=False)
    assert exact._recommend_rows(20_000, None) == block_rows(20_000, 2 * len(comps) + 4)
