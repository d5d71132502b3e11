"""Top-k inner-product search over L2-normalised float32 vectors: exact (one matrix product) or FAISS.

A store is searched segment by segment (`index_for(store)` → `StoreIndex`): a segment with a persisted index (built
by the store's writer, `build_persisted`) is searched through it, its top candidates re-ranked exactly from the
segment's float32 vectors; a smaller segment (or any, with kind "exact") by one matrix product; removed rows are
skipped and the segments' top-k merged. Nothing is built here at search time.

Persisted index: IVF over √N lists (k-means on a sample of 64 vectors a list) with 4-bit product-quantised codes of
one byte per 16 dimensions, searched by FAISS's SIMD fast scan; a quarter of the lists probed and the top
`RERANK_CANDIDATES` (or 2·k) re-ranked exactly. On the benchmark's clustered 512-d vectors this holds recall@10
≥ 0.95 (see docs/scaling.md) with 32 bytes a vector in memory; the float32 vectors stay on disk, memory-mapped.
FAISS (`pip install 'vidsearch[ann]'`, package faiss-cpu) is imported only when an index is built or read.

`build_index` (an in-memory index over any vectors: exact, HNSW or IVF-flat) is what search used before indexes were
persisted; the benchmarks compare against it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from vidsearch.store.store import Segment, Store

logger = logging.getLogger(__name__)

IndexKind = Literal["auto", "exact", "faiss"]
FAISS_MIN_ROWS = 100_000
IVF_MIN_ROWS = 200_000
IVF_MIN_PROBES = 16
IVF_PROBE_FRACTION = 32  # 1 M clustered vectors: 1000 lists, 31 probed → recall@10 0.98, ≈ 8 ms a query
HNSW_M = 32
HNSW_EF_SEARCH = 256  # 10 k clustered vectors: recall@10 0.91 at 128, 0.96 at 200, 0.996 at 400
_CACHE_SIZE = 4
RERANK_CANDIDATES = 1000  # 40 clusters of 64-d, 20 k rows: recall@10 0.52 re-ranking 200, 1.0 re-ranking 1000
PROBE_FRACTION = 4  # a persisted index probes 1/4 of its lists
TRAIN_PER_LIST = 64
_ADD_CHUNK = 100_000
_blas_controller: Any = None


class VectorIndex(Protocol):
    kind: str

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row indices [Q, min(k, N)], best first."""
        ...


UNIT_TOLERANCE = 1e-5  # |norm − 1| within which a float32 row counts as normalised


