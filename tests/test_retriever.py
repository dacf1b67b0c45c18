"""Retriever: the shared contract, planted structure, fold-in, persistence, resume, bad input."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import checkerboard, planted_communities
from recsys_ebm.diagnostics import ConfigError, DataWarning, DivergenceError
from recsys_ebm.evaluation.protocol import evaluate_ranking
from recsys_ebm.models._retriever_train import batch_history
from recsys_ebm.models.ann import ItemIndex
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.models.retriever import Retriever, genre_features
from tests.checkpointing import resumed_after_stop
from tests.recommender_mixin import RecommenderTestMixin


def small(**kw):
    base = dict(
        embedding_size=16,
        n_hidden=32,
        epochs=30,
        batch_size=64,
        learning_rate=0.01,
        patience=0,
        progress=False,
        device="cpu",
        seed=0,
    )
    return Retriever(**{**base, **kw})


class TestRetriever(RecommenderTestMixin):
    def make_model(self):
        return small()


class TestRetrieverAttentionUserIdNegatives(RecommenderTestMixin):
    """Every option at once: attention pooling, user ids, own input table, sampled negatives."""

    def make_model(self):
        return small(
            pooling="attention",
            user_embedding=True,
            tie_embeddings=False,
            negatives="popularity",
            n_negatives=16,
            history_dropout=0.1,
            item_id_dropout=0.05,
            similarity="dot",
            temperature=1.0,
        )


@pytest.fixture(scope="module")
def board():
    return checkerboard(n_groups=4, users_per_group=25, items_per_group=8, seed=3)


def planted_matrix(seed=0, n_users=300, n_items=160, n_interactions=9_000):
    log = planted_communities(
        n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed
    )
    users, items = log["user_id"].to_numpy(), log["item_id"].to_numpy()
    m = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), (n_users, n_items))
    m.data[:] = 1.0
    comm = np.zeros(n_users, np.int64)
    comm[users] = log["community"].to_numpy()
    return m, comm, np.arange(n_items) % 8


def test_learns_planted_communities():
    """The default towers, temperature and tied tables learn the planted communities.

    What identifies a community is the PMI p(i|u) / p(i), which plain in-batch InfoNCE estimates
    (in-batch negatives arrive in proportion to popularity; ``objective="interaction"``). Its logQ
    correction (best on MovieLens) makes the model estimate p(i|u) itself instead, and the exact
    p(i|u) of this generator puts popular out-of-community items above the rare in-community
    items a user has not seen yet: its own top-10 is only 0.79 in-community, the PMI's 0.89. So
    the community check runs without the correction; a second model, the user-level catalogue
    softmax (``objective="user"``), checks what estimating p(i|u) does.

    There is no validation set to stop early on, so training runs all 30 epochs. The default
    history dropout keeps the user tower serving short histories: the brand-new 4-item users
    below look nothing like the ~15-item training histories, and without dropout they get ~50 %
    in-community lists after 30 epochs (the untied, tau = 0.1 model of earlier defaults fell
    from 0.84 at epoch 3 to 0.62 at epoch 15 on the training users too).
    """
    train, user_comm, item_comm = planted_matrix()
    pmi = dict(objective="interaction", logq_correction=False)  # in-batch InfoNCE estimates PMI
    model = small(epochs=30, batch_size=256, embedding_size=32, **pmi).fit(train)
    items, _ = model.recommend(train, n=10)
    in_comm = (item_comm[items] == user_comm[:, None]).mean()
    pop, _ = Popularity().fit(train).recommend(train, n=10)
    pop_in = (item_comm[pop] == user_comm[:, None]).mean()
    # 80 % of the planted events are in-community; popularity ignores communities (~1/8)
    assert in_comm >= 0.8 and pop_in < 0.3, (in_comm, pop_in)
    # the user-level catalogue softmax (like logQ-corrected InfoNCE) estimates p(i|u)
    # itself: the lists still follow the communities, and they move towards popular items, as
    # ranking by p(i|u) rather than p(i|u) / p(i) should
    corrected = small(objective="user", epochs=30, batch_size=32, embedding_size=32).fit(train)
    c_items, _ = corrected.recommend(train, n=10)
    counts = np.asarray(train.getnnz(axis=0))
    assert (item_comm[c_items] == user_comm[:, None]).mean() >= 0.5
    assert counts[c_items].mean() > 1.5 * counts[items].mean()
    # a brand-new user with 4 items of community c is served community-c items, no retraining
    rng = np.random.default_rng(0)
    for c in range(8):
        pool = np.flatnonzero(item_comm == c)
        hist = sp.csr_matrix(
            (np.ones(4, np.float32), ([0] * 4, rng.choice(pool, 4, replace=False))),
            shape=(1, train.shape[1]),
        )
        new, _ = model.recommend(hist, n=5, users=np.array([-1]))
        assert (item_comm[new[0]] == c).mean() >= 0.8, (c, new)


def test_fold_in_equals_training_row_without_user_ids(board):
    model = small().fit(board.train)
    ref_items, ref_en = model.recommend(board.train, n=5, users=np.arange(100))
    for u in (0, 37, 99):
        items, en = model.recommend(board.train[[u]], n=5, users=np.array([-1]))
        np.testing.assert_array_equal(items[0], ref_items[u])
        np.testing.assert_allclose(en[0], ref_en[u], rtol=1e-5)
    # with a user-id embedding the known user's row differs from the same history as a new user
    with_ids = small(user_embedding=True, user_id_dropout=0.2).fit(board.train)
    known = with_ids.energies(board.train[:5], users=np.arange(5))
    new = with_ids.energies(board.train[:5], users=np.full(5, -1))
    assert not np.allclose(known, new)
    np.testing.assert_allclose(new, with_ids.energies(board.train[:5]), rtol=1e-6)


def test_seed_changes_the_model(board):
    a = small(seed=0, epochs=3).fit(board.train).energies(board.train)
    b = small(seed=1, epochs=3).fit(board.train).energies(board.train)
    assert not np.allclose(a, b)


def test_encode_users_item_embeddings_and_energy_agree(board):
    model = small(epochs=5).fit(board.train)
    u = model.encode_users(board.train[:7])
    v = model.item_embeddings()
    assert u.shape == (7, 16) and v.shape == (32, 16)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1, rtol=1e-5)  # cosine: unit norm
    b = model.item_biases()
    assert b.shape == (32,) and np.abs(b).max() > 0  # trained log-priors (item_bias default)
    np.testing.assert_allclose(
        -(u @ v.T) / model.temperature - b, model.energies(board.train[:7]), rtol=1e-4, atol=1e-4
    )
    exact = model.retrieve(board.train, 6)
    items, _ = model.recommend(board.train, n=6)
    np.testing.assert_array_equal(exact, items)


def test_early_stopping_keeps_best_epoch(board):
    seen = []
    model = small(epochs=25, patience=3, learning_rate=0.03).fit(
        board.train, board.test, callback=lambda e, m: seen.append((e, m))
    )
    hist = model.fit_info["history"]
    assert len(seen) == len(hist) <= 25
    for key in ("loss", "temperature", "epoch_seconds"):
        assert np.isfinite(hist[0][key])
    scored = [h for h in hist if "valid_ndcg@10" in h]  # validated after every epoch
    assert len(scored) == len(hist) and np.isfinite(scored[0]["valid_ndcg@10"])
    assert hist[-1]["loss"] < hist[0]["loss"]
    best = max(h["valid_ndcg@10"] for h in scored)
    assert model.fit_info["best_valid_ndcg@10"] == best
    again = evaluate_ranking(model, board.train, board.test, (10,))["ndcg@10"]
    assert again == pytest.approx(best, abs=1e-6)


def test_validate_every_two_validates_odd_epochs_and_the_last(board):
    model = small(epochs=6, patience=0, validate_every=2).fit(board.train, board.test)
    hist = model.fit_info["history"]
    assert [h["epoch"] for h in hist if "valid_ndcg@10" in h] == [1, 3, 5]
    assert model.fit_info["best_epoch"] in (1, 3, 5)
    with pytest.raises(ConfigError, match="validate_every"):
        small(validate_every=0)


def test_checkpoint_resume_equals_uninterrupted(board, tmp_path):
    kw = dict(epochs=6, negatives="uniform", n_negatives=8, history_dropout=0.2)
    kw.update(user_embedding=True, item_id_dropout=0.1)
    ref = small(**kw).fit(board.train, board.test)

    ckpt = str(tmp_path / "ckpt")
    resumed = resumed_after_stop(lambda **c: small(**kw, **c), board.train, board.test, ckpt, 2)
    for (name, a), (_, b) in zip(
        ref.net.state_dict().items(), resumed.net.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    assert [h["loss"] for h in resumed.fit_info["history"]] == pytest.approx(
        [h["loss"] for h in ref.fit_info["history"]]
    )
    # another config must not silently resume from this checkpoint
    with pytest.raises(ValueError, match="checkpoint_dir"):
        small(**{**kw, "learning_rate": 0.5}, checkpoint_dir=ckpt).fit(board.train)


def test_saved_model_loads_on_cpu(board, tmp_path):
    model = small(device="auto", epochs=3).fit(board.train)
    model.save(tmp_path / "m")
    loaded = Retriever.load(tmp_path / "m", device="cpu")
    assert loaded.net.id_emb.device.type == "cpu"
    np.testing.assert_allclose(loaded.energies(board.train), model.energies(board.train), rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trained_model_loads_on_cpu(board, tmp_path):
    model = small(device="cuda", epochs=5).fit(board.train)
    model.save(tmp_path / "m")
    loaded = Retriever.load(tmp_path / "m", device="cpu")
    np.testing.assert_allclose(
        loaded.energies(board.train), model.energies(board.train), rtol=1e-3, atol=1e-3
    )


class _Data:
    """The Dataset attributes fit_dataset reads, around a planted-community matrix."""

    def __init__(self, train, genres):
        self.train, self.valid = train, None
        self.n_items = train.shape[1]
        self.item_ids = np.array([f"m{i}" for i in range(self.n_items)], dtype=object)
        self.user_ids = np.arange(train.shape[0]).astype(object)
        self.item_metadata = pl.DataFrame(
            {"item_id": [f"m{i}" for i in range(self.n_items)] + ["gone"], "genres": genres}
        )

    def item_index(self, raw):
        lookup = {r: i for i, r in enumerate(self.item_ids)}
        return np.array([lookup.get(r, -1) for r in raw])


def test_metadata_and_cold_items(tmp_path):
    train, _, item_comm = planted_matrix(n_items=40, n_interactions=2_000)
    train = train.tolil()
    train[:, [38, 39]] = 0  # two cold items: no training interaction
    train = train.tocsr()
    train.eliminate_zeros()
    genres = [[f"g{c}", "all"] for c in item_comm] + [["unused"]]
    genres[39] = ["g0"]
    data = _Data(train, genres)
    feats, names = genre_features(data)
    assert names == sorted({"all", "unused"} | {f"g{c}" for c in range(8)})
    np.testing.assert_allclose(feats.sum(axis=1), 1.0)
    model = small(epochs=5).fit_dataset(data)
    assert model.genres == names
    v = model.item_embeddings()
    # cold items share the OOV id row; their genres (different here) still tell them apart
    assert not np.allclose(v[38], v[39])
    plain = small(epochs=5).fit(train)
    vp = plain.item_embeddings()
    np.testing.assert_allclose(vp[38], vp[39])
    path = model.save(tmp_path / "m")
    loaded = Retriever.load(path)
    assert loaded.genres == names
    np.testing.assert_allclose(loaded.energies(train), model.energies(train), rtol=1e-5)


def test_bad_input_is_named(board):
    model = small(epochs=2).fit(board.train)
    with pytest.raises(ValueError, match="histories"):
        model.encode_users(sp.csr_matrix((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="n_candidates"):
        model.retrieve(board.train, 0)
    with pytest.raises(TypeError, match="train"):
        small().fit(np.ones((3, 4)))
    with pytest.raises(ValueError, match="train"):
        small().fit(sp.csr_matrix((3, 4), dtype=np.float32))
    ids = small(epochs=2, user_embedding=True).fit(board.train)
    with pytest.raises(ValueError, match="users"):
        ids.recommend(board.train[:2], n=3, users=np.array([0, 100]))
    with pytest.raises(ConfigError, match="temperature"):
        Retriever(temperature=5.0)
    with pytest.raises(ConfigError, match="n_negatives"):
        Retriever(negatives="uniform")
    with pytest.raises(ConfigError, match="pooling"):
        Retriever(pooling="max")


def test_histories_from_raw_ids_unknown_items(board):
    model = small(epochs=2).fit(board.train)
    model.item_ids = np.array([f"i{i}" for i in range(32)], dtype=object)
    with pytest.warns(DataWarning, match="1 item id"):
        hist = model.histories_from_ids([["i0", "i1", "nope"], []])
    assert hist.shape == (2, 32) and list(hist[0].indices) == [0, 1] and hist[1].nnz == 0
    with pytest.raises(ValueError, match="unknown"):
        model.histories_from_ids([["nope"]], on_unknown="raise")
    items, en = model.recommend(hist, n=3)  # the empty row is served by the fallback vector
    assert (items >= 0).all() and np.isfinite(en).all()


def test_training_input_holds_out_the_positive_and_drops_by_seed():
    rng = np.random.default_rng(0)
    dense = rng.random((40, 30)) < 0.3
    dense[:, 0] = True  # every user has an item to hold out
    train = sp.csr_matrix(dense.astype(np.float32))
    users = rng.permutation(40)[:25]
    held = np.array([rng.choice(np.flatnonzero(dense[u])) for u in users])
    full = batch_history(train, users, held, 0.0, torch.Generator().manual_seed(0)).toarray()
    want = dense[users].copy()
    want[np.arange(25), held] = False  # leave-one-out: the positive is never in its own input
    np.testing.assert_array_equal(full > 0, want)

    def dropped(seed):
        return batch_history(train, users, held, 0.5, torch.Generator().manual_seed(seed))

    a, b = dropped(1).toarray() > 0, dropped(1).toarray() > 0
    np.testing.assert_array_equal(a, b)  # the seeded generator decides every drop
    assert not (a & ~want).any()  # dropout only removes items
    assert 0.4 < a.sum() / want.sum() < 0.6
    assert not np.array_equal(a, dropped(2).toarray() > 0)


def test_ann_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with pytest.raises(ImportError, match=r"recsys-ebm\[ann\]"):
        ItemIndex(np.ones((3, 2), np.float32))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_ann_index_matches_exact_search(board, kind):
    pytest.importorskip("faiss")
    model = small(epochs=5).fit(board.train)
    exact = model.retrieve(board.train, 6)  # exact search: the reference
    approx = model.retrieve(board.train, 6, index=model.build_index(kind))
    assert approx.shape == exact.shape and (approx >= 0).all()
    for u in range(board.train.shape[0]):
        assert not set(approx[u]) & set(board.train[u].indices)  # seen items skipped
    en = model.energies(board.train)
    # same energies in the same order (ties between near-equal items may swap ids)
    np.testing.assert_allclose(
        np.take_along_axis(en, approx, 1), np.take_along_axis(en, exact, 1), atol=1e-4
    )
    with pytest.raises(ValueError, match="n_candidates"):
        model.retrieve(board.train, 0, index=model.build_index(kind))


def test_huge_learning_rate_is_refused_before_anything_is_saved(board):
    """lr 1e9 once gave weights of ~1e9: finite, but cosine similarity squares them, the norms
    overflow to inf and every vector normalised to 0, so a model of all-zero energies (everyone
    got items 1-5) was saved with exit 0. The per-step weight guard stops it at step 1."""
    with pytest.raises(
        DivergenceError, match=r"Retriever diverged at epoch 1, step 1: .*lower learning_rate"
    ):
        small(learning_rate=1e9, epochs=1).fit(board.train)


def test_nan_learning_rate_is_refused():
    with pytest.raises(ConfigError, match=r"RetrieverConfig\.learning_rate: expected a finite"):
        small(learning_rate=float("nan"))


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_native_bf16_follows_the_cpu_flags():
    from recsys_ebm.device import native_bf16

    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    expected = bool({"avx512_bf16", "amx_tile"} & flags)
    assert native_bf16(torch.device("cpu")) is expected
    assert native_bf16(torch.device("meta")) is False


def test_mixed_precision_training_matches_fp32(board):
    """bf16 autocast (used where the CPU multiplies bf16 natively; elsewhere both fits below are
    the same fp32 computation): one Adam step agrees with fp32's to bf16 precision, and a longer
    fit learns the planted blocks as well."""
    from recsys_ebm.device import native_bf16

    one = dict(epochs=1, objective="user", batch_size=256)  # 100 users: one step
    fp32 = small(mixed_precision=False, **one).fit(board.train)
    mixed = small(mixed_precision=True, **one).fit(board.train)
    a, b = fp32.net.id_emb.detach(), mixed.net.id_emb.detach()
    assert fp32.fit_info["history"][0]["loss"] == pytest.approx(
        mixed.fit_info["history"][0]["loss"], rel=1e-2
    )
    if native_bf16(torch.device("cpu")):
        assert not torch.equal(a, b)  # bf16 products really ran
        # Adam's first step is +-lr per weight: a gradient near 0 may flip sign (2 lr apart)
        torch.testing.assert_close(a, b, rtol=0, atol=2 * 0.01 + 1e-4)
        assert float(((a - b).abs() > 1e-3).float().mean()) < 0.05
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    longer = dict(epochs=8, objective="user", batch_size=32)
    for mp in (False, True):
        m = small(mixed_precision=mp, **longer).fit(board.train)
        assert evaluate_ranking(m, board.train, board.test, (10,))["ndcg@10"] > 0.9


def _zipf_matrix(n_users=200, n_items=40, per_user=8, seed=0):
    """Histories drawn from a Zipf popularity over the items and nothing else."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    rows, cols = [], []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False, p=p)
        rows += [u] * per_user
        cols += list(items)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))


def test_item_bias_learns_the_popularity_prior():
    """With histories that carry nothing but popularity, the learned log-priors b_i follow the
    items' log counts; without item_bias they are all zero."""
    x = _zipf_matrix()
    m = small(epochs=20).fit(x)
    b = m.item_biases()
    counts = np.asarray(x.getnnz(axis=0), np.float64)
    assert np.corrcoef(b, np.log1p(counts))[0, 1] > 0.5  # 0.72 measured
    assert b[:5].mean() > b[-5:].mean() + 0.1  # the 5 most popular items above the 5 rarest
    off = small(epochs=2, init="random", item_bias=False).fit(x)
    assert not off.item_biases().any() and off.net.item_bias is None


def test_a_saved_retriever_without_item_bias_still_loads(tmp_path, board):
    """Model directories written before ``item_bias`` existed (no tensor, no config key) load
    as bias-free models with the same energies."""
    import json

    m = small(epochs=2, item_bias=False).fit(board.train)
    m.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["config"].pop("item_bias")
    meta_path.write_text(json.dumps(meta))
    back = Retriever.load(tmp_path / "m", device="cpu")
    assert back.config.item_bias is False
    np.testing.assert_allclose(back.energies(board.train), m.energies(board.train), atol=1e-6)
