"""The figures behind docs/scaling.md's 100 M-video arithmetic: bytes per vector and per row, recall, speed.

1. Compressed FAISS indexes (IVF-SQ8, IVF-PQ) against the IVF-flat index search uses, on the same clustered 512-d
   unit vectors as the `search` benchmark, one FAISS thread, single queries; then the smallest one re-ranked:
   its top `--candidates` rows scored exactly from the float32 vectors (what a store on SSD would serve).
2. The store's row metadata: bytes on disk and in Python a row, and seconds to open it, for 4 moments a video.
 `code_bytes`: a vector's code in the inverted lists (plus 8 bytes for
its id); `bytes_per_vector`: the serialised index's size over its rows, which adds the coarse quantiser's centroids
(a fixed cost that vanishes at 100 M rows). No row metadata. recall@10 is against exact search on in-distribution queries.
The summary's ratio: IVF-flat's code bytes over the smallest compressed index's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc

import numpy as np

from vidsearch.bench.common import emit, median, percentile, summary
from vidsearch.bench.search import DIM, clustered_vectors

# (name, FAISS factory string). SQ8: one byte a dimension. PQmx4fs: m 4-bit codes a vector (m/2 bytes), searched by
# FAISS's SIMD "fast scan"; 8-bit PQ codes train too slowly on one core for a benchmark (200 s for PQ64 on 20 k).
INDEXES = (("ivf-flat", "IVF{lists},Flat"), ("ivf-sq8", "IVF{lists},SQ8"), ("ivf-pq128x4fs", "IVF{lists},PQ128x4fs"),
           ("ivf-pq64x4fs", "IVF{lists},PQ64x4fs"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, help="vectors indexed (default 100000; --quick 20000)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed and scored for recall")
    parser.add_argument("--candidates", type=int, default=200, help="rows re-ranked exactly after the smallest index")
    parser.add_argument("--metadata-rows", type=int, help="store rows for the metadata figures (default = --rows)")


def run(args: argparse.Namespace) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    rows = args.rows or (20_000 if args.quick else 100_000)
    vectors, queries = clustered_vectors(rows, seed=rows), clustered_vectors(args.queries, seed=rows + 1)
    truth = _exact_top10(vectors, queries)
    lists = max(16, int(4 * np.sqrt(rows)))
    measured = [_measure(faiss, name, factory.format(lists=lists), vectors, queries, truth)
                for name, factory in INDEXES]
    results = [result for result, _ in measured]
    results.append(_reranked(INDEXES[-1][0], measured[-1][1], vectors, queries, truth, candidates=args.candidates))
    for result in results:
        emit({"bench": "scale", "rows": rows, "lists": lists, **result})
    emit({"bench": "scale", **_metadata_costs(args.metadata_rows or rows)})
    flat, smallest = results[0]["code_bytes"], min(r["code_bytes"] for r in results[1:])
    summary("scale", flat / smallest, rows=rows, flat_code_bytes=flat, smallest_code_bytes=smallest)


def _exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1)[:, :10]


def _measure(faiss, name: str, factory: str, vectors: np.ndarray, queries: np.ndarray,
             truth: np.ndarray) -> tuple[dict, object]:
    started = time.perf_counter()
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    build = time.perf_counter() - started
    index.nprobe = max(16, index.nlist // 32)  # what store/index.py probes for IVF-flat
    found, times = _search_each(lambda query: index.search(query[None], 10)[1][0], queries)
    return {"index": name, "factory": factory, "nprobe": index.nprobe, "build_s": round(build, 2),
            "code_bytes": index.code_size,
            "bytes_per_vector": round(faiss.serialize_index(index).size / len(vectors), 1),
            **_quality(found, times, truth)}, index


def _reranked(name: str, index, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, *,
              candidates: int) -> dict:
    def search(query: np.ndarray) -> np.ndarray:
        rows = index.search(query[None], candidates)[1][0]
        rows = np.sort(rows[rows >= 0])  # sorted: reads in file order from a memory map
        return rows[np.argsort(-(vectors[rows] @ query))[:10]]

    found, times = _search_each(search, queries)
    return {"index": f"{name} + exact re-rank of {candidates}", "code_bytes": index.code_size,
            **_quality(found, times, truth)}


def _search_each(search, queries: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    found, times = [], []
    for query in queries:
        tick = time.perf_counter()
        found.append(search(query))
        times.append(time.perf_counter() - tick)
    return found, times


def _quality(found: list[np.ndarray], times: list[float], truth: np.ndarray) -> dict:
    recall = np.mean([len(set(t) & set(f.tolist())) / 10 for t, f in zip(truth.tolist(), found)])
    return {"recall_at_10": round(float(recall), 4), "p50_ms": round(1e3 * median(times), 3),
            "p95_ms": round(1e3 * percentile(times, 95), 3)}


def _metadata_costs(rows: int) -> dict:
    """A store of `rows` moments (4 a video, no captions): its metadata on disk, in Python, and the time to read it."""
    from vidsearch.store import store as feature_store
    from vidsearch.store.store import RowMeta, Store

    metas = [RowMeta(f"video{i // 4:08d}", 2.0 * (i % 4), 2.0 * (i % 4) + 2, "circle",
                     f"frames/video{i // 4:08d}/{i % 4:04d}.jpg") for i in range(rows)]
    with tempfile.TemporaryDirectory() as directory:
        feature_store.write(directory, {"video_feature": np.zeros((rows, 4), np.float32)}, fingerprint="m",
                            rows=metas)
        del metas
        disk = sum(entry["meta"]["size"] for entry in Store.open(directory).manifest["segments"])
        tracemalloc.start()
        started = time.perf_counter()
        store = Store.open(directory)
        table, videos = store.rows, store.videos()
        seconds = time.perf_counter() - started
        heap = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return {"measure": "row_metadata", "rows": rows, "disk_bytes_per_row": round(disk / rows, 1),
            "python_bytes_per_row": round(heap / rows, 1), "open_us_per_row": round(1e6 * seconds / rows, 2),
            "videos": len(videos), "table_rows": len(table)}
