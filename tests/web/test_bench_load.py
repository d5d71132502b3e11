"""The load benchmark's parts: endless distinct queries, the sustained-rate rule, uploads through the real form."""

import itertools

import numpy as np
import pytest

from vidsearch.bench import load, serve
from vidsearch.video.encode import write_video


def test_queries_never_repeat_past_the_vocabulary():
    texts = list(itertools.islice(load.distinct_queries(), 3000))
    assert len(set(texts)) == 3000


@pytest.mark.parametrize("report, held", [
    ({"error_rate": 0.0, "p95_ms": 20.0, "achieved_rate": 99.0}, True),
    ({"error_rate": 0.02, "p95_ms": 20.0, "achieved_rate": 99.0}, False),  # errors
    ({"error_rate": 0.0, "p95_ms": 900.0, "achieved_rate": 99.0}, False),  # too slow
    ({"error_rate": 0.0, "p95_ms": None, "achieved_rate": 0.0}, False),  # no answers
    ({"error_rate": 0.0, "p95_ms": 20.0, "achieved_rate": 80.0}, False),  # falling behind
])
def test_a_rate_is_sustained_only_with_few_errors_low_p95_and_answers_keeping_up(report, held):
    assert load.is_sustained(report, rate=100.0, slo_ms=250.0) is held


@pytest.mark.slow
def test_an_upload_through_the_form_is_ingested_while_searches_are_answered(tmp_path):
    store = serve.build_library(tmp_path, videos=50, source=serve.MODELS["tiny"])
    clip = write_video(tmp_path / "clip.mp4", [np.full((64, 64, 3), 16 * i, np.uint8) for i in range(8)],
                       fps=4)
    with load.running_server(store, threads=2, workdir=tmp_path) as base:
        session = load.login(base, load.USER, load.create_user(store, load.USER))
        source = load.UploadSource(base, session, [(clip, ["a grey square fades in"])])
        busy, ingest = source.during(lambda: load.measure(base, iter(load.distinct_queries()), rate=5.0, seconds=2.0,
                                                          k=5), every_s=1.0)
    assert busy["errors"] == 0 and busy["requests"] == 10
    assert ingest["uploads_accepted"] == ingest["uploads_sent"] >= 1
    assert ingest["rows_added"] == ingest["uploads_accepted"]
