import pytest
import torch

from vidsearch.bench import store as bench


def test_use_reads_every_video_vector():
    """An exact search over all frames: changing the last frame of the last video changes the result."""
    data = bench.make_features(30)
    text, video = data["text_feature"], data["video_feature"].clone()
    before = bench.use(data["video_id"], text, video)
    video[-1, -1] = 10 * text[7, 0]
    assert bench.use(data["video_id"], text, video) > before + 1


@pytest.mark.parametrize("method", [m for m in bench.METHODS if m != "pandas_torch"])
def test_every_method_round_trips_the_workload(tmp_path, method):
    data = bench.make_features(30)
    expected = bench.use(data["video_id"], data["text_feature"], data["video_feature"])
    target = tmp_path / "store" if method == "vidsearch_store" else tmp_path / "data.pkl"
    assert bench.METHODS[method](target, data)() == pytest.approx(expected)


def test_measure_reports_medians(tmp_path):
    record = bench.measure("vidsearch_store", tmp_path, bench.make_features(30), repeats=2)
    assert record["status"] == "ok" and record["mb"] > 30 * 13 * 512 * 4 / 1e6
    # each figure is rounded to 0.1 ms, so their sum may differ from the rounded total by that much
    assert record["total_s"] == pytest.approx(record["save_s"] + record["load_use_cold_s"], abs=1.5e-4)
    assert record["load_use_hot_s"] > 0
    assert list(tmp_path.iterdir()) == []
