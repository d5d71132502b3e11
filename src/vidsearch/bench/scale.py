"""The store at library scale, through its public API: publish, cold start, one video added → searchable, search.

Per size (default 100 k and 1 M rows, `--full` adds 10 M; `--quick` 20 k) of the `search` benchmark's clustered
512-d unit vectors, 4 moment rows a video:
- publish: `store.write` of every row (files, hashes, fsyncs and the segment's persisted FAISS index);
- cold start: a new Python process that opens the store with a `Searcher` and answers one vector query (encoding
  excluded: the query vector is given), from its start to the answer; the same process then times `--queries`
  single queries (p50, p95) and reports its peak RSS after them (VmHWM: ru_maxrss survives exec) — what a
  server holds;
- add → searchable: `store.add` of one video (4 rows) until a `Searcher` that was serving the previous version has
  refreshed and returns the new row for its own vector (median of `--adds`);
- recall@10 of the served search against exact search over the same vectors (queries from the data's cluster centres,
  and a harder set of random directions, whose neighbours are not in a cluster);
- bytes on disk of the store.
Baseline, measured in the same run (`--no-baseline` skips it): what search did before indexes were persisted — the
reader built its index (HNSW below 200 k rows, IVF-flat above) over every vector at the first query after each
publish, so a new version was searchable only after that build. Summary ratio: baseline add → searchable over ours
at the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vidsearch.bench.common import emit, log, median, percentile, summary
from vidsearch.bench.search import CLUSTERS, DIM, clustered_vectors

MOMENTS = 4
RECALL_QUERIES = 200

# The cold-start child: opens the store, answers, then times queries; prints one JSON line.
_CHILD = r"""
import json, sys, time
started = time.perf_counter()
import numpy as np
from vidsearch.store.search import FunctionEncoder, Searcher, SearchOptions
path, queries_file = sys.argv[1], sys.argv[2]
queries = np.load(queries_file)
current = [0]
searcher = Searcher.open(path, FunctionEncoder(lambda texts: queries[[current[0]]], "bench"))
first = searcher.search("0", SearchOptions(k=10))
cold = time.perf_counter() - started
from vidsearch.store.index import index_for
engine = index_for(searcher.store)
times, found = [], []
for number in range(len(queries)):
    tick = time.perf_counter()
    scores, rows = engine.search(queries[number][None], 10)
    times.append(time.perf_counter() - tick)
    found.append(rows[0].tolist())
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"cold_start_s": cold, "index": first.index, "times": times, "found": found, "peak_rss_bytes": peak}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", help="comma-separated row counts (default 100000,1000000; --quick 20000)")
    parser.add_argument("--full", action="store_true", help="also 10 000 000 rows (needs ≈ 45 GB of disk, 24 GB RAM)")
    parser.add_argument("--adds", type=int, default=20, help="single-video adds timed per size")
    parser.add_argument("--queries", type=int, default=RECALL_QUERIES, help="queries timed and scored per set")
    parser.add_argument("--no-baseline", action="store_true", help="skip the in-reader index build baseline")
    parser.add_argument("--workdir", type=Path, help="where stores are written (default: a temp dir)")
    parser.add_argument("--clusters", type=int, help="cluster centres of the vectors (default 4096; --quick 64)")
    parser.add_argument("--index-min-rows", type=int,
                        help="segments this large get a persisted index (default the store's; --quick 10000)")


def run(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        [20_000] if args.quick else [100_000, 1_000_000] + ([10_000_000] if args.full else [])
    args.clusters = args.clusters or (64 if args.quick else CLUSTERS)
    if args.quick and args.index_min_rows is None:
        args.index_min_rows = 10_000
    results = []
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-scale-", dir=args.workdir) as scratch:
        for rows in sizes:
            results.append(_measure_size(rows, Path(scratch) / f"store{rows}", args))
            emit({"bench": "scale", **results[-1]})
    last = results[-1]
    baseline = last.get("baseline_searchable_s")
    summary("scale", (baseline / last["searchable_p50_s"]) if baseline else 0.0,
            baseline="index built by the reader after each publish", rows=last["rows"],
            searchable_p50_s=last["searchable_p50_s"], baseline_searchable_s=baseline,
            cold_start_s=last["cold_start_s"], search_p50_ms=last["search_p50_ms"],
            recall_at_10=last["recall_at_10"], peak_rss_over_vectors=last["peak_rss_over_vectors"])


def _measure_size(rows: int, path: Path, args: argparse.Namespace) -> dict:
    from vidsearch.store import store as feature_store
    from vidsearch.store.store import RowMeta

    log(f"scale: {rows} rows")
    vectors = clustered_vectors(rows, seed=rows, clusters=args.clusters)
    metas = [RowMeta(f"video{i // MOMENTS:08d}", 2.0 * (i % MOMENTS), 2.0 * (i % MOMENTS) + 2, "circle",
                     f"frames/video{i // MOMENTS:08d}/{i % MOMENTS:04d}.jpg") for i in range(rows)]
    started = time.perf_counter()
    feature_store.write(path, {"video_feature": vectors}, fingerprint="bench", rows=metas,
                        index_min_rows=args.index_min_rows)
    publish = time.perf_counter() - started
    del metas
    record = {"rows": rows, "publish_s": round(publish, 2),
              "disk_bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file()),
              "vector_bytes": vectors.nbytes}
    queries = {"cluster": clustered_vectors(args.queries, seed=rows + 1, clusters=args.clusters),
               "random": _unit(np.random.default_rng(rows + 2).standard_normal((args.queries, DIM)))}
    record.update(_served(path, vectors, queries))
    record.update(_adds(path, args.adds, args.index_min_rows))
    if not args.no_baseline:
        record.update(_baseline(vectors, queries["cluster"]))
    return record


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    top = []
    for start in range(0, len(queries), 50):
        scores = queries[start:start + 50] @ vectors.T
        top.append(np.argsort(-scores, axis=1)[:, :10])
    return np.concatenate(top)


def _recall(found: list[list[int]], truth: np.ndarray) -> float:
    return round(float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth.tolist())])), 4)


