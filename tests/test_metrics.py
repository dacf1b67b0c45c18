"""Metric definitions against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_ebm.evaluation.metrics import (
    beyond_accuracy,
    ranking_metrics,
    rating_errors,
    recall_by_popularity,
)
from recsys_ebm.evaluation.stats import bootstrap_ci, paired_test


def csr(rows):
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def test_hand_computed_example():
    # user 0: relevant {1, 4}; list [3, 1, 2, 4]  -> hits at ranks 2 and 4
    # user 1: relevant {0};    list [0, 2, -1, -1] -> hit at rank 1 (padding never hits)
    rec = np.array([[3, 1, 2, 4], [0, 2, -1, -1]])
    target = csr([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0]])
    m = ranking_metrics(rec, target, (2, 4))
    l2 = 1 / math.log2(3)
    l4 = 1 / math.log2(5)
    assert m["recall@2"].tolist() == [0.5, 1.0]
    assert m["precision@2"].tolist() == [0.5, 0.5]
    assert m["hitrate@2"].tolist() == [1.0, 1.0]
    np.testing.assert_allclose(m["ndcg@2"], [l2 / (1 + l2), 1.0])
    np.testing.assert_allclose(m["ndcg@4"], [(l2 + l4) / (1 + l2), 1.0])
    # MAP@4 user 0: (1/2 + 2/4) / min(4, 2) = 0.5
    np.testing.assert_allclose(m["map@4"], [0.5, 1.0])
    np.testing.assert_allclose(m["mrr"], [0.5, 1.0])


def test_recall_denominator_variant():
    rec = np.array([[0, 1]])
    target = csr([[1, 1, 1, 1]])
    assert ranking_metrics(rec, target, (2,))["recall@2"][0] == 0.5
    assert ranking_metrics(rec, target, (2,), recall_denominator="min")["recall@2"][0] == 1.0
    with pytest.raises(ValueError, match="recall_denominator"):
        ranking_metrics(rec, target, (2,), recall_denominator="max")


def test_users_without_targets_are_nan_and_bad_k():
    m = ranking_metrics(np.array([[0]]), csr([[0, 0]]), (1,))
    assert np.isnan(m["ndcg@1"][0])
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(np.array([[0]]), csr([[1, 0]]), (2,))


def test_beyond_accuracy():
    rec = np.array([[0, 1], [0, 2]])
    counts = np.array([9.0, 1.0, 0.0, 5.0])
    b = beyond_accuracy(rec, counts, n_users=9, k=2)
    assert b["coverage@2"] == 3 / 4
    assert b["avg_popularity@2"] == (9 + 1 + 9 + 0) / 4
    p = (np.array([9, 1, 9, 0]) + 1) / 10
    assert b["novelty@2"] == pytest.approx(np.mean(-np.log2(p)))


def test_rating_errors():
    e = rating_errors(np.array([3.0, 5.0]), np.array([4.0, 5.0]))
    assert e["rmse"] == pytest.approx(math.sqrt(0.5)) and e["mae"] == 0.5
    with pytest.raises(ValueError, match="predicted"):
        rating_errors(np.array([1.0]), np.array([1.0, 2.0]))


def test_recall_by_popularity_buckets():
    counts = np.array([100.0, 1.0, 1.0, 1.0])  # item 0 holds almost all interactions: the head
    rec = np.array([[0, 3]])
    target = csr([[1, 1, 0, 1]])
    recall, n = recall_by_popularity(rec, target, counts, k=2, n_buckets=2)
    assert n.tolist() == [1.0, 2.0]
    assert recall.tolist() == [1.0, 0.5]


def test_bootstrap_ci_covers_mean_and_is_seeded():
    v = np.random.default_rng(0).normal(0.3, 0.1, 500)
    lo, hi = bootstrap_ci(v, seed=1)
    assert lo < v.mean() < hi and hi - lo < 0.05
    assert bootstrap_ci(v, seed=1) == (lo, hi)


def test_paired_test_detects_a_real_difference():
    rng = np.random.default_rng(0)
    b = rng.random(300)
    a = b + 0.05 + rng.normal(0, 0.01, 300)
    res = paired_test(a, b)
    assert res["mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert res["t_pvalue"] < 1e-6 and res["wilcoxon_pvalue"] < 1e-6
    same = paired_test(b, b)
    assert np.isnan(same["t_pvalue"])
