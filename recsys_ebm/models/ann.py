"""Optional approximate nearest-neighbour candidate retrieval over item vectors (faiss).

The retriever's energy is E(u, i) = -(u . v_i) / tau with tau > 0, so the lowest-energy items are
the largest inner products: a maximum-inner-product index over the item vectors returns them
(for cosine similarity the vectors are unit-norm, so inner product = cosine). Exact search
(:meth:`Retriever.retrieve` without an index) stays the default and the reference.

Install with ``pip install recsys-ebm[ann]`` (faiss-cpu). Index kinds:
* ``"flat"``: exact inner-product search (faiss ``IndexFlatIP``), for checking;
* ``"hnsw"``: HNSW graph (Malkov & Yashunin, TPAMI 2018), ``hnsw_m`` links, ``ef_search`` beam;
* ``"ivf"``: inverted file over ``nlist`` k-means cells, ``nprobe`` cells searched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["ItemIndex", "faiss_available"]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ItemIndex needs faiss: pip install 'recsys-ebm[ann]' (faiss-cpu)"
        ) from exc
    return faiss


class ItemIndex:
    """Maximum-inner-product index over (I, D) item vectors.

    Args:
        item_vectors: (I, D) float array (row i = item index i).
        kind: "flat", "hnsw" or "ivf".
        hnsw_m: HNSW links per node.
        ef_construction, ef_search: HNSW beam widths at build and query time.
        nlist, nprobe: IVF cells and cells probed (nlist defaults to ~sqrt(I)).
        seed: k-means seed for IVF training.

    Raises:
        ValueError: bad ``kind`` or a non-2-D / empty ``item_vectors``.
    """

    def __init__(
        self,
        item_vectors: np.ndarray,
        *,
        kind: str = "hnsw",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        nlist: int | None = None,
        nprobe: int = 16,
        seed: int = 0,
    ) -> None:
        faiss = _faiss()
        vecs = np.ascontiguousarray(np.asarray(item_vectors, dtype=np.float32))
        if vecs.ndim != 2 or vecs.shape[0] == 0:
            raise ValueError(f"item_vectors: expected a non-empty (I, D) array, got {vecs.shape}")
        n, d = vecs.shape
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = nlist or max(1, int(np.sqrt(n)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(vecs)
            index.nprobe = nprobe
        else:
            raise ValueError(f"kind: expected 'flat', 'hnsw' or 'ivf', got {kind!r}")
        index.add(vecs)
        self.kind, self.n_items, self.dim, self.index = kind, n, d, index

    def search(
        self, queries: np.ndarray, k: int, *, seen: sp.csr_matrix | None = None
    ) -> np.ndarray:
        """(U, k) int64 item indices with the largest inner product, best first.

        ``seen`` (U, I) CSR items are skipped (the search over-fetches by the longest row);
        rows with fewer than ``k`` results are padded with -1.
        """
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries: expected (U, {self.dim}), got {q.shape}")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        extra = 0
        if seen is not None:
            if seen.shape != (q.shape[0], self.n_items):
                raise ValueError(
                    f"seen: expected shape {(q.shape[0], self.n_items)}, got {seen.shape}"
                )
            extra = int(seen.getnnz(axis=1).max()) if seen.shape[0] else 0
        fetch = min(self.n_items, k + extra)
        _, ids = self.index.search(q, fetch)  # (U, fetch), -1 where the index has fewer
        out = np.full((q.shape[0], k), -1, dtype=np.int64)
        for r in range(q.shape[0]):
            row = ids[r][ids[r] >= 0]
            if seen is not None:
                row = row[~np.isin(row, seen.indices[seen.indptr[r] : seen.indptr[r + 1]])]
            row = row[:k]
            out[r, : len(row)] = row
        return out
