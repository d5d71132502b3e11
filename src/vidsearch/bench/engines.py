"""Vector engines side by side on the same vectors, machine and thread count: FAISS, usearch and LanceDB.

The `search` benchmark's clustered 512-d unit vectors are written once per size to a float32 `.npy` file (generated
in chunks); every engine builds from it and persists its index in its own directory, each build in a fresh child
process, then a second fresh child opens what was persisted (memory-mapped where the engine allows) and serves:
- cold open (process already started, page cache warm: the files were just written) and first query;
- single queries, k = 10, at several operating points (probes, beam width, re-rank factor): p50 and recall@10
  against exact NumPy top-10, for queries drawn from the clusters ("in-distribution") and for "hard" queries in
  uniformly random directions, unrelated to the clusters;
- one video added → searchable: 12–60 new rows made durable and returned as the top hit of a query (median of 5).
  FAISS and usearch: a new float32 segment file searched exactly beside the persisted index (the per-segment store
  design); LanceDB: `table.add`, its own versioned append, searched by its unindexed-rows scan.
Latency and build time are given both as wall-clock and as the process's CPU time (all its threads): on a shared
machine the first is what a user waits, the second what the engine costs.
Peak RSS is VmHWM of each child (build and serve apart; memory-mapped pages the child touched count), and
`anon_mb` the child's anonymous memory when it ends (what page cache cannot give back). Disk: bytes the engine needs
to serve, the float32 file included where results are re-ranked from it.
"Re-rank" = the index's top `rerank × 10` candidates scored exactly from the memory-mapped float32 file.
An engine whose build at the previous size, scaled by rows, would exceed `--build-budget` is skipped at the next size.
Summary: per size, each engine's fastest point with recall@10 ≥ 0.95; the winner is the engine at the largest size
with the smallest resident working set when serving, among those with such a point at p50 ≤ 10 ms; `ratio` = exact
NumPy p50 / winner p50. Working set = anonymous memory + resident pages of the engine's own memory-mapped files (what
each query scans); pages of the float32 file that re-ranking reads (`rerank × 10` rows a query) are reported apart:
they are page cache the kernel can drop and read again at a few pages a query.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vidsearch.bench.common import emit, log, median, summary

DIM = 512
K = 10
CHUNK = 100_000
ADD_SIZES = (12, 24, 36, 48, 60)
TARGET_RECALL = 0.95
TARGET_P50_MS = 10.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LANCE_CPU_THREADS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", help="comma-separated row counts (default 100000,1000000; --quick 2000)")
    parser.add_argument("--engines", help="comma-separated engine names (default: all; see ENGINES)")
    parser.add_argument("--queries", type=int, help="queries of each kind (default 200; --quick 50)")
    parser.add_argument("--flat-queries", type=int, default=20, help="queries of each kind for exhaustive engines")
    parser.add_argument("--threads", type=int, default=1, help="threads for every engine (FAISS, usearch, Lance, BLAS)")
    parser.add_argument("--build-budget", type=float, default=600.0,
                        help="skip an engine at a size when its previous build scaled by rows exceeds this (s)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="kill a child process after this many seconds")
    parser.add_argument("--workdir", type=Path, help="where vectors and indexes are written (default: a temp dir)")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="JSONL",
                        help="measure nothing: re-read the JSON lines of earlier runs (e.g. one size each) and print "
                             "each engine's best point and the summary")


# ---------------------------------------------------------------- engines (run in the child processes)


def _exact_top(vectors: np.ndarray, query: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k of `ids` whose rows of `vectors` score highest against `query`, and their scores."""
    ids = np.sort(ids[ids >= 0])  # file order: sequential reads from the memory map
    scores = vectors[ids] @ query
    best = np.argsort(-scores)[:k]
    return ids[best], scores[best]


