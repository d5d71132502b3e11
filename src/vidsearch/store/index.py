"""Top-k inner-product search over L2-normalised float32 vectors: exact (one matrix product) or FAISS.

`index_for(store)` builds the index once per store version and array, and caches it.
FAISS (`pip install 'vidsearch[ann]'`, package faiss-cpu) is optional and imported only when asked for:
HNSW below `IVF_MIN_ROWS` vectors (no training, high recall), IVF-flat above it (fast to build at millions;
√N lists, 1/32 of them probed: recall ≥ 0.95 needs vectors that cluster, as real video features do — on vectors
uniform on the sphere no IVF setting is much faster than exact search).
"auto" picks exact search below `FAISS_MIN_ROWS` vectors, where a matrix product costs well under a millisecond per
thousand vectors, and FAISS above it when FAISS is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import threading
from collections import OrderedDict
from typing import Any, Literal, Protocol

import numpy as np

from vidsearch.store.store import Store

logger = logging.getLogger(__name__)

IndexKind = Literal["auto", "exact", "faiss"]
FAISS_MIN_ROWS = 100_000
IVF_MIN_ROWS = 200_000
IVF_MIN_PROBES = 16
IVF_PROBE_FRACTION = 32  # 1 M clustered vectors: 1000 lists, 31 probed → recall@10 0.98, ≈ 8 ms a query
HNSW_M = 32
HNSW_EF_SEARCH = 256  # 10 k clustered vectors: recall@10 0.91 at 128, 0.96 at 200, 0.996 at 400
_CACHE_SIZE = 4
_blas_controller: Any = None


class VectorIndex(Protocol):
    kind: str

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row indices [Q, min(k, N)], best first."""
        ...


def l2_normalised(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (returned as is, without a copy, when they already are)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.allclose(norms, 1.0, atol=1e-3):
        return vectors
    return vectors / np.maximum(norms, 1e-12)


class ExactIndex:
    """Brute force: scores = queries · vectorsᵀ, then `np.argpartition`; ties broken by row index."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray):
        self.vectors = l2_normalised(vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with _one_blas_thread() if len(queries) == 1 else contextlib.nullcontext():
            scores = queries @ self.vectors.T
        k = min(k, scores.shape[1])
        rows = [_top_k(row, k) for row in scores]
        ids = np.array(rows, dtype=np.int64).reshape(len(scores), k)
        return np.take_along_axis(scores, ids, axis=1), ids


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS limited to one thread. One query is a matrix-vector product bound by memory bandwidth: a second OpenBLAS
    thread gains little, and it busy-waits after the call, taking a core from the next query's text encoding
    (measured on 2 busy cores: 10 k rows 8 ms → 1 ms, and the next encoding 61 → 33 ms)."""
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first, lower index first among equal scores."""
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k < len(scores):
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        candidates = np.flatnonzero(scores >= kth)  # every tie of the k-th score, in index order
    else:
        candidates = np.arange(len(scores))
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order[:k]]


class FaissIndex:
    """Approximate inner-product search with FAISS: HNSW for moderate sizes, IVF-flat for large ones."""

    def __init__(self, vectors: np.ndarray):
        faiss = _import_faiss()
        vectors = np.ascontiguousarray(l2_normalised(vectors))
        self._size = len(vectors)
        self.index, self.kind = _build_faiss(faiss, vectors)

    def __len__(self) -> int:
        return self._size

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self._size)
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * k)
        scores, ids = self.index.search(queries, k)
        return scores, ids.astype(np.int64)


def _build_faiss(faiss: Any, vectors: np.ndarray) -> tuple[Any, str]:
    dim = vectors.shape[1]
    if len(vectors) < IVF_MIN_ROWS:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        kind = "faiss-hnsw"
    else:
        nlist = int(math.sqrt(len(vectors)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 64 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = max(IVF_MIN_PROBES, nlist // IVF_PROBE_FRACTION)
        kind = "faiss-ivf"
    index.add(vectors)
    logger.info("built a %s index over %d vectors", kind, len(vectors))
    return index, kind


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise ImportError("approximate search needs FAISS, an optional dependency: "
                          "pip install 'vidsearch[ann]' (package faiss-cpu), or search with index='exact'") from error
    return faiss


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def build_index(vectors: np.ndarray, kind: IndexKind = "auto") -> VectorIndex:
    """An index over `vectors` [N, D]; "auto" = exact below FAISS_MIN_ROWS rows or without FAISS, else FAISS."""
    if kind == "auto":
        kind = "faiss" if len(vectors) >= FAISS_MIN_ROWS and faiss_available() else "exact"
    if kind == "exact":
        return ExactIndex(vectors)
    if kind == "faiss":
        return FaissIndex(vectors)
    raise ValueError(f"index kind {kind!r}: one of auto, exact, faiss")


_cache: OrderedDict[tuple[str, int, str, str], VectorIndex] = OrderedDict()
_cache_lock = threading.Lock()


def index_for(store: Store, array: str = "video_feature", kind: IndexKind = "auto") -> VectorIndex:
    """The index over `store.array(array)`, built once per store version (a few most recent ones are kept)."""
    key = (str(store.path.resolve()), store.version, array, kind)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    # Built outside the lock: searches of other versions go on meanwhile (two threads may build the same one once).
    index = build_index(store.array(array), kind)
    with _cache_lock:
        index = _cache.setdefault(key, index)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return index
