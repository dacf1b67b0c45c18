"""Softmax RBM for ratings (Salakhutdinov, Mnih & Hinton 2007; issue #3)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import Checkerboard, checkerboard, planted_communities
from recsys_ebm.diagnostics import ConfigError, DataWarning, ModelFitError
from recsys_ebm.evaluation.evaluate import evaluate_models
from recsys_ebm.models import get_model_class, load_model
from recsys_ebm.models._softmax_rbm_math import sample_levels
from recsys_ebm.models.softmax_rbm import SoftmaxRBM
from tests.checkpointing import resumed_after_stop
from tests.recommender_mixin import RecommenderTestMixin


def small(**kw):
    base = dict(
        n_hidden=16,
        epochs=40,
        batch_size=10,
        learning_rate=0.1,
        patience=0,
        progress=False,
        device="cpu",
        seed=0,
        orientation="user",
    )
    return SoftmaxRBM(**{**base, **kw})


def rating_checkerboard(seed: int = 3) -> Checkerboard:
    """The mixin's checkerboard with ratings: a user's own block is rated 4-5 and four random
    items of other blocks 1-2, so the known top-1 (the held-out own-block item) is the unseen
    item with the highest expected rating."""
    board = checkerboard(n_groups=4, users_per_group=25, items_per_group=8, seed=seed)
    rng = np.random.default_rng(seed)
    coo = board.train.tocoo()
    rows, cols = list(coo.row), list(coo.col)
    vals = list(rng.choice([4.0, 5.0], size=coo.nnz))
    for u in range(board.train.shape[0]):
        other = np.flatnonzero(board.item_group != board.user_group[u])
        for i in rng.choice(other, size=4, replace=False):
            rows.append(u)
            cols.append(i)
            vals.append(float(rng.choice([1.0, 2.0])))
    train = sp.csr_matrix(
        (np.asarray(vals, np.float32), (rows, cols)), shape=board.train.shape, dtype=np.float32
    )
    return Checkerboard(train, board.test, board.user_group, board.item_group)


# the mixin's "matrix passed at call time" check hands in a binary history: read as 1-star
# ratings, with the DataWarning that documents the ambiguity
@pytest.mark.filterwarnings(
    "ignore:user_items. every value is 1.0:recsys_ebm.diagnostics.DataWarning"
)
class TestSoftmaxRBM(RecommenderTestMixin):
    @pytest.fixture(scope="class")
    @classmethod
    def board(cls):
        return rating_checkerboard()

    def make_model(self):
        return small()


# ---------------------------------------------------------------------------- exact maths
def tiny(n_i=4, n_k=3, n_h=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = SoftmaxRBM(n_hidden=n_h, device="cpu", progress=False, orientation="user")
    m.n_items = n_i
    m.rating_levels = np.arange(1.0, n_k + 1.0)
    m.W = torch.randn(n_i, n_k, n_h, generator=g, dtype=torch.float64)
    m.b = torch.randn(n_i, n_k, generator=g, dtype=torch.float64) * 0.5
    m.c = torch.randn(n_h, generator=g, dtype=torch.float64) * 0.5
    return m


def unnormalised_p(m, ratings: dict[int, int]) -> float:
    """sum_h exp(-E(V, h)) straight from the energy function, enumerating h in {0,1}^H."""
    total = 0.0
    for h in itertools.product([0.0, 1.0], repeat=m.c.shape[0]):
        h = torch.tensor(h, dtype=torch.float64)
        neg_e = float(m.c @ h) + sum(float(m.b[i, k] + m.W[i, k] @ h) for i, k in ratings.items())
        total += np.exp(neg_e)
    return total


def test_rating_distribution_sums_to_one_and_matches_enumeration():
    m = tiny()
    history = {0: 2, 2: 0}  # item 0 rated level 3, item 2 rated level 1
    hist = sp.csr_matrix(
        (np.array([3.0, 1.0], np.float32), ([0, 0], [0, 2])), shape=(1, 4), dtype=np.float32
    )
    items = np.arange(4)
    dist = m.rating_distribution(hist, np.zeros(4, np.int64), items)
    assert dist.shape == (4, 3)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-12)
    for q in items:
        rest = {i: k for i, k in history.items() if i != q}  # rated q: leave-one-out
        brute = np.array([unnormalised_p(m, {**rest, int(q): k}) for k in range(3)])
        np.testing.assert_allclose(dist[q], brute / brute.sum(), rtol=1e-9)
    expected = dist @ m.rating_levels
    np.testing.assert_allclose(m.predict_ratings(hist, np.zeros(4, np.int64), items), expected)
    np.testing.assert_allclose(m.energies(hist)[0], -expected, rtol=1e-6)  # ranking energy
    # free energy: F(V) = -log sum_h exp(-E(V, h))
    np.testing.assert_allclose(m.free_energy(hist), [-np.log(unnormalised_p(m, history))])


def test_cd0_gives_exactly_zero_update():
    m = tiny()
    rows, items, levels = (torch.tensor(a) for a in ([0, 0, 1], [0, 2, 1], [2, 0, 1]))
    grads, lv, recon = m.cd_step(rows, items, levels, 2, 0, torch.Generator().manual_seed(0))
    assert recon is None and torch.equal(lv, levels)
    for t in grads.values():
        assert torch.count_nonzero(t) == 0


def test_cd1_gradient_averages_to_the_exact_expectation():
    m = tiny()
    rows, items, levels = (torch.tensor(a) for a in ([0, 0], [0, 2], [2, 0]))
    g = torch.Generator().manual_seed(0)
    # with a chain stuck at the data (k = 0) from the PCD entry point, the gradient is zero too
    grads, _, _ = m.cd_step(rows, items, levels, 1, 0, g, chain=levels.clone())
    assert all(torch.count_nonzero(t) == 0 for t in grads.values())
    reps = 20000  # the same user repeated: CD-1 averages to the exact expectation over V_1
    r = torch.arange(reps).repeat_interleave(2)
    grads, _, _ = m.cd_step(r, items.repeat(reps), levels.repeat(reps), reps, 1, g)
    ph0 = torch.sigmoid(m.c + m.W[0, 2] + m.W[2, 0])
    # exact E_{h0 ~ p(h|V)} E_{V1 ~ p(V|h0)} [p(h|V1)] by enumeration of h0 and V1
    neg_c = torch.zeros(3, dtype=torch.float64)
    for h0 in itertools.product([0.0, 1.0], repeat=3):
        h0 = torch.tensor(h0, dtype=torch.float64)
        p_h0 = torch.prod(torch.where(h0 > 0, ph0, 1 - ph0))
        pv0 = torch.softmax(m.b[0] + m.W[0] @ h0, 0)
        pv2 = torch.softmax(m.b[2] + m.W[2] @ h0, 0)
        for k0, k2 in itertools.product(range(3), range(3)):
            neg_c += p_h0 * pv0[k0] * pv2[k2] * torch.sigmoid(m.c + m.W[0, k0] + m.W[2, k2])
    torch.testing.assert_close(grads["c"], ph0 - neg_c, atol=0.01, rtol=0)


def test_sampler_draws_the_softmax():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]]).repeat(40000, 1)
    draws = sample_levels(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, torch.softmax(logits[0], 0), atol=0.01, rtol=0)


# ---------------------------------------------------------------------------- learning
def planted_ratings(seed=0, n_groups=3, users_per_group=40, n_items=30):
    """Users in groups rate their group's items 4-5 and the rest 1-2; 70 % of pairs observed,
    of which 20 % held out (test)."""
    rng = np.random.default_rng(seed)
    n_users = n_groups * users_per_group
    ug, ig = np.repeat(np.arange(n_groups), users_per_group), np.arange(n_items) % n_groups
    rows, cols = np.nonzero(rng.random((n_users, n_items)) < 0.7)
    vals = np.where(
        ug[rows] == ig[cols], rng.choice([4.0, 5.0], rows.size), rng.choice([1.0, 2.0], rows.size)
    )
    test = rng.random(rows.size) < 0.2

    def mat(sel):
        return sp.csr_matrix(
            (vals[sel].astype(np.float32), (rows[sel], cols[sel])), shape=(n_users, n_items)
        )

    return mat(~test), mat(test)


def test_learns_planted_structure():
    train, test = planted_ratings()
    m = small(epochs=30).fit(train)
    coo = test.tocoo()
    pred = m.predict_ratings(train, coo.row, coo.col)
    rmse = float(np.sqrt(np.mean((pred - coo.data) ** 2)))
    global_rmse = float(np.sqrt(np.mean((train.data.mean() - coo.data) ** 2)))
    item_mean = np.asarray(train.sum(0)).ravel() / np.maximum(1, train.getnnz(axis=0))
    item_rmse = float(np.sqrt(np.mean((item_mean[coo.col] - coo.data) ** 2)))
    assert rmse < 0.5 * global_rmse and rmse < 0.5 * item_rmse, (rmse, global_rmse, item_rmse)
    assert rmse < 0.65  # the noise floor is 0.5 (uniform over two levels)


def test_validation_early_stopping_keeps_best():
    train, valid = planted_ratings(seed=1)
    seen = []
    m = small(epochs=30, patience=3).fit(train, valid, callback=lambda e, x: seen.append(x))
    h = m.fit_info["history"]
    assert len(h) == len(seen) <= 30
    assert all(np.isfinite(x["valid_rmse"]) and np.isfinite(x["reconstruction_rmse"]) for x in h)
    assert m.fit_info["best_valid_rmse"] == min(x["valid_rmse"] for x in h)
    coo = valid.tocoo()
    pred = m.predict_ratings(train, coo.row, coo.col)
    rmse = float(np.sqrt(np.mean((pred - coo.data) ** 2)))
    assert abs(rmse - m.fit_info["best_valid_rmse"]) < 1e-5  # the best epoch's weights are kept


def test_k_schedule_and_persistent_chains_train():
    train, test = planted_ratings(seed=2)
    m = small(epochs=8, k_schedule=(1, 3, 5, 9))
    assert [m.config.k_at(e) for e in range(8)] == [1, 1, 3, 3, 5, 5, 9, 9]
    m.fit(train)
    pcd = small(epochs=20, persistent=True).fit(train)
    coo = test.tocoo()
    for model in (m, pcd):
        pred = model.predict_ratings(train, coo.row, coo.col)
        assert np.sqrt(np.mean((pred - coo.data) ** 2)) < 1.0


def test_seed_controls_the_result():
    train, _ = planted_ratings(seed=3)
    a, b = small(epochs=3).fit(train), small(epochs=3).fit(train)
    c = small(epochs=3, seed=1).fit(train)
    torch.testing.assert_close(a.W, b.W, rtol=0, atol=0)
    assert not torch.equal(a.W, c.W)


@pytest.mark.parametrize("orientation", ["user", "item"])
def test_the_fitted_softmax_rbm_is_the_average_of_its_cd_iterates(orientation):
    """average=a reaches the softmax RBMs' loop: CD runs as without it (the 1-, 2- and 3-epoch
    fits give the raw iterates) and the model kept is their average over epochs, with decays
    d_t = min(a, (t - 1) / (t + 1)) = 0, 1/3, 1/2 at a = 0.5 (models/training.py)."""
    train, _ = planted_ratings(seed=3)
    raw = [small(epochs=e, orientation=orientation).fit(train).parameters() for e in (1, 2, 3)]
    avg = small(epochs=3, orientation=orientation, average=0.5).fit(train).parameters()
    for k in ("W", "b", "c"):
        want = raw[0][k] / 6 + raw[1][k] / 3 + raw[2][k] / 2
        torch.testing.assert_close(avg[k], want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(avg[k], raw[2][k])  # not the last iterate
    for bad in (-0.1, 1.0):
        with pytest.raises(
            ConfigError, match=r"SoftmaxRBMConfig.average: expected a decay in \[0, 1\)"
        ):
            small(average=bad)


def test_half_star_levels_saved_and_loaded_on_cpu(tmp_path):
    rng = np.random.default_rng(0)
    levels = np.arange(0.5, 5.01, 0.5)
    x = sp.random(40, 20, density=0.4, format="csr", random_state=rng, dtype=np.float32)
    x.data = rng.choice(levels, x.nnz).astype(np.float32)
    m = small(epochs=2, device="auto").fit(x)
    np.testing.assert_array_equal(m.rating_levels, np.unique(x.data))
    m.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["extra"]["rating_levels"] == m.rating_levels.tolist()
    loaded = load_model(tmp_path / "m", device="cpu")
    assert isinstance(loaded, SoftmaxRBM) and loaded.W.device.type == "cpu"
    coo = x.tocoo()
    np.testing.assert_allclose(
        loaded.predict_ratings(x, coo.row, coo.col), m.predict_ratings(x, coo.row, coo.col)
    )


# ---------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    board = rating_checkerboard()
    with pytest.raises(ValueError, match="train: .*at least 2 distinct levels"):
        small().fit(checkerboard().train)  # binary data
    with pytest.raises(TypeError, match="train"):
        small().fit(board.train.toarray())
    m = small(epochs=2).fit(board.train)
    bad = board.train.copy()
    bad.data[0] = 3.3
    with pytest.raises(ValueError, match=r"user_items: expected rating values in \[1.0, 2.0"):
        m.recommend(bad, n=3)
    with pytest.raises(ValueError, match="history: expected rating values"):
        m.predict_ratings(bad, [0], [1])
    with pytest.raises(ValueError, match="cols: expected as many"):
        m.predict_ratings(board.train, [0, 1], [1])
    with pytest.raises(ValueError, match="rows: expected indices"):
        m.predict_ratings(board.train, [10_000], [1])
    with pytest.raises(ValueError, match="valid: expected rating values"):
        small(epochs=1).fit(board.train, bad)
    with pytest.warns(DataWarning, match="every value is 1.0"):
        ones = board.train.copy()
        ones.data[:] = 1.0
        m.energies(ones)
    with pytest.raises(ConfigError, match="rating_levels"):
        SoftmaxRBM(rating_levels=(3.0, 1.0))
    with pytest.raises(ConfigError, match="momentum"):
        SoftmaxRBM(momentum=1.0)


def test_divergence_guard_names_epoch_and_quantity():
    train, _ = planted_ratings()
    with pytest.raises(ModelFitError, match=r"epoch 1, step 1: max \|[Wbc]\|"):
        small(learning_rate=50.0, max_abs_param=1.0, epochs=2).fit(train)


def test_huge_learning_rate_stops_before_sampling_nan_probabilities():
    train, _ = planted_ratings()
    with pytest.raises(
        ValueError, match=r"SoftmaxRBM diverged at epoch 1, step 1: .*learning_rate"
    ):
        small(learning_rate=1e9, epochs=2).fit(train)


# ---------------------------------------------------------------------------- dataset, CLI
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    log = planted_communities(n_users=200, n_items=80, n_interactions=6_000, seed=2)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    ds = prepare_dataset(p, split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
    ds.save(tmp_path_factory.mktemp("ds") / "data")
    return ds


def test_rating_history_never_holds_the_target(dataset):
    hist = dataset.history("test", values="rating")
    binary = dataset.history("test")
    assert (hist != 0).sum() == binary.nnz and set(np.unique(hist.data)) <= {1, 2, 3, 4, 5}
    assert hist.multiply(dataset.test).nnz == 0
    valid_hist = dataset.history("valid", values="rating")
    assert (valid_hist != dataset.ratings("train")).nnz == 0


def test_fit_dataset_needs_ratings(dataset):
    assert get_model_class("softmax-rbm") is SoftmaxRBM

    class NoRatings:
        has_ratings = False
        path = "somewhere"

    with pytest.raises(ValueError, match="dataset: softmax-rbm needs explicit ratings"):
        SoftmaxRBM().fit_dataset(NoRatings())


def test_evaluate_models_gives_rating_history_and_reports_rmse(dataset):
    m = small(epochs=10).fit_dataset(dataset)
    res = evaluate_models(dataset, {"srbm": m}, (10,), n_boot=50)
    extra = res.models[0].extra
    assert set(extra) == {"rmse", "mae"} and 0 < extra["mae"] <= extra["rmse"] < 1.5


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_train_and_evaluate_report_rmse_mae(dataset, tmp_path):
    out = tmp_path / "srbm"
    r = _run(
        "train",
        "--data",
        str(dataset.path),
        "--model",
        "softmax-rbm",
        "--out",
        str(out),
        "--set",
        "epochs=5",
        "--set",
        "n_hidden=16",
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    report = tmp_path / "report"
    r = _run(
        "evaluate",
        "--data",
        str(dataset.path),
        "--model",
        str(out),
        "--k",
        "10",
        "--bootstrap",
        "50",
        "--report",
        str(report),
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "rmse" in r.stdout and "mae" in r.stdout  # the printed table
    metrics = json.loads((report / "metrics.json").read_text())["models"]["srbm"]
    assert 0 < metrics["mae"] <= metrics["rmse"] < 1.5
    assert "rmse" in (report / "report.md").read_text()


def test_batch_job_scores_from_ratings_and_rating_histories(dataset, tmp_path):
    """The batch job hands a rating model the rating-valued history (a binary one would read as
    all 1-star), and a --history file must then carry ratings."""
    import polars as pl

    from recsys_ebm.batch import run_batch

    m = small(epochs=5).fit_dataset(dataset)
    res = run_batch(m, dataset, tmp_path / "r.parquet", users="all", n=5, progress=False)
    df = pl.read_parquet(tmp_path / "r.parquet")
    assert res.n_users == dataset.n_users and df.height == 5 * dataset.n_users
    u = 3
    items, _ = m.recommend(dataset.history("test", values="rating")[u], n=5)
    got = df.filter(pl.col("user_id") == dataset.user_ids[u]).sort("rank")["item_id"].to_list()
    assert got == list(dataset.item_ids[items[0]])
    a, b = dataset.item_ids[0], dataset.item_ids[1]
    (tmp_path / "h.csv").write_text(f"user_id,item_id\nnew,{a}\n")
    with pytest.raises(ValueError, match=r"history_file: .* lacks column\(s\) \['rating'\]"):
        run_batch(m, dataset, tmp_path / "x.parquet", history_file=tmp_path / "h.csv")
    (tmp_path / "h.csv").write_text(f"user_id,item_id,rating\nnew,{a},5\nnew,{b},1\n")
    run_batch(
        m,
        dataset,
        tmp_path / "n.parquet",
        users=str(tmp_path / "h.csv"),
        history_file=tmp_path / "h.csv",
        n=5,
        progress=False,
    )
    new = pl.read_parquet(tmp_path / "n.parquet").filter(pl.col("user_id") == "new")
    hist = sp.csr_matrix(([5.0, 1.0], ([0, 0], [0, 1])), shape=(1, dataset.n_items))
    items, _ = m.recommend(hist.astype(np.float32), n=5)
    assert new.sort("rank")["item_id"].to_list() == list(dataset.item_ids[items[0]])


def test_ranker_and_online_serving_refuse_rating_models(dataset, tmp_path):
    from recsys_ebm.ranking import Ranker
    from recsys_ebm.serving import build_bundle

    m = small(epochs=2).fit_dataset(dataset)
    m.save(tmp_path / "srbm")
    with pytest.raises(ConfigError, match="components: 'softmax-rbm' ranks from ratings"):
        Ranker(components=(str(tmp_path / "srbm"),)).fit_dataset(dataset)
    with pytest.raises(ValueError, match="model_dir: .* ranks from ratings"):
        build_bundle(tmp_path / "srbm", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_checkpoint_resume_equals_uninterrupted(dataset, tmp_path):
    train, valid = dataset.ratings("train"), dataset.ratings("valid")
    ref = small(epochs=6, persistent=True, patience=3).fit(train, valid)

    ckpt = str(tmp_path / "ckpt")
    cfg = dict(epochs=6, persistent=True, patience=3, checkpoint_dir=ckpt)
    resumed = resumed_after_stop(lambda **c: small(**{**cfg, **c}), train, valid, ckpt, 2)
    for name in ("W", "b", "c"):
        torch.testing.assert_close(getattr(resumed, name), getattr(ref, name))
    assert resumed.fit_info["history"] == ref.fit_info["history"]
    # a checkpoint of another config is refused, not silently resumed
    with pytest.raises(ValueError, match="checkpoint_dir: .* another config"):
        small(**{**cfg, "n_hidden": 8}).fit(train, valid)
