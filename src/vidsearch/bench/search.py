"""End-to-end query latency: text → ViT-B/32 text tower (random weights) → `Searcher` → hits, exact and FAISS.

Stores of 1 k, 10 k, 100 k and 1 M rows (`--quick`: 1 k and 10 k) of 512-d float32 unit vectors drawn from a mixture
of Gaussian clusters (real video features cluster; vectors uniform on the sphere are a worst case for ANN). Every
timed query is a different text, so the Searcher's LRU cache never helps; the cached repeat of each query is timed
separately. Each store is written as the store writes it: with its persisted index from `--index-min-rows` rows
(default the store's 50 000), so "faiss" is what a served library searches — the segment's IVF-PQ fast-scan index,
top candidates re-ranked exactly — and exact search below that size.
Its recall@10 is measured against exact search on two query sets: vectors drawn from the data's own cluster centres
(in-distribution: the figure a library of videos of a few kinds would see) and random directions unrelated to the
clusters (a floor: their nearest rows are barely nearer than the rest, so no IVF setting finds them reliably).
Baseline, in the same run at 10 k and interleaved query by query with ours: the thesis' path — 77-token fp32 text
encoding (`model.clip.encode_text` on the full context) and exact numpy search over arrays loaded from a pandas
pickle (written here from this benchmark's own data; the only pickle). Both run with the same torch thread count
and one BLAS thread (a second OpenBLAS thread busy-waits after each product and slows whatever runs next).
Also measured: the opt-in bf16 query tower, its latency and its top-10 overlap with fp32 on the same queries.
Summary ratio: the thesis' path p50 / vidsearch p50 at 10 k.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import ThreadpoolController

from vidsearch.bench.common import emit, log, percentile, summary
from vidsearch.config import ModelConfig
from vidsearch.model.videoclip import VideoTextModel, create_model
from vidsearch.store import store as feature_store
from vidsearch.store.index import index_for
from vidsearch.store.indexer import ModelQueryEncoder, intra_op_threads
from vidsearch.store.search import Searcher, SearchOptions
from vidsearch.store.store import Store

DIM = 512
CLUSTERS = 4096
NOISE = 1.0  # norm of a vector's offset from its cluster centre (centres have norm 1): cosine to centre ≈ 0.71
SEED_ROWS = 10_000
WORDS = (("red", "blue", "green", "yellow", "purple", "orange", "white", "black"),
         ("circle", "square", "triangle", "star", "ball", "box", "ring", "cross"),
         ("moves", "slides", "rolls", "drifts", "jumps", "glides", "bounces"),
         ("left", "right", "up", "down"),
         ("striped", "plain", "dark", "noisy", "checkered", "bright"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", help="comma-separated store sizes (default 1000,10000,100000,1000000; "
                                        "--quick 1000,10000)")
    parser.add_argument("--queries", type=int, help="timed queries per store and index (default 100; --quick 10)")
    parser.add_argument("--recall-queries", type=int, default=200, help="queries for FAISS recall@10")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for encoding (both paths)")
    parser.add_argument("--workdir", type=Path, help="where stores are written (default: a temp dir)")
    parser.add_argument("--clusters", type=int, default=CLUSTERS, help="cluster centres of the generated vectors")
    parser.add_argument("--index-min-rows", type=int, help="stores this large get a persisted index (default: the "
                                                            "store's threshold, 50 000, as served)")


def clustered_vectors(rows: int, *, seed: int, clusters: int = CLUSTERS) -> np.ndarray:
    """`rows` unit vectors: a random cluster centre each (`clusters` of them, the same first ones whatever the number)
    plus Gaussian noise of norm ≈ NOISE."""
    rng = np.random.default_rng(seed)
    centres = _unit(np.random.default_rng(0).standard_normal((clusters, DIM), dtype=np.float32))
    out = np.empty((rows, DIM), dtype=np.float32)
    for start in range(0, rows, 100_000):
        stop = min(rows, start + 100_000)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * np.float32(NOISE / np.sqrt(DIM))
        out[start:stop] = _unit(centres[rng.integers(clusters, size=stop - start)] + noise)
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def query_texts(count: int, *, offset: int = 0) -> list[str]:
    """Distinct ~10-word captions."""
    texts = []
    for i in range(offset, offset + count):
        colour, shape, verb, direction, texture = (words[(i * (7 + j)) % len(words)] for j, words in enumerate(WORDS))
        texts.append(f"clip {i}: a {colour} {shape} {verb} {direction} over a {texture} background")
    return texts


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e3


def latencies(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2)}


def measure_searcher(searcher: Searcher, texts: list[str], index: str) -> dict:
    """Latency of first-time queries (p50/p95, and their encode/vector parts) and of their cached repeats."""
    options = SearchOptions(k=10, index=index)
    first_ms = timed(lambda: searcher.search("warm-up query loads the index", options))
    first, cached, encode, vector = [], [], [], []
    for text in texts:
        first.append(timed(lambda: _keep(searcher.search(text, options), encode, vector)))
        cached.append(timed(lambda: searcher.search(text, options)))
    result = searcher.search(texts[0], options)
    return {"index": result.index, **latencies(first), "cached_p50_ms": round(percentile(cached, 50), 3),
            "encode_p50_ms": round(percentile(encode, 50), 2), "vector_p50_ms": round(percentile(vector, 50), 3),
            "first_query_s": round(first_ms / 1e3, 3), "queries": len(texts)}


def _keep(result, encode: list[float], vector: list[float]) -> None:
    assert not result.cached_query, "timed queries must miss the cache"
    encode.append(result.timings_ms["encode"])
    vector.append(result.timings_ms["vector"])


def faiss_recall(store: Store, query_sets: dict[str, np.ndarray]) -> dict:
    """recall@10 of the store's persisted index (as the Searcher uses it) against exact search, per query set."""
    exact, approximate = (index_for(store, "video_feature", kind) for kind in ("exact", "faiss"))
    record: dict = {"index": approximate.kind}
    for name, queries in query_sets.items():
        _, truth = exact.search(queries, 10)
        search_ms = [timed(lambda: approximate.search(query[None], 10)) for query in queries]
        _, found = approximate.search(queries, 10)
        recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth.tolist(), found.tolist())])
        record[name] = {"recall_at_10": round(float(recall), 4), "search_p50_ms": round(percentile(search_ms, 50), 3),
                        "queries": len(queries)}
    return record


