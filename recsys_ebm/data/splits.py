"""Leak-free splits over aggregated (user, item) pairs, vectorised with numpy.

Each function takes one row per distinct (user, item) pair (duplicates were aggregated before),
so assigning every row to exactly one part can never put a pair in two parts. Each returns an
int8 array of part codes (:data:`TRAIN`, :data:`VALID`, :data:`TEST`, :data:`FOLD_IN`).

Randomness comes from :func:`pair_keys`: a seeded hash of each (user, item) pair, so a split
depends on the seed and the data only - never on row order (which multi-threaded group-bys do
not fix).
"""

from __future__ import annotations

import numpy as np

from recsys_ebm.data.prepare_options import SPLITS

__all__ = [
    "pair_keys",
    "FOLD_IN",
    "PART_NAMES",
    "TEST",
    "TRAIN",
    "VALID",
    "SPLITS",
    "heldout_users_split",
    "leave_last_k_split",
    "random_split",
    "temporal_split",
]

TRAIN, VALID, TEST, FOLD_IN = 0, 1, 2, 3
PART_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test", FOLD_IN: "fold_in"}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a fast, well-mixed uint64 -> uint64 hash."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def pair_keys(users: np.ndarray, items: np.ndarray, seed: int) -> np.ndarray:
    """(N,) uint64 pseudo-random key per (user code, item code) pair, determined by ``seed``."""
    s = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        mixed = _splitmix64(users.astype(np.uint64) ^ s) + items.astype(np.uint64)
    return _splitmix64(mixed)


def _order_by_user_then_key(users: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row order grouped by user, random (by ``keys``) within each user."""
    if users.size and users.max() < 2**24:
        # one radix-friendly sort on (user: 24 bits | key: 40 bits) beats a two-key lexsort 3x
        packed = (users.astype(np.uint64) << np.uint64(40)) | (keys >> np.uint64(24))
        return np.argsort(packed, kind="stable")
    return np.lexsort((keys, users))


def _check_fractions(test_fraction: float, valid_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    if not 0.0 <= valid_fraction < 1.0 or test_fraction + valid_fraction >= 1.0:
        raise ValueError(
            f"valid_fraction: expected a value in [0, 1) with test_fraction + valid_fraction < 1, "
            f"got {valid_fraction} (test_fraction {test_fraction})"
        )


def _group_positions(users: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows visited in ``order`` (grouped by user): position within the user's group and the
    group's size, both aligned with ``order``."""
    u_sorted = users[order]
    counts = np.bincount(u_sorted)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(len(order)) - starts[u_sorted]
    return pos, counts[u_sorted]


def random_split(
    users: np.ndarray, keys: np.ndarray, test_fraction: float, valid_fraction: float
) -> np.ndarray:
    """Random per-user holdout: round(frac * n_u) of each user's pairs to test (and valid).

    ``keys`` come from :func:`pair_keys`. Every user keeps at least one training pair.
    """
    _check_fractions(test_fraction, valid_fraction)
    order = _order_by_user_then_key(users, keys)
    pos, cnt = _group_positions(users, order)
    n_test = np.minimum(np.floor(cnt * test_fraction + 0.5), cnt - 1)
    n_valid = np.minimum(np.floor(cnt * valid_fraction + 0.5), cnt - 1 - n_test)
    part = np.full(len(users), TRAIN, dtype=np.int8)
    part[order[pos < n_test]] = TEST
    part[order[(pos >= n_test) & (pos < n_test + n_valid)]] = VALID
    return part


def temporal_split(
    timestamps: np.ndarray, test_fraction: float, valid_fraction: float
) -> np.ndarray:
    """Global temporal cutoff: the latest ``test_fraction`` of pairs (by time) form the test part,
    the ``valid_fraction`` before them the valid part. Ties at a cutoff go to the later part, so
    no instant straddles two parts."""
    _check_fractions(test_fraction, valid_fraction)
    if timestamps.size == 0:
        return np.zeros(0, dtype=np.int8)
    t_sorted = np.sort(timestamps)
    n = len(t_sorted)
    test_cut = t_sorted[min(n - 1, int(np.floor(n * (1.0 - test_fraction))))]
    part = np.full(n, TRAIN, dtype=np.int8)
    part[timestamps >= test_cut] = TEST
    if valid_fraction > 0:
        valid_cut = t_sorted[min(n - 1, int(np.floor(n * (1.0 - test_fraction - valid_fraction))))]
        part[(timestamps >= valid_cut) & (timestamps < test_cut)] = VALID
    return part


def leave_last_k_split(
    users: np.ndarray, timestamps: np.ndarray, keys: np.ndarray, k: int, valid_k: int
) -> np.ndarray:
    """Per user, the last ``k`` pairs by time go to test and the ``valid_k`` before them to valid
    (time ties broken by the seeded ``keys``). Every user keeps at least one training pair."""
    if k <= 0 or valid_k < 0:
        raise ValueError(f"leave_k: expected >= 1 (and valid_k >= 0), got {k} / {valid_k}")
    # descending time within user: newest first
    order = np.lexsort((keys, -timestamps, users))
    pos, cnt = _group_positions(users, order)
    n_test = np.minimum(k, cnt - 1)
    n_valid = np.minimum(valid_k, cnt - 1 - n_test)
    part = np.full(len(users), TRAIN, dtype=np.int8)
    part[order[pos < n_test]] = TEST
    part[order[(pos >= n_test) & (pos < n_test + n_valid)]] = VALID
    return part


def heldout_users_split(
    users: np.ndarray,
    keys: np.ndarray,
    n_users: int,
    test_fraction: float,
    valid_fraction: float,
    fold_in_fraction: float,
    seed: int,
) -> np.ndarray:
    """Strong generalisation (Marlin 2004; Liang et al. 2018): whole users are held out.

    ``test_fraction`` / ``valid_fraction`` of users are removed from training; each held-out
    user's pairs are split at random, ``fold_in_fraction`` into :data:`FOLD_IN` (the history the
    model is given at evaluation time) and the rest into TEST (or VALID).
    """
    _check_fractions(test_fraction, valid_fraction)
    if not 0.0 < fold_in_fraction < 1.0:
        raise ValueError(f"fold_in_fraction: expected a value in (0, 1), got {fold_in_fraction}")
    perm = np.random.default_rng(seed).permutation(n_users)
    n_test = int(round(n_users * test_fraction))
    n_valid = int(round(n_users * valid_fraction))
    role = np.full(n_users, TRAIN, dtype=np.int8)
    role[perm[:n_test]] = TEST
    role[perm[n_test : n_test + n_valid]] = VALID
    row_role = role[users]
    # within each held-out user: a random (1 - fold_in_fraction) share is the target
    order = _order_by_user_then_key(users, keys)
    pos, cnt = _group_positions(users, order)
    n_target = np.minimum(np.floor(cnt * (1.0 - fold_in_fraction) + 0.5), cnt - 1)
    target = np.zeros(len(users), dtype=bool)
    target[order[pos < n_target]] = True
    part = np.full(len(users), TRAIN, dtype=np.int8)
    held = row_role != TRAIN
    part[held & ~target] = FOLD_IN
    part[held & target] = row_role[held & target]
    return part
