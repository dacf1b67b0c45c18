import numpy as np
import pytest

from recsys_ebm.data.synthetic import checkerboard, planted_communities


def test_planted_communities_is_seeded_and_structured():
    a = planted_communities(n_users=500, n_items=200, n_interactions=20_000, seed=4)
    b = planted_communities(n_users=500, n_items=200, n_interactions=20_000, seed=4)
    c = planted_communities(n_users=500, n_items=200, n_interactions=20_000, seed=5)
    assert a.equals(b) and not a.equals(c)
    # most events fall inside the user's community (item community = item_id % n_communities)
    inside = (a["item_id"].to_numpy() % 8) == a["community"].to_numpy()
    assert 0.75 < inside.mean() < 0.9
    # power-law popularity: the most popular item is far above the median item
    counts = np.bincount(a["item_id"].to_numpy(), minlength=200)
    assert counts.max() > 10 * np.median(counts)
    # ratings are higher inside the community
    r = a["rating"].to_numpy()
    assert r[inside].mean() > r[~inside].mean() + 1.5


def test_planted_communities_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_items >= n_communities"):
        planted_communities(n_items=3, n_communities=8)
    with pytest.raises(ValueError, match="in_community"):
        planted_communities(in_community=1.5)


def test_checkerboard_known_answer():
    board = checkerboard(n_groups=3, users_per_group=4, items_per_group=5, seed=0)
    assert board.train.shape == (12, 15)
    assert (board.train.getnnz(axis=1) == 4).all() and (board.test.getnnz(axis=1) == 1).all()
    # the held-out item is in the user's block and not in their training row
    for u in range(12):
        held = board.expected_top1[u]
        assert board.item_group[held] == board.user_group[u]
        assert board.train[u, held] == 0