def random_directions(count: int, *, seed: int) -> np.ndarray:
    """Unit vectors uniform on the sphere: queries unrelated to the data's clusters."""
    return _unit(np.random.default_rng(seed).standard_normal((count, DIM), dtype=np.float32))


class SeedPath:
    """The thesis' query path: 77-token fp32 encoding, exact numpy search over arrays read from a pandas pickle."""

    def __init__(self, model: VideoTextModel, vectors: np.ndarray, workdir: Path):
        import pandas as pd

        path = workdir / "seed_features.pkl"
        pd.DataFrame({"video_id": np.arange(len(vectors)), "video_feature": list(vectors)}).to_pickle(path)
        frame = pd.read_pickle(path)
        self.model, self.features = model, np.stack(frame["video_feature"].to_numpy())
        self.blas = ThreadpoolController()

    @torch.no_grad()
    def search(self, text: str, k: int = 10) -> np.ndarray:
        tokens = self.model.tokenize([text])  # the full 77-token context
        query = F.normalize(self.model.clip.encode_text(tokens).float(), dim=-1)[0].numpy()
        with self.blas.limit(limits=1, user_api="blas"):  # as ours: an idle second BLAS thread spins
            scores = self.features @ query
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]


def compare_with_seed(model: VideoTextModel, searcher: Searcher, vectors: np.ndarray, texts: list[str],
                      workdir: Path, threads: int) -> dict:
    """The thesis' path and ours (exact) at the same store, interleaved query by query."""
    seed = SeedPath(model, vectors, workdir)
    options = SearchOptions(k=10, index="exact")
    seed_ms, ours_ms = [], []
    with intra_op_threads(threads):
        seed.search("warm-up")
        for text in texts:
            seed_ms.append(timed(lambda: seed.search(text)))
            ours_ms.append(timed(lambda: searcher.search(text, options)))
    return {"seed": latencies(seed_ms), "ours": latencies(ours_ms), "queries": len(texts)}


