"""The retriever's spectral initialisation (models/_spectral.py): the randomised SVD against a
dense SVD, its normalisation, cold items, the caller's matrix and generator, and the retriever
starting from it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.models._spectral import spectral_item_vectors
from recsys_ebm.models.retriever import Retriever


def low_rank_binary(n_users=60, n_items=40, rank=4, seed=0):
    """(U, I) binary matrix of ``rank`` disjoint blocks (rank exactly ``rank``), item 0 cold."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, rank, n_users)
    items = np.arange(n_items) % rank
    m = (users[:, None] == items[None, :]).astype(np.float32)
    m[:, 0] = 0.0  # a cold item
    return sp.csr_matrix(m)


def projector(v):
    q, _ = np.linalg.qr(v)
    return q @ q.T


def test_spans_the_top_singular_subspace_of_the_normalised_matrix():
    x = sp.random(80, 50, density=0.2, random_state=1, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    k = 6
    counts = np.asarray(x.sum(0)).ravel()
    dense = x.toarray() / np.sqrt(np.maximum(counts, 1.0))  # X D^{-1/2}
    _, s, vt = np.linalg.svd(dense.astype(np.float64))
    v = spectral_item_vectors(x, k, torch.Generator().manual_seed(0), power_iters=6).numpy()
    assert v.shape == (50, k)
    # the same subspace as the exact top-k right singular vectors (gap s_k / s_k+1 > 1)
    assert s[k - 1] > s[k]
    np.testing.assert_allclose(projector(v), projector(vt[:k].T), atol=2e-3)
    # orthogonal columns of equal norm, rescaled so the mean non-zero row norm is 1
    gram = v.T @ v
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(k), atol=1e-4)
    norms = np.linalg.norm(v, axis=1)
    assert norms[norms > 0].mean() == pytest.approx(1.0, rel=1e-5)


def test_exact_for_a_low_rank_matrix_cold_items_and_padding():
    x = low_rank_binary(rank=4)
    v = spectral_item_vectors(x, 8, torch.Generator().manual_seed(3), oversample=0).numpy()
    assert v.shape == (40, 8)
    np.testing.assert_array_equal(v[0], 0.0)  # the cold item
    # rank 4: the block indicators' span is recovered; the other 4 directions are 0 singular
    # values, so each item's vector lies in its block's direction plus nothing from the others
    blocks = np.arange(40) % 4
    top = v[:, :4]
    for a in range(4):
        rows = top[(blocks == a) & (np.arange(40) > 0)]
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape), atol=1e-5)
    # k = min(dim, U, I): a catalogue of 3 items gives 3 columns and zero padding
    small = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32))
    w = spectral_item_vectors(small, 5, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(w[:, 3:], 0.0)
    assert np.abs(w[:, :3]).sum() > 0


def test_seeded_by_the_generator_and_the_input_left_unchanged():
    x = sp.random(70, 30, density=0.3, random_state=2, format="csr", dtype=np.float32)
    x.data[:] = 3.0  # counts: the binary pattern is what counts
    before = x.copy()
    a = spectral_item_vectors(x, 5, torch.Generator().manual_seed(0))
    b = spectral_item_vectors(x, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    ones = x.copy()
    ones.data[:] = 1.0
    c = spectral_item_vectors(ones, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, c)
    assert (x != before).nnz == 0
    g = torch.Generator().manual_seed(0)
    spectral_item_vectors(x, 5, g)
    assert not torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())


def test_empty_matrix_and_bad_arguments():
    empty = sp.csr_matrix((5, 7), dtype=np.float32)
    v = spectral_item_vectors(empty, 4, torch.Generator().manual_seed(0))
    assert v.shape == (7, 4) and not v.any()
    with pytest.raises(ValueError, match="dim"):
        spectral_item_vectors(empty, 0, torch.Generator())
    with pytest.raises(ValueError, match="power_iters"):
        spectral_item_vectors(empty, 2, torch.Generator(), power_iters=-1)


def test_retriever_starts_from_the_spectral_vectors_and_random_is_kept():
    train = checkerboard(n_groups=4, users_per_group=10, items_per_group=6).train  # (40, 24)
    kw = dict(epochs=1, progress=False, device="cpu", use_metadata=False, embedding_size=4)
    # a tiny learning rate: after one epoch the table is still its initialisation
    spectral = Retriever(**kw, learning_rate=1e-9).fit(train)
    got = spectral.net.id_emb.detach()[:24].double().numpy()  # (I, 4)
    expect = spectral_item_vectors(train, 4, torch.Generator().manual_seed(5)).double().numpy()
    # 4 blocks: rank 4 with a clear gap, so any seed gives the same subspace
    np.testing.assert_allclose(projector(got), projector(expect), atol=1e-4)
    norms = np.linalg.norm(got, axis=1)
    assert norms.mean() == pytest.approx(1.0, rel=1e-4)
    random = Retriever(**kw, learning_rate=1e-9, init="random").fit(train)
    other = random.net.id_emb.detach()[:24].double().numpy()
    assert np.abs(projector(other) - projector(expect)).max() > 0.1
    with pytest.raises(ValueError, match="init"):
        Retriever(init="svd")
