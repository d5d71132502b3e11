import pytest

from vidsearch.bench import store as bench


@pytest.mark.parametrize("method", [m for m in bench.METHODS if m != "pandas_torch"])
def test_every_method_round_trips_the_workload(tmp_path, method):
    data = bench.make_features(30)
    expected = bench.use(data["video_id"], data["text_feature"], data["video_feature"])
    target = tmp_path / "store" if method == "vidsearch_store" else tmp_path / "data.pkl"
    assert bench.METHODS[method](target, data)() == pytest.approx(expected)


def test_measure_reports_medians(tmp_path):
    record = bench.measure("vidsearch_store", tmp_path, bench.make_features(30), repeats=2)
    assert record["status"] == "ok" and record["total_s"] > 0 and record["mb"] > 30 * 13 * 512 * 4 / 1e6
    assert list(tmp_path.iterdir()) == []