def compare_bf16(model: VideoTextModel, store: Store, texts: list[str], threads: int) -> dict:
    """The opt-in bf16 query tower: latency against fp32 (interleaved) and top-10 rows shared with fp32."""
    searchers = {p: Searcher(store, ModelQueryEncoder(model, precision=p, threads=threads)) for p in ("fp32", "bf16")}
    options = SearchOptions(k=10, index="exact")
    times: dict[str, list[float]] = {p: [] for p in searchers}
    overlap, cosines = [], []
    for text in texts:
        hits = {}
        for precision, searcher in searchers.items():
            times[precision].append(timed(lambda: hits.setdefault(precision, searcher.search(text, options))))
        rows = [{hit.video_id for hit in hits[p].hits} for p in searchers]
        overlap.append(len(rows[0] & rows[1]) / 10)
        vectors = [searchers[p].encode(text)[0] for p in searchers]
        cosines.append(float(vectors[0] @ vectors[1]))
    return {"fp32": latencies(times["fp32"]), "bf16": latencies(times["bf16"]),
            "top10_overlap_with_fp32": round(float(np.mean(overlap)), 4),
            "min_cosine_to_fp32": round(min(cosines), 6), "queries": len(texts)}


def run_size(rows: int, model: VideoTextModel, workdir: Path, args: argparse.Namespace, offset: int) -> dict:
    vectors = clustered_vectors(rows, seed=rows, clusters=args.clusters)
    started = time.perf_counter()
    feature_store.write(workdir / f"store{rows}", {"video_feature": vectors}, fingerprint=model.fingerprint,
                        index_min_rows=args.index_min_rows)
    log(f"  {rows} rows: store written in {time.perf_counter() - started:.1f} s")
    store = Store.open(workdir / f"store{rows}")
    searcher = Searcher(store, ModelQueryEncoder(model, threads=args.threads))
    record: dict = {"rows": rows}
    for number, index in enumerate(("exact", "faiss")):
        count = args.queries if rows < 1_000_000 or index == "faiss" else max(10, args.queries // 4)
        record[index] = measure_searcher(searcher, query_texts(count, offset=offset + 100_000 * number), index)
        emit({"bench": "search", "rows": rows, **record[index]})
    queries = {"cluster_queries": clustered_vectors(args.recall_queries, seed=rows + 1, clusters=args.clusters),
               "random_queries": random_directions(args.recall_queries, seed=rows + 2)}
    record["recall"] = faiss_recall(store, queries)
    emit({"bench": "search", "rows": rows, "measure": "faiss_recall", **record["recall"]})
    if rows == SEED_ROWS:
        texts = query_texts(args.queries, offset=offset + 200_000)
        record["seed"] = compare_with_seed(model, searcher, vectors, texts, workdir, args.threads)
        emit({"bench": "search", "rows": rows, "measure": "seed_vs_ours", **record["seed"]})
        record["bf16"] = compare_bf16(model, store, query_texts(args.queries, offset=offset + 300_000), args.threads)
        emit({"bench": "search", "rows": rows, "measure": "bf16_query_tower", **record["bf16"]})
    return record


def run(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in (args.sizes or ("1000,10000" if args.quick else "1000,10000,100000,1000000")).split(",")]
    if SEED_ROWS not in sizes:
        raise SystemExit(f"--sizes must include {SEED_ROWS}: the thesis' path is compared there")
    args.queries = args.queries or (10 if args.quick else 100)
    args.recall_queries = min(args.recall_queries, 50) if args.quick else args.recall_queries
    torch.manual_seed(0)
    model = create_model(ModelConfig()).eval()
    log(f"search bench: sizes {sizes}, {args.queries} queries each, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="vidsearch-bench-search-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        records = {rows: run_size(rows, model, workdir, args, offset=10 * rows) for rows in sizes}
    seed = records[SEED_ROWS]["seed"]
    summary("search", seed["seed"]["p50_ms"] / seed["ours"]["p50_ms"], baseline="the thesis' path at 10k",
            seed_p50_ms=seed["seed"]["p50_ms"], vidsearch_p50_ms_10k=seed["ours"]["p50_ms"],
            p50_ms={f"{rows}/{index}": records[rows][index]["p50_ms"]
                    for rows in sizes for index in ("exact", "faiss")},
            recall_at_10={rows: records[rows]["recall"]["cluster_queries"]["recall_at_10"] for rows in sizes},
            recall_at_10_random_queries={rows: records[rows]["recall"]["random_queries"]["recall_at_10"]
                                         for rows in sizes},
            clusters=args.clusters,
            bf16_top10_overlap=records[SEED_ROWS]["bf16"]["top10_overlap_with_fp32"], threads=args.threads)