class Segments:
    """Small segments appended after the index was built: float32 files searched exactly, results merged."""

    def __init__(self, directory: Path, first_id: int) -> None:
        self.directory, self.next_id, self.parts = directory, first_id, []

    def add(self, batch: np.ndarray) -> np.ndarray:
        path = self.directory / f"segment-{len(self.parts):04d}.npy"
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, batch)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        ids = np.arange(self.next_id, self.next_id + len(batch))
        self.parts.append((ids, np.load(path, mmap_mode="r")))
        self.next_id += len(batch)
        return ids

    def merge(self, ids: np.ndarray, scores: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
        for part_ids, part in self.parts:
            ids, scores = np.concatenate([ids, part_ids]), np.concatenate([scores, part @ query])
        return ids[np.argsort(-scores)[:k]]


class Served:
    """An opened engine: `search(query, point)` → row ids, best first; `add(batch)` → ids of the new rows."""

    points: list[dict[str, Any]]

    def search(self, query: np.ndarray, point: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def add(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SegmentedServed(Served):
    """Engines searched beside exact segments: `candidates` gives ids (and exact scores when `rerank` is set)."""

    def __init__(self, directory: Path, vectors: np.ndarray, points: list[dict[str, Any]]) -> None:
        self.vectors, self.points = vectors, points
        self.segments = Segments(directory, len(vectors))

    def candidates(self, query: np.ndarray, count: int, point: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def search(self, query: np.ndarray, point: dict[str, Any]) -> np.ndarray:
        rerank = point.get("rerank")
        found = self.candidates(query, K * (rerank or 1), point)
        if not rerank and not self.segments.parts:
            return found
        ids, scores = _exact_top(self.vectors, query, found, K)
        return self.segments.merge(ids, scores, query, K)

    def add(self, batch: np.ndarray) -> np.ndarray:
        return self.segments.add(batch)


class NumpyServed(SegmentedServed):
    def candidates(self, query: np.ndarray, count: int, point: dict[str, Any]) -> np.ndarray:
        scores = self.vectors @ query
        top = np.argpartition(-scores, count)[:count]
        return top[np.argsort(-scores[top])]


class FaissServed(SegmentedServed):
    def __init__(self, index, directory: Path, vectors: np.ndarray, points: list[dict[str, Any]]) -> None:
        super().__init__(directory, vectors, points)
        self.index = index

    def candidates(self, query: np.ndarray, count: int, point: dict[str, Any]) -> np.ndarray:
        import faiss

        if "nprobe" in point:
            params = faiss.SearchParametersIVF(nprobe=point["nprobe"])
        else:
            params = faiss.SearchParametersHNSW(efSearch=max(point["ef"], count))
        return self.index.search(query[None], count, params=params)[1][0]


class USearchServed(SegmentedServed):
    def __init__(self, index, directory: Path, vectors: np.ndarray, points: list[dict[str, Any]],
                 threads: int) -> None:
        super().__init__(directory, vectors, points)
        self.index, self.threads = index, threads

    def candidates(self, query: np.ndarray, count: int, point: dict[str, Any]) -> np.ndarray:
        self.index.expansion_search = max(point["ef"], count)
        return self.index.search(query, count, threads=self.threads).keys.astype(np.int64)


class LanceServed(Served):
    def __init__(self, table, points: list[dict[str, Any]], first_id: int) -> None:
        self.table, self.points, self.next_id = table, points, first_id

    def search(self, query: np.ndarray, point: dict[str, Any]) -> np.ndarray:
        builder = self.table.search(query, vector_column_name="vector").distance_type("dot").limit(K).select(["id", "_distance"])
        if "nprobe" in point:
            builder = builder.nprobes(point["nprobe"])
        if point.get("refine"):
            builder = builder.refine_factor(point["refine"])
        return builder.to_arrow().column("id").to_numpy()

    def add(self, batch: np.ndarray) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + len(batch))
        import pyarrow as pa

        self.table.add(pa.Table.from_batches([_arrow_batch(ids, batch)]))
        self.next_id += len(batch)
        return ids


def _arrow_batch(ids: np.ndarray, vectors: np.ndarray):
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.FixedSizeListArray.from_arrays(flat, DIM)],
                                      names=["id", "vector"])


def _ivf_lists(rows: int) -> int:
    """√rows lists, as store/index.py builds them (1 000 at 1 M rows)."""
    return max(8, int(np.sqrt(rows)))


class Engine:
    """How to build one engine's index from the float32 file, persist it, and open it to serve."""

    exhaustive = False
    reranks = False  # needs the float32 file to serve
    scans_vectors = False  # reads the whole float32 file at each query
    library = "numpy"  # imported before open is timed: a server has it loaded already

    def __init__(self, name: str) -> None:
        self.name = name

    def build(self, vectors: np.ndarray, directory: Path, threads: int) -> dict[str, Any]:
        raise NotImplementedError

    def open(self, directory: Path, vectors: np.ndarray, threads: int) -> Served:
        raise NotImplementedError


class NumpyEngine(Engine):
    exhaustive, reranks, scans_vectors = True, True, True

    def build(self, vectors: np.ndarray, directory: Path, threads: int) -> dict[str, Any]:
        return {}

    def open(self, directory: Path, vectors: np.ndarray, threads: int) -> Served:
        return NumpyServed(directory, vectors, [{}])


class FaissEngine(Engine):
    library = "faiss"
    def __init__(self, name: str, factory: str, points: list[dict[str, Any]]) -> None:
        super().__init__(name)
        self.factory, self.points = factory, points
        self.reranks = any("rerank" in point for point in points)

    def build(self, vectors: np.ndarray, directory: Path, threads: int) -> dict[str, Any]:
        import faiss

        faiss.omp_set_num_threads(threads)
        lists = _ivf_lists(len(vectors))
        index = faiss.index_factory(DIM, self.factory.format(lists=lists), faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(len(vectors), min(len(vectors), 64 * lists), replace=False))
            index.train(np.ascontiguousarray(vectors[sample]))
        for start in range(0, len(vectors), CHUNK):
            index.add(np.ascontiguousarray(vectors[start:start + CHUNK]))
        faiss.write_index(index, str(directory / "index.faiss"))
        return {"factory": self.factory.format(lists=lists)}

    def open(self, directory: Path, vectors: np.ndarray, threads: int) -> Served:
        import faiss

        faiss.omp_set_num_threads(threads)
        # IVF: inverted lists memory-mapped; HNSW: its flat storage memory-mapped (the graph is read into RAM).
        flag = faiss.IO_FLAG_MMAP if self.factory.startswith("IVF") else faiss.IO_FLAG_MMAP_IFC
        index = faiss.read_index(str(directory / "index.faiss"), flag)
        return FaissServed(index, directory, vectors, self.points)


class USearchEngine(Engine):
    library = "usearch.index"
    def __init__(self, name: str, dtype: str, points: list[dict[str, Any]]) -> None:
        super().__init__(name)
        self.dtype, self.points = dtype, points
        self.reranks = any("rerank" in point for point in points)

    def build(self, vectors: np.ndarray, directory: Path, threads: int) -> dict[str, Any]:
        from usearch.index import Index

        index = Index(ndim=DIM, metric="ip", dtype=self.dtype)
        for start in range(0, len(vectors), CHUNK):
            chunk = np.ascontiguousarray(vectors[start:start + CHUNK])
            index.add(np.arange(start, start + len(chunk)), chunk, threads=threads)
        index.save(str(directory / "index.usearch"))
        return {"dtype": self.dtype, "connectivity": index.connectivity, "expansion_add": index.expansion_add}

    def open(self, directory: Path, vectors: np.ndarray, threads: int) -> Served:
        from usearch.index import Index

        index = Index.restore(str(directory / "index.usearch"), view=True)
        return USearchServed(index, directory, vectors, self.points, threads)


class LanceEngine(Engine):
    """`index` None: no index (exhaustive scan); {}: LanceDB's default IVF-PQ; else `IvfPq` keyword arguments."""

    library = "lancedb"

    def __init__(self, name: str, index: dict[str, Any] | None, points: list[dict[str, Any]]) -> None:
        super().__init__(name)
        self.index, self.points = index, points
        self.exhaustive = index is None

    def build(self, vectors: np.ndarray, directory: Path, threads: int) -> dict[str, Any]:
        import lancedb
        import pyarrow as pa
        from lancedb.index import IvfPq

        schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), DIM))])
        batches = (_arrow_batch(np.arange(start, min(len(vectors), start + CHUNK)), vectors[start:start + CHUNK])
                   for start in range(0, len(vectors), CHUNK))
        table = lancedb.connect(str(directory)).create_table("vectors", data=batches, schema=schema)
        if self.index is None:
            return {}
        settings = {key: value(len(vectors)) if callable(value) else value for key, value in self.index.items()}
        table.create_index("vector", config=IvfPq(distance_type="dot", **settings))
        return {"index": {key: value for key, value in settings.items()} or "default IVF_PQ"}

    def open(self, directory: Path, vectors: np.ndarray, threads: int) -> Served:
        import lancedb

        return LanceServed(lancedb.connect(str(directory)).open_table("vectors"), self.points, len(vectors))


