"""The keyframe-cache benchmark's parts, at a few entries."""

from vidsearch.bench import cache as bench
from vidsearch.video.cache import open_cache


def test_both_layouts_hold_the_same_entries_and_one_is_added(tmp_path, capsys):
    v2 = bench._measure_v2(tmp_path / "v2", 30, repeat=1)
    v1 = bench._measure_v1(tmp_path / "v1", 30, repeat=1)
    assert (v2["entries"], v1["entries"]) == (30, 30) and v2["bytes"] > 0 and v1["bytes"] > 0
    new, old = open_cache(tmp_path / "v2"), open_cache(tmp_path / "v1")
    assert [e for e in new.ok() if e.id < "video0000030"] == list(old.ok())
    assert new.count() == 30 + 1 + 20  # a warm-up add, then 20 timed
    assert new.entry("video0000050").frames[-1] == "frames/video0000050/0011.jpg"
    assert (tmp_path / "v2" / "frames" / "video0000050" / "0011.jpg").is_file()
