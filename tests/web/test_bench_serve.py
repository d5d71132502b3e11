"""The serving benchmark's parts: its store, its open-loop client and its summary."""

import argparse
import json
import threading
import time

import pytest

from vidsearch.bench import serve as bench
from vidsearch.model.source import ModelSource
from vidsearch.runtime.exported import ExportedModel, read_exported_config
from vidsearch.store.indexer import open_searcher
from vidsearch.store.search import SearchOptions
from vidsearch.video.cache import open_cache


def test_queries_are_distinct():
    texts = bench.queries(500)
    assert len(set(texts)) == 500


def test_the_store_is_searchable_with_the_tiny_model_and_its_cache_opens(tmp_path):
    store = bench.build_library(tmp_path, videos=50, source=bench.MODELS["tiny"])
    result = open_searcher(store).search("a red circle moves left", SearchOptions(k=5))
    assert len(result.hits) == 5
    cache = open_cache(tmp_path / "cache")
    assert cache.entries[result.hits[0].video_id].frames == [result.hits[0].thumbnail]


def test_the_client_is_open_loop():
    # Each answer waits until all ten requests are in flight: a client that waited for an answer before sending the
    # next request would break the barrier.
    all_sent = threading.Barrier(10, timeout=60)

    def answer_when_all_are_sent(url, scheduled):
        all_sent.wait()
        finished = time.perf_counter()
        return bench.Sample((finished - scheduled) * 1e3, 200 if url != "bad" else 500, finished)

    run = bench.open_loop(["a"] * 9 + ["bad"], rate=50.0, fetch=answer_when_all_are_sent)
    assert [sample.status for sample in run.samples] == [200] * 9 + [500]
    assert run.rate == 50.0 and all(sample.finished >= run.started for sample in run.samples)


def _run(finished: list[float], statuses: list[int | None], *, rate: float) -> bench.Run:
    """A run that started at t = 100 s whose i-th request, sent at 100 + i / rate, was answered at finished[i]."""
    samples = [bench.Sample((end - 100.0 - i / rate) * 1e3, status, end)
               for i, (end, status) in enumerate(zip(finished, statuses))]
    return bench.Run(100.0, rate, samples)


def test_a_server_that_keeps_up_achieves_the_offered_rate():
    report = bench.latency_summary(_run([100.0 + i / 10 + 0.02 for i in range(10)], [200] * 10, rate=10.0))
    assert (report["requests"], report["errors"], report["achieved_rate"]) == (10, 0, 10.0)
    assert report["p50_ms"] == report["max_ms"] == 20.0


def test_the_achieved_rate_counts_answers_not_sends():
    # Answers every 0.5 s while 10 requests/s are offered: the last of 9 answers comes 4.5 s after the start.
    report = bench.latency_summary(_run([100.0 + i * 0.5 for i in range(1, 11)], [200] * 9 + [None], rate=10.0))
    assert (report["requests"], report["errors"], report["error_rate"]) == (10, 1, 0.1)
    assert report["achieved_rate"] == 2.0  # 9 answers in 4.5 s


def test_by_default_the_benchmarks_serve_vit_b_32_with_random_weights():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args([])
    assert args.model == "vit-b-32"
    assert bench.MODELS[args.model] == ModelSource(backbone="ViT-B-32")  # no checkpoint, weights or pretrained tag
    assert parser.parse_args(["--model", "tiny"]).model == "tiny"


def _fake_export(directory, *, source_fingerprint):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"format": "vidsearch-exported", "version": 1,
                                                       "source_fingerprint": source_fingerprint}))


def test_the_int8_export_in_the_workdir_is_reused_while_it_is_the_models(tmp_path, monkeypatch):
    exports = []
    monkeypatch.setattr(bench, "export_model",
                        lambda model, out, *, int8: exports.append((model.fingerprint, out, int8)))
    fingerprint = bench.MODELS["tiny"].load().fingerprint
    _fake_export(tmp_path / "tiny-int8", source_fingerprint=fingerprint)
    sources = bench.engine_sources("tiny", tmp_path)
    assert sources == {"pytorch": bench.MODELS["tiny"],
                       "onnx_int8": ModelSource(exported=str((tmp_path / "tiny-int8").resolve()))}
    assert exports == []


def test_an_export_of_another_model_in_the_workdir_is_replaced(tmp_path, monkeypatch):
    exports = []
    monkeypatch.setattr(bench, "export_model",
                        lambda model, out, *, int8: exports.append((model.fingerprint, out, int8)))
    _fake_export(tmp_path / "tiny-int8", source_fingerprint="0" * 64)
    bench.engine_sources("tiny", tmp_path)
    assert exports == [(bench.MODELS["tiny"].load().fingerprint, tmp_path / "tiny-int8", True)]
    assert not (tmp_path / "tiny-int8").exists()  # the stale export was removed before exporting afresh


@pytest.mark.slow
def test_the_int8_engine_store_is_searched_with_the_int8_export(tmp_path):
    sources = bench.engine_sources("tiny", tmp_path / "work")
    store = bench.build_library(tmp_path / "int8", videos=50, source=sources["onnx_int8"])
    searcher = open_searcher(store)
    assert isinstance(searcher.encoder, ExportedModel) and searcher.encoder.precision == "int8"
    assert searcher.encoder.fingerprint == read_exported_config(sources["onnx_int8"].exported)["fingerprint"]
    assert len(searcher.search("a red circle moves left", SearchOptions(k=5)).hits) == 5