def _grid(**axes: list[Any]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = [{}]
    for key, values in axes.items():
        points = [{**point, key: value} for point in points for value in values]
    return points


ENGINES: dict[str, Engine] = {engine.name: engine for engine in (
    NumpyEngine("numpy-exact"),
    FaissEngine("faiss-ivf-flat", "IVF{lists},Flat", _grid(nprobe=[16, 32, 64, 128, 256])),
    FaissEngine("faiss-ivf-pq64x4fs", "IVF{lists},PQ64x4fs", _grid(nprobe=[32, 64, 128, 256], rerank=[5, 10, 20])),
    FaissEngine("faiss-ivf-pq32x4fs", "IVF{lists},PQ32x4fs", _grid(nprobe=[64, 128, 256], rerank=[10, 20, 40])),
    FaissEngine("faiss-ivf-sq8", "IVF{lists},SQ8", _grid(nprobe=[32, 64, 128, 256], rerank=[0, 2])),
    FaissEngine("faiss-hnsw32-flat", "HNSW32,Flat", _grid(ef=[32, 64, 128, 256])),
    USearchEngine("usearch-f32", "f32", _grid(ef=[64, 128, 256, 512])),
    USearchEngine("usearch-f16", "f16", _grid(ef=[128, 256])),
    USearchEngine("usearch-i8", "i8", _grid(ef=[128, 256, 512], rerank=[0, 3])),
    LanceEngine("lancedb-flat", None, [{}]),
    LanceEngine("lancedb-ivfpq-default", {}, [{}]),
    LanceEngine("lancedb-ivfpq-tuned", {"num_partitions": _ivf_lists, "num_sub_vectors": 64},
                _grid(nprobe=[32, 64, 128, 256], refine=[1, 5, 10, 20])),
)}


# ---------------------------------------------------------------- child processes


def _limit_threads(threads: int) -> None:
    """BLAS threads here; FAISS (OpenMP) and Lance read THREAD_VARIABLES, which each child gets from its parent."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def _memory() -> dict[str, float]:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across fork and exec) and its
    anonymous memory now, in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
            "anon_mb": round(int(fields["RssAnon"].split()[0]) / 1024, 1)}


def _mapped_mb(directory: Path, vectors: str, *, vectors_are_index: bool) -> dict[str, float]:
    """Resident pages of this process's memory maps (/proc/self/smaps): the engine's own files (for exact search, the
    float32 file it scans), and the float32 file that re-ranking and exact segments read."""
    totals = {"index_mapped_mb": 0, "vectors_mapped_mb": 0}
    key = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header: address range ... [path]
            path = fields[5] if len(fields) > 5 else ""
            key = ("index_mapped_mb" if path == vectors and vectors_are_index else
                   "vectors_mapped_mb" if path == vectors else
                   "index_mapped_mb" if path.startswith(str(directory) + os.sep) else None)
        elif key and fields[:1] == ["Rss:"]:
            totals[key] += int(fields[1])
    return {name: round(kib / 1024, 1) for name, kib in totals.items()}


def _disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def child_build(job: dict[str, Any]) -> dict[str, Any]:
    engine, directory = ENGINES[job["engine"]], Path(job["directory"])
    vectors = np.load(job["vectors"], mmap_mode="r")
    started, cpu_started = time.perf_counter(), time.process_time()
    info = engine.build(vectors, directory, job["threads"])
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    disk = _disk_bytes(directory) + (Path(job["vectors"]).stat().st_size if engine.reranks else 0)
    return {"phase": "build", "build_s": round(build_s, 3), "build_cpu_s": round(build_cpu_s, 3), "disk_bytes": disk,
            **info, **_memory()}


def child_serve(job: dict[str, Any]) -> list[dict[str, Any]]:
    engine, directory, threads = ENGINES[job["engine"]], Path(job["directory"]), job["threads"]
    data = np.load(job["query_file"])
    importlib.import_module(engine.library)
    import_mb = _memory()["peak_rss_mb"]
    started = time.perf_counter()
    vectors = np.load(job["vectors"], mmap_mode="r")
    served = engine.open(directory, vectors, threads)
    open_s = time.perf_counter() - started
    served.search(data["queries"][0], served.points[0])
    first_query_s = time.perf_counter() - started
    count = job["flat_queries"] if engine.exhaustive else job["queries"]
    records = [{"phase": "search", **point, **_quality(served, point, data, count)} for point in served.points]
    add_ms = _add_searchable(served, np.load(job["additions"]))
    return records + [{"phase": "serve", "open_s": round(open_s, 3), "first_query_ms": round(1e3 * first_query_s, 1),
                       "add_searchable_ms": round(add_ms, 1), "import_rss_mb": import_mb, **_memory(),
                       **_mapped_mb(directory, str(Path(job["vectors"])), vectors_are_index=engine.scans_vectors)}]


def _quality(served: Served, point: dict[str, Any], data, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {"queries": count}
    for kind, prefix in (("queries", ""), ("hard", "hard_")):
        queries, truth = data[kind][:count], data[f"{kind}_truth"][:count]
        times, cpu_times, hits = [], [], 0
        for query, true in zip(queries, truth):
            tick, cpu_tick = time.perf_counter(), time.process_time()
            found = served.search(query, point)
            times.append(time.perf_counter() - tick)
            cpu_times.append(time.process_time() - cpu_tick)
            hits += len(set(true.tolist()) & set(found[:K].tolist()))
        out[f"{prefix}recall_at_10"] = round(hits / (K * len(queries)), 4)
        out[f"{prefix}p50_ms"] = round(1e3 * median(times), 3)
        out[f"{prefix}p50_cpu_ms"] = round(1e3 * median(cpu_times), 3)
    return out


def _add_searchable(served: Served, additions: np.ndarray) -> float:
    """Median ms from handing over one video's rows to a query returning its first row as the top hit."""
    times, start = [], 0
    for size in ADD_SIZES:
        batch = additions[start:start + size]
        start += size
        tick = time.perf_counter()
        ids = served.add(batch)
        found = served.search(batch[0], served.points[-1])
        times.append(time.perf_counter() - tick)
        if found[0] != ids[0]:
            raise RuntimeError(f"added row {ids[0]} not the top hit for its own vector: {found[:3].tolist()}")
    return 1e3 * median(times)


def child_main(job: dict[str, Any]) -> None:
    _limit_threads(job["threads"])
    result = child_build(job) if job["phase"] == "build" else child_serve(job)
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- the parent: data, children, report


def write_vectors(path: Path, rows: int, *, seed: int) -> None:
    """`rows` clustered unit vectors to a float32 .npy file, generated CHUNK rows at a time."""
    from vidsearch.bench.search import clustered_vectors

    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, DIM))
    for number, start in enumerate(range(0, rows, CHUNK)):
        stop = min(rows, start + CHUNK)
        out[start:stop] = clustered_vectors(stop - start, seed=seed * 1_000 + number)
    out.flush()
    del out


