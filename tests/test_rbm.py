import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.diagnostics import ConfigError, DivergenceError, ModelFitError
from recsys_ebm.models.rbm import RBM
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
    )
    return RBM(**{**base, **kw})


class TestRBM(RecommenderTestMixin):
    def make_model(self):
        return small()  # the defaults: CD with hidden_dropout 0.2


class TestPersistentRBM(RecommenderTestMixin):
    def make_model(self):
        return small(persistent=True, cd_k=1)  # PCD, with dropout masks for its chains too


class TestRBMWithoutDropout(RecommenderTestMixin):
    def make_model(self):
        return small(hidden_dropout=0.0)


def test_k_schedule():
    m = small(epochs=8, k_schedule=(1, 3, 5, 9))
    assert [m.config.k_at(e) for e in range(8)] == [1, 1, 3, 3, 5, 5, 9, 9]


def test_divergence_guard_names_epoch_and_quantity():
    board = checkerboard(seed=0)
    with pytest.raises(ModelFitError, match=r"epoch 1, step 1: max \|W\|"):
        small(learning_rate=50.0, max_abs_param=1.0, epochs=2).fit(board.train)


def test_huge_learning_rate_stops_with_a_value_error_before_torch_crashes():
    """lr 1e9 once crashed inside torch.bernoulli (NaN probabilities) before any check ran; the
    per-step guard stops it at the first step with a ValueError naming epoch, step and fix."""
    board = checkerboard(seed=0)
    with pytest.raises(DivergenceError, match=r"RBM diverged at epoch 1, step 1: .*learning_rate"):
        small(learning_rate=1e9, epochs=2).fit(board.train)
    assert issubclass(DivergenceError, ValueError)


