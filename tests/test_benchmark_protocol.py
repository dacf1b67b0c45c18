"""The quality benchmark's validation replica (``benchmarks/quality.py --on-valid``) never reads
test: its splits are the outer train, split again, and the outer validation split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks/quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["quality_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def _pairs(m) -> set[tuple[int, int]]:
    c = m.tocoo()
    return set(zip(c.row.tolist(), c.col.tolist(), strict=True))


def test_replica_is_the_outer_train_split_again_and_the_outer_valid(quality, tmp_path):
    log = planted_communities(n_users=120, n_items=60, n_interactions=4_000, seed=2)
    log.drop("community").write_parquet(tmp_path / "log.parquet")
    ds = prepare_dataset(tmp_path / "log.parquet", **quality.SPLIT)
    rep = quality.validation_replica(ds)

    train, valid, test = _pairs(rep.train), _pairs(rep.valid), _pairs(rep.test)
    assert train.isdisjoint(valid)
    assert train | valid == _pairs(ds.train)  # the outer train, split again
    assert test == _pairs(ds.valid)  # the outer validation split plays test
    assert not (train | valid | test) & _pairs(ds.test)  # outer test: nowhere
    assert _pairs(rep.history("test")) == _pairs(ds.train)

    # 1/8 of each user's training pairs held out (rounded), every user keeps training pairs
    n_train, n_valid = rep.train.getnnz(axis=1), rep.valid.getnnz(axis=1)
    outer = ds.train.getnnz(axis=1)
    np.testing.assert_array_equal(n_valid, np.minimum(np.floor(outer / 8 + 0.5), outer - 1))
    assert (n_train[outer > 0] >= 1).all()
    # seeded: the same replica twice, another one for another seed
    assert _pairs(quality.validation_replica(ds).valid) == valid
    assert _pairs(quality.validation_replica(ds, seed=1).valid) != valid


def test_product_of_experts_of_two_rbms_is_one_rbm_with_both_hidden_layers():
    """benchmarks/rbm_average.py --poe: the PoE's free energy is the sum of the two RBMs', so its
    energies (dF) are the sums of theirs."""
    import torch

    from recsys_ebm.data.synthetic import checkerboard
    from recsys_ebm.models.rbm import RBM

    spec = importlib.util.spec_from_file_location("rbm_average", ROOT / "benchmarks/rbm_average.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    board = checkerboard(seed=0)
    kw = dict(n_hidden=8, epochs=2, batch_size=16, progress=False, device="cpu")
    x, y = RBM(seed=0, **kw).fit(board.train), RBM(seed=1, **{**kw, "n_hidden": 5}).fit(board.train)
    poe = mod.product_of_experts(x, y)
    assert poe.parameters()["W"].shape == (board.train.shape[1], 13)
    assert poe.config.n_hidden == 13
    np.testing.assert_allclose(
        poe.free_energy(board.train),
        x.free_energy(board.train) + y.free_energy(board.train),
        rtol=1e-5,
        atol=1e-4,
    )
    hist = board.train[:7]
    torch.testing.assert_close(
        torch.as_tensor(poe.energies(hist)),
        torch.as_tensor(x.energies(hist) + y.energies(hist)),
        rtol=1e-5,
        atol=1e-4,
    )
    assert not np.allclose(x.energies(hist), y.energies(hist))  # two different experts
