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