def _served(path: Path, vectors: np.ndarray, queries: dict[str, np.ndarray]) -> dict:
    """Cold start, p50 and peak RSS in a new process per query set; recall against exact search here."""
    record: dict = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for name, batch in queries.items():
        with tempfile.NamedTemporaryFile(suffix=".npy") as handle:
            np.save(handle.name, batch)
            started = time.perf_counter()
            child = subprocess.run([sys.executable, "-c", _CHILD, str(path), handle.name], capture_output=True,
                                   text=True, env=env, check=True)
            wall = time.perf_counter() - started
        report = json.loads(child.stdout.strip().splitlines()[-1])
        recall = _recall(report["found"], _exact_top10(vectors, batch))
        if name == "cluster":
            record.update({"index": report["index"], "cold_start_s": round(wall - sum(report["times"]), 2),
                           "cold_start_in_process_s": round(report["cold_start_s"], 3),
                           "search_p50_ms": round(1e3 * median(report["times"]), 3),
                           "search_p95_ms": round(1e3 * percentile(report["times"], 95), 3),
                           "recall_at_10": recall, "peak_rss_bytes": report["peak_rss_bytes"],
                           "peak_rss_over_vectors": round(report["peak_rss_bytes"] / vectors.nbytes, 3)})
        else:
            record.update({"recall_at_10_random_queries": recall,
                           "search_p50_ms_random_queries": round(1e3 * median(report["times"]), 3)})
    return record


def _adds(path: Path, adds: int, index_min_rows: int | None) -> dict:
    """Seconds from `store.add` of one video to a serving Searcher returning its row, `adds` times."""
    from vidsearch.store import store as feature_store
    from vidsearch.store.search import FunctionEncoder, Searcher, SearchOptions
    from vidsearch.store.store import RowMeta

    wanted: list[np.ndarray] = []
    searcher = Searcher.open(path, FunctionEncoder(lambda texts: wanted[-1][None], "bench"))
    rng = np.random.default_rng(7)
    times = []
    for number in range(adds):
        vectors = _unit(rng.standard_normal((MOMENTS, DIM)))
        wanted.append(vectors[0])
        video = f"added{number:04d}"
        rows = [RowMeta(video, 2.0 * i, 2.0 * i + 2, "circle", f"frames/{video}/{i:04d}.jpg") for i in range(MOMENTS)]
        started = time.perf_counter()
        feature_store.add(path, {"video_feature": vectors}, fingerprint="bench", rows=rows,
                          index_min_rows=index_min_rows)
        searcher.refresh()
        hit = searcher.search(video, SearchOptions(k=1)).hits
        times.append(time.perf_counter() - started)
        if not hit or hit[0].video_id != video:
            raise RuntimeError(f"added video {video} not found after its publish: {hit}")
    segments = len(searcher.store.segments)
    return {"searchable_p50_s": round(median(times), 3), "searchable_max_s": round(max(times), 3),
            "adds": adds, "segments_after_adds": segments}


def _baseline(vectors: np.ndarray, queries: np.ndarray) -> dict:
    """The index the reader used to build after each publish, over the same vectors: build seconds, p50, recall."""
    from vidsearch.store.index import build_index

    import faiss

    faiss.omp_set_num_threads(1)  # as the store's writer builds: one thread
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    index = build_index(vectors, "faiss")
    build = time.perf_counter() - started
    times, found = [], []
    for query in queries:
        tick = time.perf_counter()
        found.append(index.search(query[None], 10)[1][0].tolist())
        times.append(time.perf_counter() - tick)
    return {"baseline_index": index.kind, "baseline_searchable_s": round(build, 2),
            "baseline_search_p50_ms": round(1e3 * median(times), 3),
            "baseline_recall_at_10": _recall(found, _exact_top10(vectors, queries)),
            "baseline_peak_rss_growth_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before}
