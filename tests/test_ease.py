import numpy as np
import pytest
import scipy.sparse as sp

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.diagnostics import ConfigError, DivergenceError
from recsys_ebm.models.ease import EASE
from tests.recommender_mixin import RecommenderTestMixin


class TestEASE(RecommenderTestMixin):
    def make_model(self):
        return EASE(l2=10.0, l2_grid=(), device="cpu")


def test_closed_form_matches_definition():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 12)) < 0.3).astype(np.float32)
    model = EASE(l2=5.0, l2_grid=(), device="cpu").fit(sp.csr_matrix(x))
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(12))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.B.numpy(), b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.energies(sp.csr_matrix(x)), -(x @ b), rtol=1e-3, atol=1e-4)


def test_l2_is_chosen_on_validation():
    board = checkerboard(seed=1)
    model = EASE(l2_grid=(0.5, 5000.0), device="cpu").fit(board.train, board.test)
    assert model.config.l2 in (0.5, 5000.0)
    assert set(model.fit_info["valid_ndcg@10_by_l2"]) == {"0.5", "5000.0"}
    best = max(model.fit_info["valid_ndcg@10_by_l2"].values())
    assert model.fit_info["valid_ndcg@10_by_l2"][str(model.config.l2)] == best


def test_singular_gram_with_tiny_l2_is_a_value_error_naming_l2():
    x = np.zeros((5, 4), np.float32)
    x[:, :2] = 1.0  # items 0 and 1 have identical histories: X^T X is singular
    with pytest.raises(DivergenceError, match=r"l2=1e-30.*raise l2"):
        EASE(l2=1e-30, l2_grid=(), device="cpu", progress=False).fit(sp.csr_matrix(x))


def test_nan_in_l2_grid_is_refused_at_construction():
    with pytest.raises(ConfigError, match=r"EASEConfig\.l2_grid: expected a finite number"):
        EASE(l2_grid=(100.0, float("nan")))


class TestDLAE(RecommenderTestMixin):
    """EASE with input dropout (DLAE) passes the same contract."""

    def make_model(self):
        return EASE(l2=10.0, l2_grid=(), dropout=0.5, device="cpu")


def test_dlae_closed_form_matches_definition():
    """dropout p: B = (X^T X + Lambda)^-1 X^T X, Lambda = l2 I + p/(1-p) diag(X^T X) (Steck
    2020), diagonal zeroed; the energies are -(x B)."""
    rng = np.random.default_rng(1)
    x = (rng.random((40, 12)) < 0.3).astype(np.float32)
    g = (x.T @ x).astype(np.float64)
    lam = 5.0 + 0.25 / 0.75 * np.diag(g)
    b = np.linalg.solve(g + np.diag(lam), g)
    np.fill_diagonal(b, 0.0)
    model = EASE(l2=5.0, l2_grid=(), dropout=0.25, device="cpu").fit(sp.csr_matrix(x))
    np.testing.assert_allclose(model.B.numpy(), b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.energies(sp.csr_matrix(x)), -(x @ b), rtol=1e-3, atol=1e-4)
    ease = EASE(l2=5.0, l2_grid=(), device="cpu").fit(sp.csr_matrix(x))
    assert not np.allclose(ease.B.numpy(), b, atol=1e-3)  # dropout changes the solution


def test_dlae_round_trips_and_chooses_l2_on_validation(tmp_path):
    board = checkerboard(seed=2)
    model = EASE(l2_grid=(0.5, 5000.0), dropout=0.5, device="cpu", progress=False)
    model.fit(board.train, board.test)
    assert model.config.l2 in (0.5, 5000.0) and model.config.dropout == 0.5
    model.save(tmp_path / "m")
    back = EASE.load(tmp_path / "m", device="cpu")
    assert back.config.dropout == 0.5
    np.testing.assert_array_equal(back.energies(board.train), model.energies(board.train))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_dropout_outside_0_1_is_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match=r"EASEConfig\.dropout: expected in \[0, 1\)"):
        EASE(dropout=bad)
