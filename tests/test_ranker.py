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
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.evaluation.protocol import evaluate_ranking
from recsys_ebm.models import Recommender, load_model
from recsys_ebm.models.ease import EASE
from recsys_ebm.models.implicit_adapter import ALS
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.ranking import Blender, Ranker, blend, zscore
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
    r = Ranker(
        components=("popularity", "ease"), component_config=FAST, weight_fit="search", device="cpu"
    )
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


# ---------------------------------------------------------------- the ranker composes public parts
@pytest.fixture(scope="module")
def three(dataset):
    """Three fitted models whose learned blend is not a corner of the simplex."""
    return [
        Popularity().fit(dataset.train),
        EASE(**FAST["ease"]).fit(dataset.train),
        ALS(factors=4, epochs=2, seed=0, num_threads=1).fit(dataset.train),
    ]


def test_blender_fitted_on_its_own_learns_the_rankers_weights(dataset, three):
    hist, valid = dataset.history("valid"), dataset.valid
    # calibrated blend (the default), weights searched
    ranker = Ranker.from_fitted(three, hist, valid, weight_fit="search", device="cpu")
    # the ranker tunes on the users with a validation target and a history
    rows = np.flatnonzero((valid.getnnz(axis=1) > 0) & (hist.getnnz(axis=1) > 0))
    h = hist[rows]
    blender = Blender(norm="calibrated")  # no Ranker: the models' public energies, the targets
    # users: the training rows, so ALS uses its trained user factors as the ranker does
    w = blender.fit([m.energies(h, users=rows) for m in three], valid[rows], seen=h)
    assert 0 < ranker.fit_info["weights"][2] < 1  # a real blend, not a single model
    np.testing.assert_array_equal(torch.as_tensor(w, dtype=torch.float32), ranker.weights)
    torch.testing.assert_close(blender.weights, ranker.weights, rtol=0, atol=0)
    torch.testing.assert_close(blender.betas, ranker.blend_state["betas"], rtol=0, atol=0)
    # the default, bagged weights: the ranker's seed draws the bootstrap resamples
    bagged = Ranker.from_fitted(three, hist, valid, device="cpu", seed=3)
    alone = Blender(norm="calibrated", bags=32, seed=3)
    w = alone.fit([m.energies(h, users=rows) for m in three], valid[rows], seen=h)
    np.testing.assert_array_equal(torch.as_tensor(w, dtype=torch.float32), bagged.weights)
    assert blender.valid_ndcg == ranker.fit_info["valid_ndcg_at_10"]
    # its figures per round, as the ranker's callback reports them
    seen_rounds = []
    Blender(step=0.5, rounds=1).fit(
        [m.energies(h) for m in three],
        valid[rows],
        seen=h,
        callback=lambda r, f: seen_rounds.append((r, sorted(f))),
    )
    assert seen_rounds[0] == (0, ["valid_ndcg@10", "w0", "w1", "w2"])


def test_ranker_energies_are_the_composition_of_public_energies(dataset, three):
    hist, valid = dataset.history("valid"), dataset.valid
    ranker = Ranker.from_fitted(three, hist, valid, blend_norm="zscore", device="cpu")
    h = dataset.history("test")[:40]
    h = sp.vstack([h, sp.csr_matrix((1, dataset.n_items), dtype=np.float32)]).tocsr()  # + empty
    w = ranker.weights.numpy().astype(np.float64)
    # by hand: z-score each model's public energies per user over the unseen items, weight, sum
    expected = np.zeros((h.shape[0] - 1, h.shape[1]), np.float64)
    unseen = h[:-1].toarray() == 0
    for wk, m in zip(w, three, strict=True):
        e = m.energies(h[:-1]).astype(np.float64)
        mean = np.array([row[u].mean() for row, u in zip(e, unseen, strict=True)])[:, None]
        std = np.array([row[u].std() for row, u in zip(e, unseen, strict=True)])[:, None]
        expected += wk * (e - mean) / std
    got = ranker.energies(h)
    np.testing.assert_allclose(got[:-1], expected, rtol=1e-4, atol=1e-4)
    # the same composition through the public Blender is exact
    blended = Blender(ranker.weights).blend([m.energies(h) for m in three], seen=h)
    np.testing.assert_array_equal(got[:-1], blended[:-1])
    # an empty history gets the popularity fallback, -log(1 + count) over train + valid
    counts = np.asarray((hist + valid).sum(axis=0)).ravel()
    np.testing.assert_allclose(got[-1], -np.log1p(counts), rtol=1e-6)


