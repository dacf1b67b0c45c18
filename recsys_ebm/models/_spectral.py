"""Spectral item vectors: the retriever's item-embedding initialisation (``init="spectral"``).

The item vectors start as the top-D right singular vectors of the column-normalised binary
training matrix X D_I^{-1/2} (D_I: the items' interaction counts), i.e. the leading eigenvectors
of the normalised item co-occurrence matrix D_I^{-1/2} X^T X D_I^{-1/2}. Scoring a history x by
x V V^T with them is the low-rank "ideal low-pass filter" of graph-filtering collaborative
filtering (Shen et al., "How Powerful is Graph Convolution for Recommendation?", CIKM 2021;
PureSVD, Cremonesi et al., RecSys 2010, without the normalisation), a training-free ranker in
itself, so training starts from a sensible energy landscape instead of noise: on ML-100K the
early-stopped fit peaked after 28 / 17 epochs (seeds 0 / 1) instead of 55 / 45, at validation
NDCG@10 that ties (benchmarks/README.md, "Retriever: the spectral start"). The normalisation
keeps the most popular items from taking the leading directions (PureSVD's V is mostly
popularity).

The SVD is randomised (Halko, Martinsson & Tropp, SIAM Review 2011, algorithms 4.4 and 5.1):
a Gaussian test matrix from the caller's generator, ``power_iters`` subspace iterations with a
QR after each, then the SVD of the small projected matrix. Cost: (2 + 2 * power_iters) sparse
products with (I, D + oversample) dense blocks, no (I, I) matrix, so it scales with nnz.

Same seed, same vectors, however many threads torch runs: the sparse products sum each output
row in a fixed order, and the dense steps (QR, SVD, the final product), whose LAPACK / BLAS
kernels split their sums by thread count, run on one thread (:func:`_one_thread`; a few ms for
ML-100K, tens of ms for a 20,000-item catalogue).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.models._checks import csr_to_torch
from recsys_ebm.models._rbm_lateral import binary_rows

__all__ = ["spectral_item_vectors"]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 inside, restored after (LAPACK's QR gave other bits on
    two threads than on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spectral_item_vectors(
    train: sp.csr_matrix,
    dim: int,
    generator: torch.Generator,
    *,
    power_iters: int = 3,
    oversample: int = 16,
) -> torch.Tensor:
    """(I, dim) float32 item vectors from the (U, I) training matrix (module docstring).

    Rows are the top-k right singular vectors of X D_I^{-1/2} (k = min(dim, U, I); columns
    beyond k are 0), rescaled so that the mean norm of the non-zero rows is 1, as a Gaussian
    N(0, 1/dim) row's. Items without a training interaction get a zero row.
    Draws one (I, k + oversample) Gaussian block from ``generator``; the caller's matrix is not
    modified.
    """
    if dim < 1:
        raise ValueError(f"dim: expected a positive int, got {dim!r}")
    if power_iters < 0 or oversample < 0:
        raise ValueError(
            f"power_iters/oversample: expected >= 0, got {power_iters}/{oversample}"
        )
    x = sp.csr_matrix(binary_rows(sp.csr_matrix(train)), dtype=np.float32, copy=True)  # (U, I)
    x.data[:] = 1.0  # binary_rows keeps positive values as they are
    n_users, n_items = x.shape
    counts = np.bincount(x.indices, minlength=n_items).astype(np.float64)  # (I,) per item
    scale = (1.0 / np.sqrt(np.maximum(counts, 1.0))).astype(np.float32)  # (I,)
    x.data *= scale[x.indices]  # X D_I^{-1/2}
    out = torch.zeros(n_items, dim)
    k = min(dim, n_users, n_items)
    if x.nnz == 0 or k == 0:
        return out
    r = min(k + oversample, n_users, n_items)
    cpu = torch.device("cpu")
    xs = csr_to_torch(x, cpu, binary=False)  # (U, I)
    xts = csr_to_torch(x.T.tocsr(), cpu, binary=False)  # (I, U)

    def gram(q: torch.Tensor) -> torch.Tensor:  # (I, r) -> (I, r): X^T X q
        return torch.sparse.mm(xts, torch.sparse.mm(xs, q))

    def orth(y: torch.Tensor) -> torch.Tensor:  # (I, r) orthonormal basis of y's columns
        with _one_thread():
            return torch.linalg.qr(y).Q

    q = orth(gram(torch.randn(n_items, r, generator=generator)))  # (I, r)
    for _ in range(power_iters):
        q = orth(gram(q))
    b = torch.sparse.mm(xs, q)  # (U, r): X q, whose right singular vectors rotate q
    with _one_thread():
        _, _, vh = torch.linalg.svd(b, full_matrices=False)  # (r, r), singular values descending
        v = q @ vh[:k].T  # (I, k) orthonormal columns
    v[torch.from_numpy(counts == 0)] = 0.0  # a rank-deficient QR can leave them non-zero
    norms = v.norm(dim=1)  # (I,)
    nz = norms > 0
    if bool(nz.any()):
        v = v / norms[nz].mean()
    out[:, :k] = v
    return out
