"""Ranker: the shared contract, blend maths, learned weights, filters, fallback, persistence."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_ebm.config import Config
from recsys_ebm.data.dataset import Dataset
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import checkerboard, planted_communities
from recsys_ebm.evaluation.protocol import evaluate_ranking
from recsys_ebm.models import Recommender, load_model
from recsys_ebm.models.ease import EASE
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.ranking import Ranker, blend, zscore
from tests.recommender_mixin import RecommenderTestMixin

FAST = {"ease": {"l2": 10.0, "l2_grid": [], "device": "cpu"}}


class TestRanker(RecommenderTestMixin):
    def make_model(self):
        return Ranker(components=("popularity", "ease"), component_config=FAST, device="cpu")


class Fixed(Recommender):
    """In-test model with given energies (same for every user)."""

    name = "fixed"
    config_class = Config

    def __init__(self, energy):
        super().__init__()
        self.e = torch.as_tensor(energy, dtype=torch.float32)
        self.n_items = len(energy)

    def fit(self, train, valid=None, *, callback=None):
        return self

    def _energies_block(self, user_items, users, items):
        e = self.e.expand(user_items.shape[0], -1)
        return e if items is None else e[:, torch.as_tensor(items)]


class FixedRetriever(Fixed):
    """...and a fixed candidate list (the contrastive retriever's ``retrieve`` contract)."""

    def __init__(self, energy, candidates):
        super().__init__(energy)
        self.cands = candidates

    def retrieve(self, user_items, n_candidates, *, users=None, exclude_seen=True):
        return np.tile(self.cands[:n_candidates], (user_items.shape[0], 1))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    log = planted_communities(n_users=300, n_items=100, n_interactions=9_000, seed=4)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    ds = prepare_dataset(p, seed=0)
    genres = [
        ["Comedy"] if i % 3 == 0 else ["Drama", "War"] if i % 3 == 1 else []
        for i in range(ds.n_items)
    ]
    ds.item_metadata = pl.DataFrame(
        {"item_id": ds.items["item_id"], "title": ["t"] * ds.n_items, "genres": genres}
    )
    return ds


@pytest.fixture(scope="module")
def fitted(dataset):
    r = Ranker(components=("popularity", "ease"), component_config=FAST, device="cpu")
    return r.fit_dataset(dataset)


def test_zscore_makes_blend_invariant_to_per_user_affine_rescaling():
    rng = np.random.default_rng(0)
    a = torch.as_tensor(rng.normal(size=(4, 30)), dtype=torch.float32)
    b = torch.as_tensor(rng.normal(size=(4, 30)), dtype=torch.float32)
    mask = torch.ones(4, 30, dtype=torch.bool)
    scale = torch.as_tensor(rng.uniform(0.1, 100, size=(4, 1)), dtype=torch.float32)
    w = torch.tensor([0.3, 0.7])
    e1 = blend(torch.stack([zscore(a, mask), zscore(b, mask)]), w)
    e2 = blend(torch.stack([zscore(a * scale + 5.0, mask), zscore(b, mask)]), w)
    torch.testing.assert_close(e1, e2, rtol=1e-4, atol=1e-4)
    z = zscore(a, mask)
    torch.testing.assert_close(z.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert (zscore(torch.ones(2, 5), torch.ones(2, 5, dtype=torch.bool)) == 0).all()


def test_blend_by_hand_and_retriever_candidates_rank_first():
    a, b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0, 0.0])
    hist = sp.csr_matrix(np.array([[1.0, 0, 0, 0]], np.float32))
    train = sp.csr_matrix(np.ones((2, 4), np.float32))
    r = Ranker.from_fitted([Fixed(a), Fixed(b)], train, weights=(0.75, 0.25), device="cpu")
    za = (a[1:] - a[1:].mean()) / a[1:].std()  # stats over unseen items 1..3
    zb = (b[1:] - b[1:].mean()) / b[1:].std()
    e = r.energies(hist)[0]
    np.testing.assert_allclose(e[1:], 0.75 * za + 0.25 * zb, rtol=1e-5)
    items, _ = r.recommend(hist, n=3)
    assert items[0].tolist() == [1, 2, 3]
    retr = FixedRetriever(np.zeros(4), np.array([3, 2]))
    r = Ranker.from_fitted(
        [Fixed(a), retr], train, weights=(1.0, 0.0), candidates="retriever", device="cpu"
    )
    items, en = r.recommend(hist, n=3)
    assert items[0].tolist() == [2, 3, 1]  # candidates {2, 3} first, then the rest
    assert np.isfinite(en).all()


