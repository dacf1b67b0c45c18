"""Blend calibration (maximum-likelihood temperatures), history-length segments, EBM refit."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models import load_model
from recsys_ebm.ranking import Blender, Ranker
from recsys_ebm.ranking._blend import fit_inverse_temperature, segment_edges, segment_of

FAST = {"ease": {"l2": 10.0, "l2_grid": [], "device": "cpu"}}


def _nll(beta: float, e: np.ndarray, seen: np.ndarray, target: np.ndarray) -> float:
    """Brute force: - sum over users and their target items of log softmax_j(-beta e_uj)."""
    total = 0.0
    for u in range(e.shape[0]):
        free = ~seen[u]
        logits = -beta * e[u, free].astype(np.float64)
        log_z = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
        for i in np.flatnonzero(target[u]):
            total -= -beta * e[u, i] - log_z
    return total


def test_inverse_temperature_is_the_maximum_likelihood_one():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(12, 15)).astype(np.float32)
    seen = rng.random((12, 15)) < 0.2
    # targets drawn from a peaked conditional, so the optimum is an interior beta
    target = np.zeros((12, 15), bool)
    for u in range(12):
        p = np.exp(-2.0 * e[u]) * ~seen[u]
        target[u, rng.choice(15, 2, replace=False, p=p / p.sum())] = True
    beta = fit_inverse_temperature(
        torch.as_tensor(e), torch.as_tensor(~seen), sp.csr_matrix(target.astype(np.float32))
    )
    grid = np.linspace(0.05, 8.0, 800)
    brute = grid[np.argmin([_nll(b, e, seen, target) for b in grid])]
    assert abs(beta - brute) < 0.02
    assert _nll(beta, e, seen, target) <= min(_nll(b, e, seen, target) for b in grid) + 1e-4
    # energies in other units: the temperature absorbs the scale (and a per-user shift)
    shift = rng.normal(size=(12, 1)).astype(np.float32)
    beta10 = fit_inverse_temperature(
        torch.as_tensor(10.0 * e + shift),
        torch.as_tensor(~seen),
        sp.csr_matrix(target.astype(np.float32)),
    )
    assert beta10 == pytest.approx(beta / 10.0, rel=1e-3)


def test_segments_follow_history_length_quantiles():
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    edges = torch.as_tensor(segment_edges(lengths, 2))
    assert edges.tolist() == [5.5]
    assert segment_of(np.array([1, 5, 6, 100]), edges).tolist() == [0, 0, 1, 1]
    assert segment_edges(lengths, 1).size == 0


def _two_experts(n_users=200, n_items=30, seed=0):
    """Short-history users' validation items are what expert A ranks first, long-history
    users' what expert B ranks first: one global weight vector cannot serve both."""
    rng = np.random.default_rng(seed)
    lengths = np.where(np.arange(n_users) < n_users // 2, 2, 8)
    seen = np.zeros((n_users, n_items), bool)
    for u, n in enumerate(lengths):
        seen[u, rng.choice(n_items, n, replace=False)] = True
    a = rng.normal(size=(n_users, n_items)).astype(np.float32)
    b = rng.normal(size=(n_users, n_items)).astype(np.float32)
    target = np.zeros((n_users, n_items), bool)
    for u in range(n_users):
        e = a[u] if lengths[u] == 2 else b[u]
        best = [i for i in np.argsort(e) if not seen[u, i]][:3]
        target[u, best] = True
    return [a, b], sp.csr_matrix(seen.astype(np.float32)), sp.csr_matrix(target.astype(np.float32))


def test_segment_weights_are_learned_and_used_for_the_right_users():
    energies, seen, target = _two_experts()
    one = Blender()
    one.fit(energies, target, seen=seen)
    two = Blender(segments=2, min_segment_users=20)
    two.fit(energies, target, seen=seen)
    assert two.edges is not None and two.edges.tolist() == [5.0]
    sw = two.segment_weights
    assert sw is not None and sw.shape == (2, 2)
    assert sw[0, 0] > 0.9 and sw[1, 1] > 0.9  # short users: expert A; long users: expert B
    assert two.valid_ndcg > one.valid_ndcg + 0.2
    # blending uses each user's segment: a short user ranks by A alone, a long user by B
    e = two.blend(energies, seen=seen)
    unseen = seen.toarray() == 0
    for u, expert in ((0, energies[0]), (150, energies[1])):
        assert (
            np.argsort(np.where(unseen[u], e[u], np.inf))[0]
            == np.argsort(np.where(unseen[u], expert[u], np.inf))[0]
        )
    # combine needs the lengths once there are segments
    z, _, cand = two.standardise(energies, seen=seen)
    with pytest.raises(ValueError, match="lengths: this Blender has segment weights"):
        two.combine(z, cand)
    # too few users per segment: every segment keeps the global weights
    few = Blender(segments=2, min_segment_users=1000)
    few.fit(energies, target, seen=seen)
    torch.testing.assert_close(few.segment_weights, few.weights.expand(2, -1), rtol=0, atol=0)


def test_calibrated_blend_is_a_product_of_tempered_experts():
    energies, seen, target = _two_experts(seed=1)
    bl = Blender(norm="calibrated")
    w = bl.fit(energies, target, seen=seen)
    assert bl.betas is not None and (bl.betas > 0).all()
    # by hand: sum_k w_k beta_k (e_k - mean over each user's unseen items)
    unseen = seen.toarray() == 0
    expected = np.zeros_like(energies[0], dtype=np.float64)
    for wk, bk, ek in zip(w, bl.betas.numpy(), energies, strict=True):
        mean = np.array([row[m].mean() for row, m in zip(ek, unseen, strict=True)])[:, None]
        expected += wk * bk * (ek - mean)
    np.testing.assert_allclose(bl.blend(energies, seen=seen), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="norm: expected one of"):
        Blender(norm="softmax")


# ---------------------------------------------------------------- through the ranker
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    log = planted_communities(n_users=300, n_items=100, n_interactions=9_000, seed=4)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    return prepare_dataset(p, seed=0)


@pytest.fixture(scope="module")
def calibrated(dataset):
    return Ranker(
        components=("popularity", "ease"),
        component_config=FAST,
        blend_norm="calibrated",
        segments=2,
        weight_fit="search",
        device="cpu",
    ).fit_dataset(dataset)


def test_calibration_and_segments_are_fitted_on_valid_only(dataset, calibrated):
    info = calibrated.fit_info
    assert len(info["blend_betas"]) == 2 and len(info["blend_segment_weights"]) == 2
    # another test split (here: test items moved to other items): the same blend
    test = dataset.interactions["test"].with_columns(
        ((pl.col("item_idx") + 17) % dataset.n_items).alias("item_idx")
    )
    other = dataclasses.replace(dataset, interactions={**dataset.interactions, "test": test})
    again = Ranker(**calibrated.config.to_dict()).fit_dataset(other)
    assert again.fit_info["weights"] == info["weights"]
    for k, v in calibrated.blend_state.items():
        torch.testing.assert_close(again.blend_state[k], v, rtol=0, atol=0)


def test_calibrated_segmented_ranker_saves_and_loads(dataset, calibrated, tmp_path):
    loaded = load_model(calibrated.save(tmp_path / "r"))
    assert sorted(loaded.blend_state) == ["betas", "edges", "segment_weights"]
    h = dataset.history("test")
    np.testing.assert_array_equal(loaded.energies(h), calibrated.energies(h))
    with pytest.raises(ConfigError, match="RankerConfig.blend_norm"):
        Ranker(blend_norm="platt")


def test_early_stopped_components_are_refitted_for_their_best_epoch_count(dataset):
    rbm = {"n_hidden": 8, "epochs": 6, "patience": 2, "device": "cpu", "progress": False}
    r = Ranker(
        components=("popularity", "rbm"), component_config={"rbm": rbm}, device="cpu"
    ).fit_dataset(dataset)
    info = r.fit_info
    assert info["refit_on_train_valid"] == ["popularity", "rbm"]
    model = r.components[1]
    epochs = info["refit_epochs"]["rbm"]
    assert 1 <= epochs <= 6 and model.config.epochs == epochs and model.config.patience == 0
    assert model.fit_info["epochs_run"] == epochs  # trained exactly that long, no validation
    # refitted on train + valid: the same model class and config fitted there directly
    fresh = type(model)(model.config).fit(dataset.history("test"))
    h = dataset.history("test")[:20]
    np.testing.assert_allclose(model.energies(h), fresh.energies(h), rtol=1e-5, atol=1e-5)


def test_equal_weights_fit_only_the_calibration():
    """``search=False``: the temperatures are the same maximum-likelihood ones, the weights stay
    equal, and the reported validation NDCG@10 is the equal blend's own."""
    energies, seen, target = _two_experts(seed=2)
    searched = Blender(norm="calibrated")
    searched.fit(energies, target, seen=seen)
    equal = Blender(norm="calibrated", search=False)
    w = equal.fit(energies, target, seen=seen)
    np.testing.assert_allclose(w, [0.5, 0.5])
    torch.testing.assert_close(equal.betas, searched.betas)
    fixed = Blender([0.5, 0.5], norm="calibrated").load_state(equal.state())
    want = equal.blend(energies, seen=seen)
    np.testing.assert_array_equal(fixed.blend(energies, seen=seen), want)
    assert equal.valid_ndcg <= searched.valid_ndcg + 1e-9  # the search starts from equal weights


def test_ranker_with_equal_weights_saves_and_loads(dataset, tmp_path):
    r = Ranker(
        components=("popularity", "ease"), component_config=FAST, weight_fit="equal", device="cpu"
    ).fit_dataset(dataset)
    assert r.fit_info["weights"] == [0.5, 0.5] and len(r.fit_info["blend_betas"]) == 2
    loaded = load_model(r.save(tmp_path / "r"))
    h = dataset.history("test")
    np.testing.assert_array_equal(loaded.energies(h), r.energies(h))
    with pytest.raises(ConfigError, match="RankerConfig.weight_fit"):
        Ranker(weight_fit="grid")
    with pytest.raises(ConfigError, match=r"RankerConfig.segments: expected 1 with weight_fit"):
        Ranker(weight_fit="equal", segments=2)
    with pytest.raises(ValueError, match=r"segments: expected 1 with search=False .*got 3"):
        Blender(norm="calibrated", search=False, segments=3)


def test_simplex_grid_is_every_multiple_of_the_step_on_the_simplex():
    from math import comb

    from recsys_ebm.ranking._blend import grid_size, simplex_grid

    for k, step in ((1, 0.5), (2, 0.25), (3, 0.1), (4, 0.1)):
        g = simplex_grid(k, step)
        n = round(1 / step)
        assert g.shape == (comb(n + k - 1, k - 1), k) == (grid_size(k, step), k)
        np.testing.assert_allclose(g.sum(axis=1), 1.0)
        assert (g >= 0).all() and np.allclose(g * n, np.round(g * n))
        assert len({tuple(r) for r in g}) == len(g)  # no point twice


def _ndcg_each(energies, seen, target, w):
    """Brute force, through the public Blender: per-user NDCG@10 of fixed weights ``w``."""
    from recsys_ebm.evaluation.metrics import ranking_metrics

    e = Blender(w).blend(energies, seen=seen)
    e = np.where(seen.toarray() > 0, np.inf, e)
    top = np.argsort(e, axis=1, kind="stable")[:, :10]
    return ranking_metrics(top, target, (10,))["ndcg@10"]


def test_bagged_weights_are_the_mean_of_each_bootstrap_resamples_best_grid_point():
    """One bag against brute force: the grid point with the best NDCG@10 on the resample
    ``default_rng(seed).multinomial`` draws; ``bags`` bags: the mean of such points."""
    from recsys_ebm.ranking._blend import simplex_grid

    energies, seen, target = _two_experts(n_users=120, seed=3)
    grid = simplex_grid(2, 0.25)
    per = np.stack([_ndcg_each(energies, seen, target, w) for w in grid])  # (G, U)
    n = per.shape[1]
    for seed in (0, 1):
        counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n))
        one = Blender(step=0.25, bags=1, seed=seed)
        w = one.fit(energies, target, seen=seen)
        np.testing.assert_allclose(w, grid[np.argmax(per @ counts)], atol=1e-6)
    many = Blender(step=0.25, bags=16, seed=0)
    w = many.fit(energies, target, seen=seen)
    assert np.isclose(w.sum(), 1.0) and (w >= 0).all()
    assert all(np.isclose(w * 16 * 4, np.round(w * 16 * 4)))  # a mean of 16 grid points
    np.testing.assert_allclose(
        w, Blender(step=0.25, bags=16, seed=0).fit(energies, target, seen=seen)
    )
    # the reported score is the bagged weights' own validation NDCG@10
    assert many.valid_ndcg == pytest.approx(
        float(np.nanmean(_ndcg_each(energies, seen, target, w)))
    )


