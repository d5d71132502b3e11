"""The serving benchmark's parts: its store, its open-loop client and its summary."""

import time

from vidsearch.bench import serve as bench
from vidsearch.store.indexer import open_searcher
from vidsearch.store.search import SearchOptions
from vidsearch.video.cache import open_cache


def test_queries_are_distinct():
    texts = bench.queries(500)
    assert len(set(texts)) == 500


def test_the_store_is_searchable_with_the_tiny_model_and_its_cache_opens(tmp_path):
    store = bench.build_library(tmp_path, videos=50)
    result = open_searcher(store).search("a red circle moves left", SearchOptions(k=5))
    assert len(result.hits) == 5
    cache = open_cache(tmp_path / "cache")
    assert cache.entries[result.hits[0].video_id].frames == [result.hits[0].thumbnail]


def test_the_client_is_open_loop():
    def slow(url, scheduled):
        time.sleep(0.3)
        return bench.Sample((time.perf_counter() - scheduled) * 1e3, 200 if url != "bad" else 500)

    started = time.perf_counter()
    samples = bench.open_loop(["a"] * 9 + ["bad"], rate=50.0, fetch=slow)
    assert time.perf_counter() - started < 1.0  # sends did not wait for the 0.3 s answers
    assert all(sample.latency_ms >= 300 for sample in samples)
    report = bench.latency_summary(samples, seconds=0.2)
    assert (report["requests"], report["errors"], report["error_rate"]) == (10, 1, 0.1)
    assert report["p50_ms"] >= 300
