"""The shared test suite every Recommender passes (implicit's RecommenderBaseTestMixin).

Subclass it in a ``Test*`` class and implement :meth:`make_model` returning an unfitted model
configured to train in a second or two on the checkerboard fixture.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.diagnostics import ModelFileError
from recsys_ebm.models import Recommender, load_model


class RecommenderTestMixin:
    #: False for models that do not personalise (popularity): skips the known-top-1 check.
    personalised: bool = True
    #: fraction of checkerboard users whose top-1 must be their held-out item
    top1_accuracy: float = 0.9

    def make_model(self) -> Recommender:  # pragma: no cover - overridden
        raise NotImplementedError

    # class-scoped fixtures are classmethods (pytest 9.1 deprecates instance-method ones)
    @pytest.fixture(scope="class")
    @classmethod
    def board(cls):
        return checkerboard(n_groups=4, users_per_group=25, items_per_group=8, seed=3)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, board):
        return cls().make_model().fit(board.train)

    def test_energies_shape_and_finite(self, fitted, board):
        e = fitted.energies(board.train)
        assert e.shape == board.train.shape
        assert e.dtype == np.float32
        assert np.isfinite(e).all()

    def test_recommend_shapes_sorted_and_consistent(self, fitted, board):
        items, en = fitted.recommend(board.train, n=5)
        assert items.shape == (board.train.shape[0], 5) and en.shape == items.shape
        assert items.dtype == np.int64
        assert np.all(np.diff(en, axis=1) >= 0), "energies must ascend along each list"
        full = fitted.energies(board.train)
        rows = np.arange(items.shape[0])[:, None]
        np.testing.assert_allclose(full[rows, items], en, rtol=1e-5, atol=1e-5)

    def test_known_top1(self, fitted, board):
        if not self.personalised:
            pytest.skip("model does not personalise")
        items, _ = fitted.recommend(board.train, n=1)
        acc = float(np.mean(items[:, 0] == board.expected_top1))
        assert acc >= self.top1_accuracy, f"top-1 accuracy {acc:.2f} on the checkerboard"

    def test_exclude_seen_uses_matrix_passed_at_call_time(self, fitted, board):
        # a different history than the one fitted on: its items, not the training items, are masked
        rng = np.random.default_rng(0)
        hist = sp.random(
            board.train.shape[0],
            board.train.shape[1],
            density=0.3,
            format="csr",
            random_state=rng,
            dtype=np.float32,
        )
        hist.data[:] = 1.0
        items, _ = fitted.recommend(hist, n=10)
        for u in range(hist.shape[0]):
            seen = set(hist[u].indices)
            assert not seen & set(items[u][items[u] >= 0])
        # and without the mask, seen items are allowed back
        items2, _ = fitted.recommend(hist, n=board.train.shape[1], exclude_seen=False)
        assert (items2 >= 0).all()

    def test_exclude_and_candidates(self, fitted, board):
        excl = np.arange(0, board.train.shape[1], 2)
        items, _ = fitted.recommend(board.train, n=4, exclude=excl)
        assert not np.isin(items[items >= 0], excl).any()
        cands = np.array([1, 3, 5, 7, 9, 11])
        items, en = fitted.recommend(board.train, n=3, candidates=cands, exclude_seen=False)
        assert np.isin(items, cands).all()
        per_user = np.tile(np.array([[2, 4, 6, -1]]), (board.train.shape[0], 1))
        items, _ = fitted.recommend(board.train, n=3, candidates=per_user, exclude_seen=False)
        assert np.isin(items, [2, 4, 6]).all()

    def test_n_larger_than_catalogue_pads(self, fitted, board):
        n_items = board.train.shape[1]
        items, en = fitted.recommend(board.train[:3], n=n_items + 5)
        seen = board.train[:3].getnnz(axis=1)
        for r in range(3):
            assert (items[r] >= 0).sum() == n_items - seen[r]
            assert np.isinf(en[r][items[r] < 0]).all()

    def test_unknown_user_from_history(self, fitted, board):
        # a brand-new user who liked group-0 items: served from history alone, no IndexError
        hist = sp.csr_matrix(
            (np.ones(3, np.float32), ([0, 0, 0], [0, 1, 2])), shape=(1, board.train.shape[1])
        )
        items, en = fitted.recommend(hist, n=3, users=np.array([-1]))
        assert items.shape == (1, 3) and np.isfinite(en).all()

    def test_empty_history_is_served(self, fitted, board):
        empty = sp.csr_matrix((2, board.train.shape[1]), dtype=np.float32)
        items, en = fitted.recommend(empty, n=3)
        assert (items >= 0).all() and np.isfinite(en).all()

    def test_bad_input_is_named(self, fitted, board):
        with pytest.raises(ValueError, match="user_items"):
            fitted.recommend(sp.csr_matrix((1, board.train.shape[1] + 1)), n=3)
        with pytest.raises(ValueError, match="n:"):
            fitted.recommend(board.train, n=0)
        with pytest.raises(TypeError, match="user_items"):
            fitted.recommend([[1, 0]], n=1)

    def test_save_load_round_trip(self, fitted, board, tmp_path):
        fitted.item_ids = np.array([f"i{i}" for i in range(board.train.shape[1])], dtype=object)
        path = fitted.save(tmp_path / "model")
        with pytest.raises(FileExistsError):
            fitted.save(tmp_path / "model")
        loaded = load_model(path)
        assert type(loaded) is type(fitted)
        assert loaded.config == fitted.config
        assert list(loaded.item_ids) == list(fitted.item_ids)
        np.testing.assert_allclose(
            loaded.energies(board.train), fitted.energies(board.train), rtol=1e-5, atol=1e-5
        )

    def test_id_vocabularies_round_trip_under_the_int_str_rule(self, fitted, board, tmp_path):
        """Zero-padded string item ids stay strings, int user ids stay ints, both found by their
        int or decimal-string spelling; items.json / users.json stay plain JSON lists, so model
        directories written before the Vocabulary (or edited by hand) still load."""
        n_users, n_items = board.train.shape
        before = fitted.item_vocab, fitted.user_vocab
        try:
            fitted.item_ids = [f"{i:03d}" for i in range(n_items)]
            fitted.user_ids = np.arange(n_users) * 10
            path = fitted.save(tmp_path / "model")
        finally:
            fitted.item_vocab, fitted.user_vocab = before
        loaded = load_model(path)
        assert loaded.item_vocab.kind == "str" and loaded.user_vocab.kind == "int"
        assert list(loaded.item_ids) == [f"{i:03d}" for i in range(n_items)]
        found = loaded.item_vocab.index(["007", "010", 10], unknown="missing")
        assert found.tolist() == [7, 10, -1]  # 10 is "10", never "010"
        assert 7 not in loaded.item_vocab  # "007" is a string id, not the int 7
        assert loaded.user_vocab.index([30, "30"]).tolist() == [3, 3]
        assert json.loads((path / "items.json").read_text())[:2] == ["000", "001"]
        for f in path.rglob("items.json"):  # (a ranker's components hold their own)
            f.write_text(json.dumps(list(range(n_items))))  # an old-style int list
        assert load_model(path).item_vocab.index(["5"]).tolist() == [5]
        (path / "items.json").write_text(json.dumps([1] * n_items))  # duplicate ids: corrupt
        with pytest.raises(ModelFileError, match=r"items\.json.*duplicate"):
            load_model(path)

    def test_small_scoring_blocks_give_the_same_answers(self, fitted, board):
        """batch_size=7 splits the 100 checkerboard users into 15 scoring blocks (the last one
        short): energies and lists must equal one-block scoring."""
        n_users = board.train.shape[0]
        assert n_users > 2 * 7 and n_users % 7  # several blocks, and a ragged last one
        whole = fitted.energies(board.train, batch_size=n_users)
        blocks = fitted.energies(board.train, batch_size=7)
        np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-5)
        items_w, en_w = fitted.recommend(board.train, n=5, batch_size=n_users)
        items_b, en_b = fitted.recommend(board.train, n=5, batch_size=7)
        np.testing.assert_allclose(en_b, en_w, rtol=1e-5, atol=1e-5)
        same = items_b == items_w  # a swap is allowed only between (near-)equal energies
        assert same.mean() > 0.95 and np.allclose(en_b[~same], en_w[~same], atol=1e-5)

    def test_single_user_calls_equal_the_batch(self, fitted, board):
        users = np.arange(board.train.shape[0])
        items, en = fitted.recommend(board.train, n=4, users=users)
        for u in (0, 1, 37, 99):
            one_items, one_en = fitted.recommend(board.train[u], n=4, users=users[u : u + 1])
            assert one_items.shape == (1, 4)
            np.testing.assert_allclose(one_en[0], en[u], rtol=1e-5, atol=1e-5)
            same = one_items[0] == items[u]
            assert same.all() or np.allclose(one_en[0][~same], en[u][~same], atol=1e-5)

    def test_deterministic_with_seed(self, board):
        a = self.make_model().fit(board.train).energies(board.train)
        b = self.make_model().fit(board.train).energies(board.train)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
