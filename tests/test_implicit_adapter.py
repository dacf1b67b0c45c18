import numpy as np
import pytest
import scipy.sparse as sp

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.diagnostics import ConfigError, DivergenceError
from recsys_ebm.models.implicit_adapter import ALS, BPR
from tests.recommender_mixin import RecommenderTestMixin


class TestALS(RecommenderTestMixin):
    def make_model(self):
        return ALS(factors=8, epochs=10, num_threads=1, seed=1)


class TestBPR(RecommenderTestMixin):
    top1_accuracy = 0.8

    def make_model(self):
        return BPR(factors=8, epochs=200, learning_rate=0.05, num_threads=1, seed=1)


def test_energy_is_negative_implicit_score():
    board = checkerboard(seed=2)
    model = ALS(factors=8, epochs=5, num_threads=1, seed=0).fit(board.train)
    users = np.arange(5)
    e = model.energies(board.train[:5], users=users)
    scores = model.user_factors[:5].numpy() @ model.item_factors.numpy().T
    np.testing.assert_allclose(e, -scores, rtol=1e-5, atol=1e-5)


def test_als_fold_in_matches_implicit_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares

    board = checkerboard(seed=2)
    model = ALS(factors=8, epochs=5, alpha=3.0, num_threads=1, seed=0).fit(board.train)
    ref = AlternatingLeastSquares(factors=8, alpha=3.0, regularization=0.05, iterations=1)
    ref.fit(board.train, show_progress=False)
    ref.item_factors = model.item_factors.numpy().copy()
    ref.YtY_ = None
    hist = board.train[:4]
    expected = ref.recalculate_user(np.arange(4), hist)
    np.testing.assert_allclose(model.fold_in(hist).numpy(), expected, rtol=1e-3, atol=1e-4)


def test_known_user_uses_learned_factors_and_unknown_is_folded_in():
    board = checkerboard(seed=2)
    model = BPR(factors=8, epochs=50, num_threads=1, seed=0).fit(board.train)
    e_known = model.energies(board.train[:1], users=np.array([0]))
    e_new = model.energies(board.train[:1], users=np.array([-1]))
    np.testing.assert_allclose(
        e_known[0], -(model.user_factors[0].numpy() @ model.item_factors.numpy().T), rtol=1e-5
    )
    assert not np.allclose(e_known, e_new)
    empty = sp.csr_matrix((1, board.train.shape[1]), dtype=np.float32)
    assert np.isfinite(model.energies(empty)).all()


def test_training_keeps_openblas_single_threaded_in_a_fresh_process():
    """implicit warns (and slows down) when OpenBLAS threads; importing implicit inside our
    thread limit used to load scipy's BLAS after the limit, so a first fit still warned."""
    import os
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "from recsys_ebm.data.synthetic import checkerboard\n"
        "from recsys_ebm.models.implicit_adapter import ALS, BPR\n"
        "X = checkerboard(seed=0).train\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    ALS(factors=4, epochs=2, seed=0).fit(X)\n"
        "    BPR(factors=4, epochs=2, seed=0).fit(X)\n"
        "print([str(x.message)[:60] for x in w if 'BLAS' in str(x.message)])\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_bpr_divergence_is_a_value_error_naming_the_fix():
    """lr 1e9 makes implicit's factors NaN; its own ModelFitError (not a ValueError) is wrapped."""
    with pytest.raises(DivergenceError, match=r"bpr: the factors are NaN/inf.*lower learning_rate"):
        BPR(factors=4, epochs=3, learning_rate=1e9, num_threads=1).fit(checkerboard(seed=0).train)


def test_negative_regularization_is_refused():
    with pytest.raises(ConfigError, match=r"ALSConfig\.regularization: expected >= 0, got -100"):
        ALS(regularization=-100)


def test_bpr_on_one_thread_is_reproducible():
    """BPR's documented way to reproducibility (its threads run lock-free Hogwild SGD)."""
    x = sp.random(300, 400, density=0.05, random_state=1, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    a = BPR(factors=8, epochs=3, num_threads=1, seed=4).fit(x)
    b = BPR(factors=8, epochs=3, num_threads=1, seed=4).fit(x)
    assert np.array_equal(a.item_factors.numpy(), b.item_factors.numpy())
    assert np.array_equal(a.user_factors.numpy(), b.user_factors.numpy())
