"""Item-oriented softmax RBM (Georgiev & Nakov 2013): items are the cases, users the units."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.anomalies import anomaly_scores
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models import load_model
from recsys_ebm.models.capabilities import FreeEnergyModel
from recsys_ebm.models.softmax_rbm import ItemSoftmaxRBM, SoftmaxRBM
from tests.recommender_mixin import RecommenderTestMixin
from tests.test_softmax_rbm import planted_ratings, rating_checkerboard, small, unnormalised_p


@pytest.mark.filterwarnings(
    "ignore:user_items. every value is 1.0:recsys_ebm.diagnostics.DataWarning"
)
class TestSoftmaxRBMItemOriented(RecommenderTestMixin):
    """The shared contract. The mixin passes no ``users``, so every row is folded in from the
    history passed at call time: the checkerboard's known top-1 tests the fold-in."""

    @pytest.fixture(scope="class")
    @classmethod
    def board(cls):
        return rating_checkerboard()

    def make_model(self):
        return small(orientation="item")


def tiny_items(n_u=4, n_i=3, n_k=3, n_h=3, seed=0):
    """An item-oriented model set by hand: W (U, K, H) per user, context (I, U) level codes."""
    g = torch.Generator().manual_seed(seed)
    m = SoftmaxRBM(n_hidden=n_h, device="cpu", progress=False, orientation="item")
    m.n_items = n_i
    m.rating_levels = np.arange(1.0, n_k + 1.0)
    m.W = torch.randn(n_u, n_k, n_h, generator=g, dtype=torch.float64)
    m.b = torch.randn(n_u, n_k, generator=g, dtype=torch.float64) * 0.5
    m.c = torch.randn(n_h, generator=g, dtype=torch.float64) * 0.5
    # item 0 rated by users 0 (level 3) and 2 (level 1); item 1 by user 1 (2); item 2 by nobody
    m.context = sp.csr_matrix(
        (np.array([3, 1, 2]), ([0, 0, 1], [0, 2, 1])), shape=(n_i, n_u), dtype=np.int64
    )
    return m


def test_conditional_matches_enumeration_of_the_item_case():
    m = tiny_items()
    ctx = {0: {0: 2, 2: 0}, 1: {1: 1}, 2: {}}  # item -> {user: level index}
    users = np.array([0, 1, 2, 3])
    hist = sp.csr_matrix((4, 3), dtype=np.float32)  # the item cases do not read it
    rows, cols = np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4)
    dist = m.rating_distribution(hist, rows, cols, users=users)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-12)
    for p, (r, i) in enumerate(zip(rows, cols, strict=True)):
        u = int(users[r])
        rest = {v: k for v, k in ctx[int(i)].items() if v != u}  # u's own rating: left out
        brute = np.array([unnormalised_p(m, {**rest, u: k}) for k in range(3)])
        np.testing.assert_allclose(dist[p], brute / brute.sum(), rtol=1e-9)
    # the ranking energy is minus the expected rating, leave-one-out included
    expected = (dist @ m.rating_levels).reshape(4, 3)
    np.testing.assert_allclose(m.energies(hist, users=users), -expected, rtol=1e-6)
    np.testing.assert_allclose(
        m.energies(hist, users=users, items=np.array([2, 0])), -expected[:, [2, 0]], rtol=1e-6
    )


def test_known_users_use_their_weights_and_unknown_users_are_folded_in():
    train, test = planted_ratings()
    m = small(orientation="item", epochs=30).fit(train)
    assert m.W.shape[0] == train.shape[0] and m.context.shape == train.shape[::-1]
    coo = test.tocoo()
    users = np.arange(train.shape[0])
    known = m.predict_ratings(train, coo.row, coo.col, users=users)
    folded = m.predict_ratings(train, coo.row, coo.col)  # no users: all folded in
    global_rmse = float(np.sqrt(np.mean((train.data.mean() - coo.data) ** 2)))
    for pred in (known, folded):
        rmse = float(np.sqrt(np.mean((pred - coo.data) ** 2)))
        assert rmse < 0.5 * global_rmse and rmse < 0.65, (rmse, global_rmse)
    # a folded-in user is served from the history passed now: other ratings, other lists
    flipped = train[:1].copy()
    flipped.data = 6.0 - flipped.data  # likes what user 0 dislikes and vice versa
    e0 = m.energies(train[:1])
    e1 = m.energies(flipped)
    assert np.corrcoef(e0[0], e1[0])[0, 1] < -0.5


def test_fold_in_is_deterministic_and_fit_is_seeded():
    train, _ = planted_ratings(seed=3)
    a = small(orientation="item", epochs=3).fit(train)
    b = small(orientation="item", epochs=3).fit(train)
    torch.testing.assert_close(a.W, b.W, rtol=0, atol=0)
    np.testing.assert_array_equal(a.energies(train[:5]), b.energies(train[:5]))


def test_save_load_keeps_the_context(tmp_path):
    train, test = planted_ratings()
    m = small(orientation="item", epochs=3).fit(train)
    m.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert (loaded.context != m.context).nnz == 0 and loaded.config.orientation == "item"
    coo = test.tocoo()
    users = np.arange(train.shape[0])
    np.testing.assert_allclose(
        loaded.predict_ratings(train, coo.row, coo.col, users=users),
        m.predict_ratings(train, coo.row, coo.col, users=users),
    )


def test_item_orientation_errors_name_the_argument():
    train, _ = planted_ratings()
    m = small(orientation="item", epochs=1).fit(train)
    # items are the cases: a user's ratings have no free energy, so the class has none
    assert isinstance(m, ItemSoftmaxRBM) and not isinstance(m, FreeEnergyModel)
    with pytest.raises(TypeError, match="model: expected a model with a free energy.*'user'"):
        anomaly_scores(m, train)
    with pytest.raises(ValueError, match="users: expected 2 integer"):
        m.predict_ratings(train[:2], [0], [1], users=np.array([0]))
    with pytest.raises(ConfigError, match="orientation: expected 'user' or 'item'"):
        SoftmaxRBM(orientation="items")
    with pytest.raises(ConfigError, match="fold_in_"):
        SoftmaxRBM(fold_in_lr=0.0)


def test_orientation_picks_the_class_and_saved_directories_load_into_it(tmp_path):
    """``SoftmaxRBM`` (the CLI's ``softmax-rbm``) builds the class of ``orientation``; a saved
    directory loads into the same class (through the class and the registry)."""
    from recsys_ebm.models import get_model_class
    from recsys_ebm.models.softmax_rbm import SoftmaxRBMConfig, UserSoftmaxRBM

    assert type(SoftmaxRBM()) is ItemSoftmaxRBM  # the default orientation
    assert type(SoftmaxRBM(orientation="user")) is UserSoftmaxRBM
    assert type(SoftmaxRBM(SoftmaxRBMConfig(orientation="user"))) is UserSoftmaxRBM
    assert type(get_model_class("softmax-rbm")(orientation="item")) is ItemSoftmaxRBM
    assert UserSoftmaxRBM().config.orientation == "user"
    with pytest.raises(ValueError, match="config.orientation: UserSoftmaxRBM has orientation"):
        UserSoftmaxRBM(orientation="item")
    train, _ = planted_ratings()
    for orientation, cls in (("user", UserSoftmaxRBM), ("item", ItemSoftmaxRBM)):
        m = small(orientation=orientation, epochs=1).fit(train)
        m.save(tmp_path / orientation)
        assert type(load_model(tmp_path / orientation)) is cls
        assert type(SoftmaxRBM.load(tmp_path / orientation)) is cls
        assert isinstance(m, FreeEnergyModel) == (orientation == "user")
