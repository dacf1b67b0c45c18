"""Same seed, same retriever, however many threads torch runs (issue: 478 of 943 ML-100K users got
different top-20 lists from two runs with one seed). The cause was advanced indexing
(``table[idx]``): its backward, ``index_put_(accumulate=True)``, adds gradients in thread order on
the CPU. Row lookups now go through ``F.embedding``, whose backward has a fixed order."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.models._retriever_towers import lookup
from recsys_ebm.models.retriever import Retriever


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _lookup_grad(table_rows: int, dim: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(table_rows, dim, generator=g).requires_grad_()
    idx = torch.randint(0, table_rows, (n,), generator=g)
    weight = torch.randn(n, dim, generator=g)
    (lookup(table, idx) * weight).sum().backward()
    return table.grad


def test_lookup_backward_is_bitwise_reproducible_on_two_threads(two_threads):
    # ML-100K-sized: 1,683 rows (items + OOV) of 128; table[idx] differed in ~half the repeats
    ref = _lookup_grad(1683, 128, 1682)
    for _ in range(8):
        assert torch.equal(ref, _lookup_grad(1683, 128, 1682))


def test_lookup_equals_indexing():
    g = torch.Generator().manual_seed(1)
    table = torch.randn(50, 7, generator=g)
    idx = torch.randint(0, 50, (80,), generator=g)
    assert torch.equal(lookup(table, idx), table[idx])


def test_two_fits_with_one_seed_on_two_threads_are_identical(two_threads):
    m = sp.random(150, 1200, density=0.02, random_state=1, format="csr", dtype=np.float32)
    m.data[:] = 1.0

    def fit() -> dict[str, torch.Tensor]:
        r = Retriever(
            embedding_size=64,
            n_hidden=32,
            epochs=1,
            batch_size=512,
            patience=0,
            progress=False,
            device="cpu",
            seed=3,
        )
        return {k: v.clone() for k, v in r.fit(m).net.state_dict().items()}

    a, b = fit(), fit()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_and_two_threads_give_the_same_bits():
    """The README's claim: bit-identical for any number of CPU threads, with the defaults (the
    spectral start, whose QR / SVD run on one thread; bf16 autocast where the CPU has it)."""
    m = sp.random(200, 900, density=0.03, random_state=2, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    before = torch.get_num_threads()
    fits = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            r = Retriever(embedding_size=32, n_hidden=16, epochs=2, batch_size=64, patience=0,
                          progress=False, device="cpu", seed=4).fit(m)
            fits.append({k: v.clone() for k, v in r.net.state_dict().items()})
            assert torch.get_num_threads() == threads  # the spectral start restored it
    finally:
        torch.set_num_threads(before)
    a, b = fits
    assert all(torch.equal(a[k], b[k]) for k in a)