@pytest.mark.parametrize("field", ["learning_rate", "weight_decay", "momentum", "init_std"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_floats_are_refused(field, value):
    with pytest.raises(ConfigError, match=rf"RBMConfig.{field}: expected a finite number"):
        RBM(**{field: value})


def test_negative_weight_decay_and_zero_lr_decay_are_refused():
    with pytest.raises(ConfigError, match="weight_decay: expected >= 0"):
        RBM(weight_decay=-1.0)
    with pytest.raises(ConfigError, match="lr_decay: expected > 0"):
        RBM(lr_decay=0.0)


def test_monitoring_curves_and_early_stopping():
    board = checkerboard(seed=0)
    seen = []
    m = small(epochs=30, patience=3, validate_every=1).fit(
        board.train, board.test, callback=lambda e, x: seen.append(x)
    )
    h = m.fit_info["history"]
    assert len(h) == len(seen) <= 30
    for key in ("reconstruction_error", "free_energy_gap"):
        assert key in h[0] and np.isfinite(h[0][key])
    # validation NDCG@10 after every epoch (validate_every=1)
    scored = [x for x in h if "valid_ndcg@10" in x]
    assert len(scored) == len(h) and np.isfinite(scored[0]["valid_ndcg@10"])
    assert h[-1]["reconstruction_error"] < h[0]["reconstruction_error"]
    assert m.fit_info["best_valid_ndcg@10"] == max(x["valid_ndcg@10"] for x in scored)


def test_validate_every_reaches_the_rbm_loop():
    board = checkerboard(seed=0)
    m = small(epochs=5, patience=0, validate_every=2).fit(board.train, board.test)
    h = m.fit_info["history"]
    assert [x["epoch"] for x in h if "valid_ndcg@10" in x] == [1, 3, 4]  # and the last
    assert m.fit_info["best_epoch"] in (1, 3, 4)
    with pytest.raises(ConfigError, match="validate_every: expected >= 1"):
        small(validate_every=0)


def test_the_fitted_rbm_is_the_average_of_its_cd_iterates():
    """average=a: CD runs as without it (the same raw iterates theta_1..3, which 1-, 2- and
    3-epoch fits give), and the model kept is their average over epochs, with decays
    d_t = min(a, (t - 1) / (t + 1)) = 0, 1/3, 1/2 at a = 0.5."""
    board = checkerboard(seed=0)
    raw = [small(epochs=e, average=0.0).fit(board.train).parameters() for e in (1, 2, 3)]
    avg = small(epochs=3, average=0.5).fit(board.train).parameters()
    for k in ("W", "b", "c"):
        want = raw[0][k] / 6 + raw[1][k] / 3 + raw[2][k] / 2
        torch.testing.assert_close(avg[k], want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(avg[k], raw[2][k])  # not the last iterate
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"RBMConfig.average: expected a decay in \[0, 1\)"):
            small(average=bad)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    board = checkerboard(seed=0)
    ref = small(epochs=6, persistent=True).fit(board.train, board.test)

    ckpt = str(tmp_path / "ckpt")
    resumed = resumed_after_stop(
        lambda **kw: small(epochs=6, persistent=True, **kw), board.train, board.test, ckpt, 2
    )
    for name in ("W", "b", "c"):
        torch.testing.assert_close(getattr(resumed, name), getattr(ref, name))
    # a checkpoint of another config or matrix is refused, never silently resumed
    with pytest.raises(ValueError, match="checkpoint_dir: .* another config or training matrix"):
        small(epochs=6, persistent=True, n_hidden=3, checkpoint_dir=ckpt).fit(board.train)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        small(epochs=6, persistent=True, checkpoint_dir=ckpt).fit(board.train[:-1])


def test_free_energy_orders_real_over_random_profiles():
    board = checkerboard(seed=0)
    m = small().fit(board.train)
    real = m.free_energy(board.train)
    rng = np.random.default_rng(0)
    rand = sp.csr_matrix((rng.random(board.train.shape) < 0.25).astype(np.float32))
    assert real.mean() < m.free_energy(rand).mean()


def test_saved_model_loads_on_cpu(tmp_path):
    board = checkerboard(seed=0)
    m = small(device="auto").fit(board.train)
    m.save(tmp_path / "m")
    loaded = RBM.load(tmp_path / "m", device="cpu")
    assert loaded.W.device.type == "cpu"
    np.testing.assert_allclose(loaded.energies(board.train), m.energies(board.train), rtol=1e-5)


def test_binary_rows_equal_the_models_visible_rows():
    from recsys_ebm.models._rbm_train import BinaryRows

    # ratings, an explicit zero, a duplicate entry and an empty row: visible is 1 where > 0
    m = sp.csr_matrix(
        (
            np.array([4.0, 0.0, 1.0, 2.0, 3.0, 5.0, 1.0]),
            np.array([3, 1, 0, 0, 2, 4, 4]),
            np.array([0, 2, 2, 5, 7]),
        ),
        shape=(4, 6),
    )
    rbm = small()
    rows = BinaryRows(m, torch.device("cpu"))
    assert m.nnz == 7 and not m.has_canonical_format  # the caller's matrix is left as it was
    for pick in ([0, 1, 2, 3], [3, 0], [1], [2, 2, 0]):
        idx = np.asarray(pick)
        np.testing.assert_array_equal(rows(idx).numpy(), rbm.visible(m[idx]).numpy())
    assert rows(np.array([1])).sum() == 0  # the empty row
    rng = np.random.default_rng(0)
    big = sp.random(50, 40, density=0.2, format="csr", random_state=0)
    rows = BinaryRows(big, torch.device("cpu"))
    idx = rng.permutation(50)[:17]
    np.testing.assert_array_equal(rows(idx).numpy(), rbm.visible(big[idx]).numpy())


def test_free_energy_gap_equals_the_dense_free_energies():
    from recsys_ebm.models._rbm_math import free_energy
    from recsys_ebm.models._rbm_train import FreeEnergyGap

    board = checkerboard(seed=0)
    m = small(epochs=3).fit(board.train, board.test)
    gap = FreeEnergyGap(board.train, board.test, seed=5, device=torch.device("cpu"))
    got = gap(m)
    users = np.flatnonzero(board.test.getnnz(axis=1) > 0)
    sample = np.random.default_rng(5).choice(users, size=min(500, users.size), replace=False)
    means = []
    for part in (board.train, board.test):
        v = m.visible(part[sample])
        f = free_energy(v, m.W, m.b, m.c) / v.sum(dim=1).clamp(min=1)
        means.append(float(f.mean()))
    assert got["free_energy_train"] == pytest.approx(means[0], rel=1e-5)
    assert got["free_energy_valid"] == pytest.approx(means[1], rel=1e-5)
    assert got["free_energy_gap"] == pytest.approx(means[0] - means[1], rel=1e-4, abs=1e-6)
    assert FreeEnergyGap(board.train, None, seed=5, device=torch.device("cpu"))(m) == {}