def l2_normalised(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (returned as is, without a copy, when they already are: to float32 rounding, which
    a normalised row's norm never strays from by 1e-5; a row 0.1% short would rank 0.1% low)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.allclose(norms, 1.0, rtol=0.0, atol=UNIT_TOLERANCE):
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


def build_persisted(vectors: np.ndarray) -> np.ndarray:
    """A segment's index over `vectors` [N, D] (rows L2-normalised here), serialised: FAISS's bytes as uint8."""
    faiss = _import_faiss()
    rows, dim = vectors.shape
    lists = max(1, int(math.sqrt(rows)))
    codes = f"PQ{dim // 8}x4fs" if dim % 16 == 0 else "SQ8"  # fast-scan PQ needs an even number of sub-vectors
    index = faiss.index_factory(dim, f"IVF{lists},{codes}", faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(np.random.default_rng(0).choice(rows, min(rows, TRAIN_PER_LIST * lists), replace=False))
    with _one_faiss_thread(faiss):
        index.train(np.ascontiguousarray(l2_normalised(vectors[sample])))
        for start in range(0, rows, _ADD_CHUNK):
            index.add(np.ascontiguousarray(l2_normalised(vectors[start:start + _ADD_CHUNK])))
    logger.info("built an IVF%d,%s index over %d vectors", lists, codes, rows)
    return faiss.serialize_index(index)


@contextlib.contextmanager
def _one_faiss_thread(faiss: Any) -> Iterator[None]:
    """FAISS on one OpenMP thread: on 2 busy cores its second thread made k-means 50× slower (spinning), and one
    query gains nothing from two."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def read_persisted(path: Path) -> Any:
    """A persisted index, read (memory-mapped where FAISS can) for searching only."""
    faiss = _import_faiss()
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    index.nprobe = min(index.nlist, max(IVF_MIN_PROBES, index.nlist // PROBE_FRACTION))
    return index


class StoreIndex:
    """Search of a store version, segment by segment (see the module docstring); rows are store positions."""

    def __init__(self, store: Store, array: str, exact: bool = False):
        self.segments = [s for s in store.segments if s.live_rows]
        self.array = array
        self.indexes = [None if exact else segment.index(array) for segment in self.segments]
        used = sum(index is not None for index in self.indexes)
        self.kind = "exact" if not used else "ivf-pq+rerank" if used == len(self.segments) else "ivf-pq+rerank+exact"
        self._size = sum(segment.live_rows for segment in self.segments)

    def __len__(self) -> int:
        return self._size

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = min(k, self._size)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        with _one_blas_thread():
            for number, query in enumerate(queries):
                self._search_one(query, k, scores[number], ids[number])
        return scores, ids

    def _search_one(self, query: np.ndarray, k: int, scores: np.ndarray, ids: np.ndarray) -> None:
        """Fill `scores`/`ids` [k] with the merged top-k of every segment."""
        found = [self._search_segment(segment, index, query, k) for segment, index in zip(self.segments, self.indexes)]
        if found:
            best_scores = np.concatenate([f[0] for f in found])
            best_ids = np.concatenate([f[1] for f in found])
            order = np.lexsort((best_ids, -best_scores))[:k]
            scores[:len(order)], ids[:len(order)] = best_scores[order], best_ids[order]

    def _search_segment(self, segment: Segment, index: Any, query: np.ndarray,
                        k: int) -> tuple[np.ndarray, np.ndarray]:
        """The segment's top-k live rows: scores and store positions."""
        vectors = segment.array(self.array)
        if index is None:
            scores = vectors @ query
            inverse = segment.data.inverse_norms(self.array)
            if inverse is not None:
                scores = scores * inverse
            scores[segment.dead] = -np.inf
            local = _top_k(scores, min(k, segment.live_rows))
            return scores[local], segment.positions(local)
        local = self._candidates(segment, index, query, k)
        candidates = vectors[local]  # sorted rows: read in file order from the memory map
        scores = candidates @ query / np.maximum(np.linalg.norm(candidates, axis=1), 1e-12)
        best = np.lexsort((local, -scores))[:k]
        return scores[best].astype(np.float32), segment.positions(local[best])

    @staticmethod
    def _candidates(segment: Segment, index: Any, query: np.ndarray, k: int) -> np.ndarray:
        """Sorted local rows of the index's top live candidates (at least RERANK_CANDIDATES, or 2·k)."""
        wanted = min(segment.live_rows, max(RERANK_CANDIDATES, 2 * k))
        fetch = min(segment.rows, wanted + len(segment.dead))
        while True:
            with _one_faiss_thread(_import_faiss()):
                local = index.search(query[None], fetch)[1][0]
            local = local[local >= 0]
            local = local[~np.isin(local, segment.dead)]
            if len(local) >= wanted or fetch >= segment.rows:
                return np.sort(local[:wanted])
            fetch = min(segment.rows, 4 * fetch)


class ShardedIndex:
    """Several indexes (shards: stores or processes each holding part of the rows) searched as one: the query is
    broadcast, each shard's top-k merged; row ids number the shards' rows one shard after the other."""

    kind = "sharded"

    def __init__(self, shards: list[VectorIndex]):
        self.shards = shards
        self._starts = np.cumsum([0] + [len(shard) for shard in shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        found = [shard.search(queries, k) for shard in self.shards]
        scores = np.concatenate([f[0] for f in found], axis=1)
        ids = np.concatenate([np.where(f[1] >= 0, f[1] + start, -1) for f, start in zip(found, self._starts)], axis=1)
        order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=1)[:, :min(k, len(self))]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


_cache: OrderedDict[tuple[str, int, str, str], VectorIndex] = OrderedDict()
_cache_lock = threading.Lock()


def index_for(store: Store, array: str = "video_feature", kind: IndexKind = "auto") -> VectorIndex:
    """The search over `store.array(array)`: per segment, through the indexes the writer persisted ("auto", "faiss")
    or exactly ("exact"). Never builds an index; cheap, and cached per store version."""
    if kind not in ("auto", "exact", "faiss"):
        raise ValueError(f"index kind {kind!r}: one of auto, exact, faiss")
    key = (str(store.path.resolve()), store.version, array, kind)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = StoreIndex(store, array, exact=kind == "exact")
        _cache.move_to_end(key)
        index = _cache[key]
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return index
