"""Bootstrap intervals never crash on empty or non-finite samples, ``n_boot`` is checked up front,
and evaluation reports progress per model and per block of users."""

from __future__ import annotations

import re

import numpy as np
import pytest

from recsys_ebm.evaluation.stats import bootstrap_ci

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ recsys-ebm "


@pytest.mark.parametrize("n_boot", [0, -5, 2.5, True])
def test_bootstrap_needs_a_positive_number_of_resamples(n_boot):
    # n_boot = 0 was the one way to an empty sample of means: np.quantile raised IndexError
    with pytest.raises(ValueError, match=rf"n_boot: expected a positive int .*got {n_boot!r}"):
        bootstrap_ci(np.ones(10), n_boot=n_boot)


@pytest.mark.parametrize("level", [0.0, 1.0, float("nan")])
def test_bootstrap_level_must_lie_in_the_open_unit_interval(level):
    with pytest.raises(ValueError, match="level: expected a confidence level in"):
        bootstrap_ci(np.ones(10), level=level)


@pytest.mark.parametrize(
    "values",
    [np.array([]), np.array([np.nan, np.nan]), np.array([np.inf, -np.inf, np.nan])],
    ids=["empty", "all-nan", "no-finite"],
)
def test_bootstrap_of_no_finite_value_is_nan_not_an_error(values):
    lo, hi = bootstrap_ci(values, n_boot=200)
    assert np.isnan(lo) and np.isnan(hi)


def test_bootstrap_drops_non_finite_values_and_overflowing_means():
    lo, hi = bootstrap_ci(np.array([0.5, 0.5, np.inf, np.nan, 0.5]), n_boot=200)
    assert (lo, hi) == (0.5, 0.5)
    lo, hi = bootstrap_ci(np.full(4, 1e308), n_boot=50)  # every resampled mean overflows to inf
    assert np.isnan(lo) and np.isnan(hi)


def test_bootstrap_interval_covers_the_mean():
    v = np.random.default_rng(0).random(500)
    lo, hi = bootstrap_ci(v, n_boot=300)
    assert lo < v.mean() < hi


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.synthetic import planted_communities
    from recsys_ebm.models.popularity import Popularity

    root = tmp_path_factory.mktemp("eval")
    log = planted_communities(n_users=80, n_items=40, n_interactions=1500, seed=2)
    log.drop("community").write_csv(root / "log.csv")
    ds = prepare_dataset(root / "log.csv", seed=0)
    return ds, Popularity().fit(ds.train)


def test_evaluate_models_checks_n_boot_before_any_work(prepared):
    from recsys_ebm.evaluation.evaluate import evaluate_models

    ds, pop = prepared
    with pytest.raises(ValueError, match="n_boot: expected a positive int"):
        evaluate_models(ds, {"pop": pop}, (10, 20, 40), n_boot=0)


def test_evaluate_models_reports_progress_in_a_log(prepared, monkeypatch, capsys):
    import recsys_ebm.evaluation.evaluate as ev

    ds, pop = prepared
    monkeypatch.setenv("RECSYS_EBM_PROGRESS_INTERVAL", "0")
    monkeypatch.setattr(ev, "_BLOCK_USERS", 16)  # several blocks on a small dataset
    res = ev.evaluate_models(ds, {"pop": pop, "pop2": pop}, (10, 20, 40), n_boot=50)
    err = capsys.readouterr().err
    assert re.search(STAMP + r"evaluate: started \(2 models\)", err)
    assert re.search(STAMP + r"evaluate pop: block 2/\d+ eta", err)
    assert re.search(STAMP + r"evaluate: model 1/2 model pop ndcg@10 \d\.\d{4} eta", err)
    assert re.search(STAMP + r"evaluate: model 2/2 .* done in", err)
    # blocks give the same lists as one call
    whole = ev.evaluate_models(ds, {"pop": pop}, (10, 20, 40), n_boot=50, progress=False)
    np.testing.assert_array_equal(
        res.models[0].per_user["ndcg@40"], whole.models[0].per_user["ndcg@40"]
    )