def test_weights_learned_on_validation_beat_or_match_each_component(dataset, fitted):
    info = fitted.fit_info
    assert info["weights_source"] == "validation"
    assert info["refit_on_train_valid"] == ["popularity", "ease"]
    w = dict(zip(info["components"], info["weights"], strict=True))
    assert w["ease"] > w["popularity"] and abs(sum(w.values()) - 1) < 1e-6
    hist, valid = dataset.history("valid"), dataset.valid
    singles = [
        evaluate_ranking(Popularity().fit(dataset.train), hist, valid)["ndcg@10"],
        evaluate_ranking(EASE(**FAST["ease"]).fit(dataset.train), hist, valid)["ndcg@10"],
    ]
    assert info["valid_ndcg_at_10"] >= max(singles) - 1e-9


def test_defaults_without_validation_are_equal_weights():
    board = checkerboard(n_groups=2, users_per_group=5, items_per_group=4, seed=0)
    r = Ranker(components=("popularity", "ease"), component_config=FAST, device="cpu")
    r.fit(board.train)
    assert r.fit_info["weights_source"] == "default (equal)" and r.fit_info["weights"] == [0.5, 0.5]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    excl=st.lists(st.integers(0, 99), max_size=40),
    allow=st.one_of(st.none(), st.lists(st.integers(0, 99), min_size=1, max_size=60)),
    genres=st.one_of(st.none(), st.sampled_from([["Comedy"], ["War"], ["Comedy", "Drama"]])),
    n=st.integers(1, 120),
    user=st.integers(0, 299),
)
def test_filters_are_never_violated(fitted, dataset, excl, allow, genres, n, user):
    hist = dataset.history("test")[[user, (user + 7) % 300]]
    items, en = fitted.recommend(
        hist, n=n, exclude=np.array(excl, np.int64), allow=allow, genres_any=genres
    )
    ok = np.ones(dataset.n_items, bool)
    ok[excl] = False
    if allow is not None:
        ok &= np.isin(np.arange(dataset.n_items), allow)
    if genres is not None:
        ok &= np.array([bool(set(genres) & set(g)) for g in fitted.item_genres])
    for r in range(2):
        got = items[r][items[r] >= 0]
        assert ok[got].all() and not np.isin(got, hist[r].indices).any()
        expected = (ok & ~np.isin(np.arange(dataset.n_items), hist[r].indices)).sum()
        assert len(got) == min(n, expected)  # nothing eligible is dropped
        assert np.all(np.diff(en[r][: len(got)]) >= 0)


def test_popularity_fallback_and_known_user_lookup(fitted, dataset):
    empty = sp.csr_matrix((1, dataset.n_items), dtype=np.float32)
    items, en = fitted.recommend(empty, n=5, users=np.array([-1]))
    counts = np.asarray(dataset.history("test").sum(axis=0)).ravel()
    np.testing.assert_allclose(en[0], -np.log1p(counts[items[0]]), rtol=1e-6)
    np.testing.assert_allclose(en[0], -np.log1p(np.sort(counts)[::-1][:5]), rtol=1e-6)
    assert fitted.is_fallback(empty).tolist() == [True]
    rows, idx = fitted.history_of([dataset.user_ids[3], "ghost"])
    assert idx.tolist() == [3, -1]
    assert sorted(rows[0].indices) == sorted(dataset.history("test")[3].indices)
    assert rows[1].nnz == 0