def test_blender_takes_a_retrievers_candidates_as_the_ranker_does():
    a, b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0, 0.0])
    hist = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 1.0]], np.float32))
    train = sp.csr_matrix(np.ones((2, 4), np.float32))
    retr = FixedRetriever(b, np.array([3, 2, 1]))
    r = Ranker.from_fitted(
        [Fixed(a), retr], train, weights=(0.6, 0.4), candidates="retriever", device="cpu"
    )
    cands = retr.retrieve(hist, 3)
    e = Blender((0.6, 0.4)).blend(
        [a[None].repeat(2, 0), b[None].repeat(2, 0)], seen=hist, candidates=cands
    )
    np.testing.assert_allclose(r.energies(hist), e, rtol=1e-6)
    # the retriever is found by its capability (a CandidateRetriever), else a clear error
    bad = Ranker.from_fitted([Fixed(a), Fixed(b)], train, candidates="retriever", device="cpu")
    with pytest.raises(ConfigError, match="'retriever' needs a component with retrieve"):
        bad.energies(hist)


def test_blender_input_checks_name_the_argument(dataset):
    h = dataset.history("valid")[:5]
    e = np.zeros(h.shape, np.float32)
    with pytest.raises(ValueError, match=r"energies: expected a \(5, 100\) array.*component 1"):
        Blender().fit([e, e[:, :50]], dataset.valid[:5], seen=h)
    with pytest.raises(ValueError, match=r"targets: expected shape \(5, 100\)"):
        Blender().fit([e], dataset.valid[:4], seen=h)
    with pytest.raises(ValueError, match="weights: this Blender has none"):
        Blender().blend([e], seen=h)
    with pytest.raises(ValueError, match=r"energies: expected 2 components \(one per weight\)"):
        Blender((0.5, 0.5)).blend([e], seen=h)
    with pytest.raises(ValueError, match="weights: expected weights >= 0"):
        Blender((-1.0, 2.0))
    with pytest.raises(ValueError, match=r"candidates: item indices must lie in \[0, 100\)"):
        Blender((1.0,)).blend([e], seen=h, candidates=np.full((5, 3), 100))


def _files(path):
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_save_does_not_change_the_components(dataset, tmp_path):
    ease = EASE(**FAST["ease"]).fit(dataset.train)
    ease.item_ids = dataset.item_ids
    ease_dir = ease.save(tmp_path / "ease")
    ease_files = _files(ease_dir)
    pop = Popularity().fit(dataset.train)  # fitted on a bare matrix: no item ids
    ranker = Ranker.from_fitted([pop, load_model(ease_dir)], dataset.train, device="cpu")
    assert ranker.item_ids is not None and pop.item_ids is None
    h = dataset.history("test")[:10]

    def state():
        return [
            (m.item_ids, m.user_ids, m.n_items, json.dumps(m.fit_info), m.energies(h))
            for m in ranker.components
        ]

    before = state()
    path = ranker.save(tmp_path / "ranker")
    assert pop.item_ids is None  # saving once wrote the ranker's ids into the component
    for (ids0, users0, n0, info0, e0), (ids1, users1, n1, info1, e1) in zip(
        before, state(), strict=True
    ):
        assert (ids0 is None) == (ids1 is None) and (ids0 is None or list(ids0) == list(ids1))
        assert (users0 is None) == (users1 is None) and (n0, info0) == (n1, info1)
        np.testing.assert_array_equal(e0, e1)
    # the saved copy still carries the ranker's vocabulary (the saved format is unchanged)
    saved_pop = load_model(path / "components" / "0-popularity")
    assert [str(x) for x in saved_pop.item_ids] == [str(x) for x in dataset.item_ids]
    # a component given as a directory: the ranker's fit and save leave its files as they were
    r2 = Ranker(components=("popularity", str(ease_dir)), device="cpu").fit_dataset(dataset)
    r2.save(tmp_path / "ranker2")
    assert _files(ease_dir) == ease_files
    np.testing.assert_array_equal(load_model(tmp_path / "ranker2").energies(h), r2.energies(h))


def test_ranker_passes_each_components_input_check_on(dataset):
    """A component of another width is refused with its own clear error (the ranker used to
    call its private scoring hook, which skipped the check)."""
    ranker = Ranker.from_fitted(
        [Popularity().fit(dataset.train), EASE(**FAST["ease"]).fit(dataset.train)],
        dataset.train,
        device="cpu",
    )
    ranker.components[1] = EASE(**FAST["ease"]).fit(dataset.train[:, :50])
    h = dataset.history("test")[:3]
    with pytest.raises(ValueError, match=r"user_items: expected 50 columns .*got shape \(3, 100\)"):
        ranker.energies(h)
    with pytest.raises(ValueError, match=r"user_items: expected 50 columns"):
        ranker.recommend(h, n=5)