def test_bagged_weights_find_the_one_expert_that_is_right():
    energies, seen, target = _two_experts(seed=4)
    short = np.flatnonzero(np.asarray(seen.sum(axis=1)).ravel() == 2)
    bl = Blender(bags=8, seed=0)  # only short users: expert A alone ranks their targets first
    w = bl.fit([e[short] for e in energies], target[short], seen=seen[short])
    assert w[0] > 0.9


def test_bagged_ranker_fits_saves_loads_and_refuses_bad_settings(dataset, tmp_path):
    r = Ranker(
        components=("popularity", "ease"),
        component_config=FAST,
        weight_fit="bagged",
        weight_bags=4,
        device="cpu",
    ).fit_dataset(dataset)
    assert sum(r.fit_info["weights"]) == pytest.approx(1.0)
    loaded = load_model(r.save(tmp_path / "r"))
    h = dataset.history("test")
    np.testing.assert_array_equal(loaded.energies(h), r.energies(h))
    with pytest.raises(ConfigError, match="RankerConfig.weight_bags"):
        Ranker(weight_fit="bagged", weight_bags=0)
    with pytest.raises(ValueError, match=r"bags: expected an int >= 0, got -1"):
        Blender(bags=-1)
    with pytest.raises(ValueError, match=r"bags: expected 0 with search=False, got 2"):
        Blender(bags=2, search=False)


def test_bagged_grid_is_coarsened_to_at_most_max_grid_points():
    from recsys_ebm.ranking._blend import MAX_GRID, grid_size, grid_step

    assert grid_step(4, 0.1) == 0.1 and grid_size(4, 0.1) == 286
    for k in (2, 6, 7, 9):
        s = grid_step(k, 0.0001 if k == 2 else 0.1)
        assert grid_size(k, s) <= MAX_GRID < grid_size(k, 1 / (round(1 / s) + 1))
    energies, seen, target = _two_experts()
    w = Blender(step=0.0001, bags=2).fit(energies, target, seen=seen)  # 2000 points, not 10001
    n = round(1 / grid_step(2, 0.0001))
    assert n == 1999 and np.allclose(w * 2 * n, np.round(w * 2 * n))


def test_bagged_weights_per_history_length_segment():
    energies, seen, target = _two_experts()
    two = Blender(segments=2, min_segment_users=20, bags=8)
    two.fit(energies, target, seen=seen)
    sw = two.segment_weights
    assert sw is not None and sw[0, 0] > 0.9 and sw[1, 1] > 0.9  # short: expert A; long: B
