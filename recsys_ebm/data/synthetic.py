"""Seeded synthetic interaction data with known structure, for tests and scale benchmarks.

* :func:`checkerboard` - users in ``n_groups`` blocks, each liking its own block of items; one
  held-out item per user is the known correct top-1 (implicit's test fixture, generalised).
* :func:`planted_communities` - an interaction log at any size: users and items belong to planted
  communities, item popularity follows a power law (Zipf), ratings are higher inside a community.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

__all__ = ["Checkerboard", "checkerboard", "planted_communities"]


@dataclass(frozen=True)
class Checkerboard:
    """A checkerboard fixture.

    Attributes:
        train: (U, I) float32 CSR of training interactions.
        test: (U, I) float32 CSR with exactly one held-out in-block item per user.
        user_group: (U,) group of each user; ``item_group``: (I,) group of each item.
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    user_group: np.ndarray
    item_group: np.ndarray

    @property
    def expected_top1(self) -> np.ndarray:
        """(U,) the held-out item of each user: the only unseen item of the user's block."""
        return self.test.indices.copy()


def checkerboard(
    n_groups: int = 4, users_per_group: int = 25, items_per_group: int = 8, seed: int = 0
) -> Checkerboard:
    """Each user has seen every item of their block but one; that one is in ``test``.

    The unseen item differs between users, so a collaborative model learns it from the
    neighbours who did see it.
    """
    rng = np.random.default_rng(seed)
    n_users, n_items = n_groups * users_per_group, n_groups * items_per_group
    user_group = np.repeat(np.arange(n_groups), users_per_group)
    item_group = np.repeat(np.arange(n_groups), items_per_group)
    rows, cols, test_cols = [], [], []
    for u in range(n_users):
        block = np.flatnonzero(item_group == user_group[u])
        held = rng.choice(block)
        seen = block[block != held]
        rows.extend([u] * len(seen))
        cols.extend(seen.tolist())
        test_cols.append(held)
    train = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items), dtype=np.float32
    )
    test = sp.csr_matrix(
        (np.ones(n_users, np.float32), (np.arange(n_users), test_cols)),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    return Checkerboard(train, test, user_group, item_group)


def planted_communities(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20_000,
    n_communities: int = 8,
    in_community: float = 0.8,
    zipf_exponent: float = 1.0,
    seed: int = 0,
) -> pl.DataFrame:
    """Interaction log with planted communities and power-law item popularity.

    Each event picks a user uniformly; with probability ``in_community`` the item comes from the
    user's community, else from the whole catalogue; within either pool items are drawn with
    probability proportional to rank^-zipf_exponent. Ratings (1-5) are higher in-community.
    Repeated (user, item) events can occur, as in real logs.

    Returns:
        polars frame: user_id (Int64), item_id (Int64), rating (Float64), timestamp (Int64), and
        ``community`` of the user (Int64) for checks.
    """
    if n_users <= 0 or n_items < n_communities or n_interactions <= 0 or n_communities <= 0:
        raise ValueError(
            "planted_communities: expected n_users > 0, n_interactions > 0 and "
            f"n_items >= n_communities > 0, got {n_users}, {n_items}, {n_interactions}, "
            f"{n_communities}"
        )
    if not 0.0 <= in_community <= 1.0:
        raise ValueError(f"in_community: expected a probability, got {in_community}")
    rng = np.random.default_rng(seed)
    user_comm = rng.integers(0, n_communities, n_users)
    item_comm = np.arange(n_items) % n_communities
    # popularity: a random permutation of Zipf weights, so popular items spread over communities
    weights = (np.arange(1, n_items + 1, dtype=np.float64)) ** (-zipf_exponent)
    weights = weights[rng.permutation(n_items)]
    users = rng.integers(0, n_users, n_interactions)
    inside = rng.random(n_interactions) < in_community
    items = np.empty(n_interactions, dtype=np.int64)
    # global draws
    gp = weights / weights.sum()
    n_out = int((~inside).sum())
    items[~inside] = rng.choice(n_items, size=n_out, p=gp)
    # in-community draws, one vectorised choice per community
    for c in range(n_communities):
        pool = np.flatnonzero(item_comm == c)
        sel = inside & (user_comm[users] == c)
        p = weights[pool] / weights[pool].sum()
        items[sel] = pool[rng.choice(len(pool), size=int(sel.sum()), p=p)]
    match = user_comm[users] == item_comm[items]
    rating = np.where(match, rng.integers(4, 6, n_interactions), rng.integers(1, 4, n_interactions))
    timestamp = 1_600_000_000 + np.sort(rng.integers(0, 86_400 * 365, n_interactions))
    return pl.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": items,
            "rating": rating.astype(np.float64),
            "timestamp": timestamp.astype(np.int64),
            "community": user_comm[users].astype(np.int64),
        }
    )
