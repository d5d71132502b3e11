"""The keyframe cache: building (in worker processes), the manifest, moments, resuming and the reading API."""

import json
import os
import shutil
import sqlite3

import numpy as np
import pytest

from vidsearch.cli import main
from vidsearch.config import FrameConfig
from vidsearch.video.cache import CacheFormatError, build_cache, open_cache, open_for_writing

GOOD = ("h264", "vp9", "mjpeg", "vfr", "rotated", "one")


@pytest.fixture(scope="module")
def cache(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    report = build_cache([videos[name] for name in GOOD], out, FrameConfig(size=32), workers=2)
    assert not report.failed and sorted(report.extracted) == sorted(GOOD)
    return open_cache(out)


def test_every_keyframe_is_the_frame_its_timestamp_names(cache, videos, painted_index):
    for entry in cache.ok():
        frames = cache.read_frames(entry.id)
        assert frames.shape == (len(entry.timestamps), 32, 32, 3) and frames.dtype == np.uint8
        shown = [painted_index(frame) for frame in frames]
        assert shown == {"vfr": [0, 4, 7, 9]}.get(entry.id, [round(t * 10) for t in entry.timestamps])


def test_manifest_entries_describe_the_source(cache, videos):
    entry = cache.entries["h264"]
    stat = videos["h264"].stat()
    assert (entry.source, entry.size, entry.mtime) == (str(videos["h264"]), stat.st_size, stat.st_mtime)
    assert (entry.status, entry.error, entry.moments) == ("ok", None, [])
    assert (entry.duration, entry.fps, entry.width, entry.height) == (3.5, 10.0, 64, 48)
    assert entry.timestamps == [0.0, 1.0, 2.0, 3.0]
    assert entry.frames == [f"frames/h264/{i:04d}.jpg" for i in range(4)]
    assert (cache.entries["rotated"].width, cache.entries["rotated"].height) == (48, 64)
    assert cache.settings == FrameConfig(size=32)


def test_read_frames_by_index(cache):
    np.testing.assert_array_equal(cache.read_frames("h264", [3, 1]), cache.read_frames("h264")[[3, 1]])
    assert cache.frame_path("h264", 2) == cache.root / "frames" / "h264" / "0002.jpg"


def test_segments_give_each_moment_its_own_keyframes(videos, tmp_path, painted_index):
    build_cache([videos["shots"]], tmp_path, FrameConfig(frames=3, size=32, segment_seconds=10), workers=1)
    entry = open_cache(tmp_path).entries["shots"]
    assert [(m.start, m.end) for m in entry.moments] == [(0, 10), (10, 20), (20, 30), (30, 40)]
    seconds = [[entry.timestamps[i] for i in moment.frames] for moment in entry.moments]
    assert seconds == [[0, 4, 9], [10, 14, 19], [20, 24, 29], [30, 34, 39]]
    frames = open_cache(tmp_path).read_frames("shots")
    assert [painted_index(frame) for frame in frames] == [round(t * 5) for t in entry.timestamps]


def test_scenes_give_a_moment_per_shot(videos, tmp_path):
    build_cache([videos["shots"]], tmp_path, FrameConfig(frames=2, size=32, scenes=True), workers=1)
    entry = open_cache(tmp_path).entries["shots"]
    assert [(m.start, m.end) for m in entry.moments] == [(0, 12), (12, 25), (25, 31), (31, 40)]
    assert [[entry.timestamps[i] for i in m.frames] for m in entry.moments] == [[0, 11], [12, 24], [25, 30], [31, 39]]


def test_maxdiff_cache(videos, tmp_path):
    build_cache([videos["jumps"]], tmp_path, FrameConfig(sampler="maxdiff", frames=4, size=32), workers=1)
    assert open_cache(tmp_path).entries["jumps"].timestamps == [0.5, 1.1, 1.7, 2.6]


def test_unchanged_videos_are_skipped_and_changed_ones_redone(videos, tmp_path):
    sources = [tmp_path / "in" / "a.mp4", tmp_path / "in" / "b.mp4"]
    sources[0].parent.mkdir()
    for source in sources:
        shutil.copy(videos["h264"], source)
    config = FrameConfig(size=16)
    assert sorted(build_cache(sources, tmp_path / "c", config, workers=1).extracted) == ["a", "b"]
    os.utime(sources[1], (1, 1))
    (tmp_path / "c" / "frames" / ".a.partial").mkdir()  # left behind by an interrupted run
    report = build_cache([sources[0].parent], tmp_path / "c", config, workers=1)
    assert (report.skipped, report.extracted) == (["a"], ["b"])
    assert sorted(p.name for p in (tmp_path / "c" / "frames").iterdir()) == ["a", "b"]
    with pytest.raises(CacheFormatError, match="other settings"):
        build_cache(sources, tmp_path / "c", FrameConfig(size=32), workers=1)


def test_colliding_stems_get_stable_numbered_ids(tmp_path):
    a, b, c = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", tmp_path / "c" / "..mp4"
    database = open_for_writing(tmp_path / "cache", FrameConfig(size=16))
    assert database.assign_ids([b]) == {b: "clip"}
    assert database.assign_ids([a, b, c]) == {a: "clip-2", b: "clip", c: "video"}
    assert open_for_writing(tmp_path / "cache", FrameConfig(size=16)).assign_ids([c, a]) == {c: "video", a: "clip-2"}


def test_open_cache_refuses_unknown_versions_and_escaping_paths(cache, tmp_path):
    manifest = json.loads((cache.root / "manifest.json").read_text())
    for change, message in [({"version": 99}, "version"), ({"format": "other"}, "format")]:
        (tmp_path / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(CacheFormatError, match=message):
            open_cache(tmp_path)
    shutil.copytree(cache.root, tmp_path / "copy")
    with sqlite3.connect(tmp_path / "copy" / "videos.sqlite3") as db:
        db.execute("UPDATE videos SET frames = ? WHERE id = 'h264'", (json.dumps(["frames/../../secret.jpg"]),))
    with pytest.raises(CacheFormatError, match="leaves"):
        open_cache(tmp_path / "copy").read_frames("h264")


def test_cli_exit_status_says_whether_any_video_failed(videos, bad_videos, tmp_path, capsys):
    assert main(["frames", str(videos["one"]), "--out", str(tmp_path / "ok"), "--size", "16"]) == 0
    assert main(["frames", str(videos["one"]), str(bad_videos["text.mp4"]), "--out", str(tmp_path / "bad"),
                 "--size", "16", "--workers", "1"]) == 1
    assert "failed text" in capsys.readouterr().out
    assert main(["frames", "http://example.com/v.mp4", "--out", str(tmp_path / "url")]) == 2