def test_save_load_keeps_components_history_and_genres(fitted, dataset, tmp_path):
    path = fitted.save(tmp_path / "ranker")
    assert sorted(p.name for p in (path / "components").iterdir()) == ["0-popularity", "1-ease"]
    assert (path / "history.npz").is_file() and (path / "item_genres.json").is_file()
    loaded = load_model(path)
    hist = dataset.history("test")
    np.testing.assert_allclose(loaded.energies(hist), fitted.energies(hist), rtol=1e-5, atol=1e-5)
    a = loaded.recommend(hist[:20], n=5, genres_any=["War"])[0]
    assert (a == fitted.recommend(hist[:20], n=5, genres_any=["War"])[0]).all()


def test_cli_trains_ranker_from_names_and_from_trained_dirs(dataset, tmp_path):
    data = dataset.save(tmp_path / "data")
    base = [sys.executable, "-m", "recsys_ebm", "train", "--data", str(data), "--no-mlflow"]
    ease = tmp_path / "ease"
    r = subprocess.run(
        [*base, "--model", "ease", "--set", "l2=10.0", "--out", str(ease)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    out1, out2 = tmp_path / "r1", tmp_path / "r2"
    r = subprocess.run(
        [
            *base,
            "--model",
            "ranker",
            "--set",
            'components=["popularity","ease"]',
            "--set",
            "component_config={ease={l2=10.0,l2_grid=[]}}",
            "--set",
            "device=cpu",
            "--out",
            str(out1),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [
            *base,
            "--model",
            "ranker",
            "--set",
            f'components=["{ease}","popularity"]',
            "--set",
            "device=cpu",
            "--out",
            str(out2),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    pre = load_model(out2)
    # a trained part is used as it is (not refitted): same energies as the directory it came from
    ds = Dataset.load(data)
    np.testing.assert_allclose(
        pre.components[0].energies(ds.train[:10]),
        load_model(ease).energies(ds.train[:10]),
        rtol=1e-6,
    )
    assert load_model(out1).fit_info["weights_source"] == "validation"
    bad = subprocess.run(
        [*base, "--model", "ranker", "--set", 'components=["nope"]', "--out", str(tmp_path / "r3")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "neither a model name" in bad.stderr


def test_components_of_another_item_vocabulary_are_refused(dataset, tmp_path):
    """Issue: a model is served on another dataset (here: blended into a ranker)."""
    ease = EASE(l2=10.0, l2_grid=(), device="cpu").fit(dataset.train)
    ease.item_ids = dataset.item_ids
    alien = EASE(l2=10.0, l2_grid=(), device="cpu").fit(dataset.train)
    alien.item_ids = np.array([f"other-{i}" for i in dataset.item_ids], dtype=object)
    # same item count, other ids: blending them would mix up items
    with pytest.raises(ValueError, match=r"models\[1\] \(ease\): its item vocabulary differs"):
        Ranker.from_fitted([ease, alien], dataset.train, device="cpu")
    path = alien.save(tmp_path / "alien")
    with pytest.raises(ValueError, match=r"RankerConfig.components\[1\] .*alien.*vocabulary"):
        Ranker(components=("popularity", str(path)), device="cpu").fit_dataset(dataset)
    # a saved ranker whose component was swapped for one of another catalogue
    saved = Ranker.from_fitted([ease], dataset.train, device="cpu").save(tmp_path / "r")
    comp = saved / "components" / "0-ease" / "items.json"
    comp.write_text(json.dumps([str(x) for x in alien.item_ids]))
    with pytest.raises(ValueError, match=r"components\[0\] \(ease\): its item vocabulary"):
        load_model(saved)
    comp.write_text(json.dumps([str(x) for x in dataset.item_ids]))
    assert load_model(saved).n_items == dataset.n_items  # the same ids (as text) load