def hard_queries(count: int, *, seed: int) -> np.ndarray:
    """Unit vectors in uniformly random directions: unrelated to the clusters, with near-tied neighbours."""
    queries = np.random.default_rng(seed).standard_normal((count, DIM), dtype=np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-10 row ids by inner product, best first, over `vectors` read CHUNK rows at a time."""
    best_ids = np.empty((len(queries), 0), np.int64)
    best_scores = np.empty((len(queries), 0), np.float32)
    for start in range(0, len(vectors), CHUNK):
        scores = queries @ np.asarray(vectors[start:start + CHUNK]).T
        keep = min(K, scores.shape[1])
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        best_ids = np.concatenate([best_ids, top + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        keep = np.argsort(-best_scores, axis=1)[:, :K]
        best_ids, best_scores = np.take_along_axis(best_ids, keep, 1), np.take_along_axis(best_scores, keep, 1)
    return best_ids


def prepare(directory: Path, rows: int, queries: int) -> dict[str, str]:
    """Vectors, both query sets with their exact top-10, and the rows added later, for one size."""
    from vidsearch.bench.search import clustered_vectors

    vectors_path, queries_path, additions_path = (directory / name for name in
                                                  ("vectors.npy", "queries.npz", "additions.npy"))
    write_vectors(vectors_path, rows, seed=rows)
    vectors = np.load(vectors_path, mmap_mode="r")
    in_distribution, hard = clustered_vectors(queries, seed=rows + 1), hard_queries(queries, seed=rows + 2)
    np.savez(queries_path, queries=in_distribution, queries_truth=exact_top10(vectors, in_distribution),
             hard=hard, hard_truth=exact_top10(vectors, hard))
    np.save(additions_path, clustered_vectors(sum(ADD_SIZES), seed=rows + 3))
    return {"vectors": str(vectors_path), "query_file": str(queries_path), "additions": str(additions_path)}


def run_child(job: dict[str, Any], *, threads: int, timeout: float) -> Any:
    environment = {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}
    command = [sys.executable, "-m", "vidsearch.bench.engines", json.dumps(job)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_engine(name: str, rows: int, files: dict[str, str], root: Path, args: argparse.Namespace,
                   queries: int) -> list[dict[str, Any]]:
    directory = root / name
    directory.mkdir()
    base = {"bench": "engines", "engine": name, "rows": rows, "threads": args.threads}
    job = {"engine": name, "directory": str(directory), "threads": args.threads, "queries": queries,
           "flat_queries": min(queries, args.flat_queries), **files}
    build = run_child({**job, "phase": "build"}, threads=args.threads, timeout=args.timeout)
    records = [{**base, **build}]
    if "error" not in build:
        serve = run_child({**job, "phase": "serve"}, threads=args.threads, timeout=args.timeout)
        records += [{**base, **record} for record in serve] if isinstance(serve, list) else [{**base, **serve}]
    for record in records:
        emit(record)
    return records


def best_point(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The engine's fastest operating point with recall@10 ≥ TARGET_RECALL, with its build and serve figures."""
    points = [r for r in records if r.get("phase") == "search" and r["recall_at_10"] >= TARGET_RECALL]
    if not points:
        return None
    point = min(points, key=lambda r: r["p50_ms"])
    build = next(r for r in records if r.get("phase") == "build")
    serve = next(r for r in records if r.get("phase") == "serve")
    settings = {key: value for key, value in point.items() if key in ("nprobe", "rerank", "ef", "refine")}
    return {"settings": settings, "recall_at_10": point["recall_at_10"], "hard_recall_at_10": point["hard_recall_at_10"],
            "p50_ms": point["p50_ms"], "p50_cpu_ms": point.get("p50_cpu_ms"), "build_s": build["build_s"],
            "build_cpu_s": build.get("build_cpu_s"), "disk_mb": round(build["disk_bytes"] / 2**20, 1),
            "build_peak_rss_mb": build["peak_rss_mb"], "serve_peak_rss_mb": serve["peak_rss_mb"],
            "serve_anon_mb": serve["anon_mb"], "serve_index_mapped_mb": serve.get("index_mapped_mb", 0.0),
            "serve_vectors_mapped_mb": serve.get("vectors_mapped_mb", 0.0),
            "serve_resident_mb": round(serve["anon_mb"] + serve.get("index_mapped_mb", 0.0), 1),
            "open_s": serve["open_s"], "add_searchable_ms": serve["add_searchable_ms"]}


def run(args: argparse.Namespace) -> None:
    if args.summarise:
        _summarise_recorded(args.summarise)
        return
    sizes = [int(size) for size in (args.sizes or ("2000" if args.quick else "100000,1000000")).split(",")]
    names = args.engines.split(",") if args.engines else list(ENGINES)
    unknown = sorted(set(names) - set(ENGINES))
    if unknown:
        raise SystemExit(f"unknown engines: {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    queries = args.queries or (50 if args.quick else 200)
    _limit_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.workdir) as temporary:
        best = _measure_sizes(sizes, names, Path(temporary), args, queries)
    _summarise(sizes, best)


def projected_build_s(last: tuple[int, float], rows: int) -> float:
    """Seconds to build `rows` if build time grows linearly from the last build, (rows, seconds)."""
    return last[1] * rows / last[0]


def _measure_sizes(sizes: list[int], names: list[str], root: Path, args: argparse.Namespace,
                   queries: int) -> dict[int, dict[str, Any]]:
    best: dict[int, dict[str, Any]] = {}
    build_seconds: dict[str, tuple[int, float]] = {}  # engine → (rows, build s) of its last build
    for rows in sizes:
        size_root = root / str(rows)
        size_root.mkdir()
        log(f"engines: {rows} rows: writing vectors and exact top-10")
        files = prepare(size_root, rows, queries)
        best[rows] = {}
        for name in names:
            projected = projected_build_s(build_seconds[name], rows) if name in build_seconds else 0.0
            if name in build_seconds and projected > args.build_budget:
                emit({"bench": "engines", "engine": name, "rows": rows, "skipped":
                      f"projected build {projected:.0f} s > --build-budget {args.build_budget:.0f} s"})
                continue
            log(f"engines: {rows} rows: {name}")
            records = measure_engine(name, rows, files, size_root, args, queries)
            if "build_s" in records[0]:
                build_seconds[name] = (rows, records[0]["build_s"])
            best[rows][name] = best_point(records) if all("error" not in r for r in records) else None
    return best


def _summarise_recorded(paths: list[Path]) -> None:
    records: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "phase" in record or "error" in record:
                records.setdefault(record["rows"], {}).setdefault(record["engine"], []).append(record)
    best = {rows: {name: best_point(found) if all("error" not in r for r in found) else None
                   for name, found in engines.items()} for rows, engines in records.items()}
    _summarise(sorted(best), best)


def _summarise(sizes: list[int], best: dict[int, dict[str, Any]]) -> None:
    for rows in sizes:
        for name, point in best[rows].items():
            emit({"bench": "engines", "rows": rows, "engine": name, "best": point})
    largest = max((rows for rows in sizes if best[rows]), default=sizes[-1])  # where any engine was measured
    fast = {name: point for name, point in best[largest].items()
            if point and point["p50_ms"] <= TARGET_P50_MS}
    baseline = best[largest].get("numpy-exact")
    if not fast:
        summary("engines", 0.0, rows=largest, winner=None)
        return
    winner = min(fast, key=lambda name: (fast[name]["serve_resident_mb"], fast[name]["p50_ms"]))
    chosen = fast[winner]
    ratios = {name: {"p50": round(point["p50_ms"] / chosen["p50_ms"], 2),
                     "serve_resident": round(point["serve_resident_mb"] / chosen["serve_resident_mb"], 2),
                     "serve_peak_rss": round(point["serve_peak_rss_mb"] / chosen["serve_peak_rss_mb"], 2),
                     "build": round(point["build_s"] / max(chosen["build_s"], 1e-3), 2)}
              for name, point in best[largest].items() if point}
    summary("engines", baseline["p50_ms"] / chosen["p50_ms"] if baseline else 0.0, rows=largest, winner=winner,
            settings=chosen["settings"], winner_figures=chosen, ratios_to_winner=ratios)


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
