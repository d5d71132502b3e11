"""The keyframe cache: building (in worker processes), the manifest, moments, resuming and the reading API."""

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from vidsearch.cli import main
from vidsearch.config import FrameConfig
from vidsearch.video import cache as cache_module
from vidsearch.video.cache import CacheFormatError, build_cache, open_cache, open_for_writing
from vidsearch.video.workers import Outcome

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


# --- scale, concurrent writers and hostile inputs ------------------------------------------------------------------


def _as_version_1(cache_dir):
    """Rewrite a cache as version 1 wrote it: every entry in manifest.json, no database."""
    cache = open_cache(cache_dir)
    videos = {entry.id: dataclasses.asdict(entry) for entry in cache.entries.values()}
    manifest = {"format": "vidsearch.keyframes", "version": 1, "vidsearch": "0.1.0",
                "settings": json.loads((cache_dir / "manifest.json").read_text())["settings"], "videos": videos}
    for name in ("videos.sqlite3", "videos.sqlite3-wal", "videos.sqlite3-shm"):
        (cache_dir / name).unlink(missing_ok=True)
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    return videos


def test_a_version_1_cache_is_read_as_it_is_then_migrated_once_by_a_writer(videos, tmp_path):
    sources = [videos["h264"], videos["one"]]
    build_cache(sources, tmp_path, FrameConfig(size=16), workers=1)
    expected = _as_version_1(tmp_path)
    old = open_cache(tmp_path)
    assert {entry.id: dataclasses.asdict(entry) for entry in old.ok()} == expected
    assert old.count() == 2 and old.read_frames("h264").shape == (4, 16, 16, 3)
    report = build_cache([*sources, videos["vp9"]], tmp_path, FrameConfig(size=16), workers=1)
    assert (sorted(report.skipped), report.extracted) == (["h264", "one"], ["vp9"])
    assert json.loads((tmp_path / "manifest.json").read_text())["version"] == 2
    migrated = open_cache(tmp_path)
    assert {entry.id: dataclasses.asdict(entry) for entry in migrated.ok() if entry.id != "vp9"} == expected
    assert migrated.count("ok") == 3 and not list(tmp_path.glob(".videos*"))


def test_a_migration_interrupted_midway_changes_nothing(videos, tmp_path, monkeypatch):
    build_cache([videos["one"]], tmp_path, FrameConfig(size=16), workers=1)
    expected = _as_version_1(tmp_path)
    replace = os.replace

    def interrupted_at_the_database(source, target):
        if Path(target).name == "videos.sqlite3":
            raise KeyboardInterrupt
        replace(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", interrupted_at_the_database)
        with pytest.raises(KeyboardInterrupt):
            build_cache([videos["h264"]], tmp_path, FrameConfig(size=16), workers=1)
    old = open_cache(tmp_path)  # still version 1, all of it
    assert {entry.id: dataclasses.asdict(entry) for entry in old.entries.values()} == expected
    report = build_cache([videos["h264"]], tmp_path, FrameConfig(size=16), workers=1)
    assert report.extracted == ["h264"] and [entry.id for entry in open_cache(tmp_path).ok()] == ["h264", "one"]


def test_entries_are_read_by_id_and_new_rows_are_seen_without_reopening(videos, tmp_path):
    build_cache([videos["one"]], tmp_path, FrameConfig(size=16), workers=1)
    cache = open_cache(tmp_path)
    assert isinstance(cache.entries, Mapping) and not isinstance(cache.entries, dict)
    assert list(cache.entries) == ["one"] and "h264" not in cache.entries and cache.entries.get("h264") is None
    build_cache([videos["h264"]], tmp_path, FrameConfig(size=16), workers=1)
    assert [entry.id for entry in cache.ok()] == ["h264", "one"] and len(cache.entries) == cache.count("ok") == 2
    assert cache.entry("h264").frames == [f"frames/h264/{i:04d}.jpg" for i in range(4)]
    copy = pickle.loads(pickle.dumps(cache))  # a loader's worker process gets its own connection
    np.testing.assert_array_equal(copy.read_frames("h264"), cache.read_frames("h264"))
    child = os.fork()
    if child == 0:  # a forked loader worker reads through a connection of its own
        code = 1
        try:
            code = 0 if cache.entry("one").frames == ["frames/one/0000.jpg"] else 1
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert cache.count() == 2


def _build_in_another_process(inputs, out, *extra):
    return subprocess.run([sys.executable, "-m", "vidsearch", "frames", *map(str, inputs), "--out", str(out),
                           "--size", "16", "--workers", "1", *extra], capture_output=True, text=True, timeout=300)


def test_two_builds_at_once_into_one_cache_keep_every_video(videos, tmp_path, monkeypatch):
    """One build has named its videos and starts extracting when another build runs from start to end; then the
    first one finishes. Disjoint inputs, two of them with the same file name: every video ends in the cache."""
    mine, theirs = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    for path, name in [(mine, "h264"), (theirs, "vp9"), (tmp_path / "b" / "other.mp4", "one")]:
        path.parent.mkdir(exist_ok=True)
        shutil.copy(videos[name], path)
    other = []
    real_run = cache_module.run_isolated

    def run_after_the_other_build(*args, **kwargs):
        other.append(_build_in_another_process([tmp_path / "b"], tmp_path / "cache"))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(cache_module, "run_isolated", run_after_the_other_build)
    report = build_cache([mine], tmp_path / "cache", FrameConfig(size=16), workers=1)
    assert other[0].returncode == 0, other[0].stderr[-2000:]
    assert report.extracted == ["clip"]
    cache = open_cache(tmp_path / "cache")
    by_source = {entry.source: entry.id for entry in cache.ok()}
    assert by_source == {str(mine): "clip", str(theirs): "clip-2", str(tmp_path / "b" / "other.mp4"): "other"}
    build_cache(list(by_source), tmp_path / "alone", FrameConfig(size=16), workers=2)  # one build, the same ids
    alone = open_cache(tmp_path / "alone")
    for video_id in by_source.values():  # each id's frames are its own file's
        np.testing.assert_array_equal(cache.read_frames(video_id), alone.read_frames(video_id))


def test_a_build_with_other_settings_is_refused_while_another_runs(videos, tmp_path, monkeypatch):
    other = []
    real_run = cache_module.run_isolated

    def run_after_the_other_build(*args, **kwargs):
        other.append(_build_in_another_process([videos["one"]], tmp_path, "--frames", "3"))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(cache_module, "run_isolated", run_after_the_other_build)
    build_cache([videos["h264"]], tmp_path, FrameConfig(size=16), workers=1)
    assert other[0].returncode == 2 and "other settings" in other[0].stderr
    assert [entry.id for entry in open_cache(tmp_path).ok()] == ["h264"]


def test_a_250_character_file_name_gets_a_bounded_id(videos, tmp_path):
    long = tmp_path / "in" / ("a" * 250 + ".mp4")  # 254 bytes: as long as a file name may be
    long.parent.mkdir()
    shutil.copy(videos["one"], long)
    report = build_cache([long], tmp_path / "cache", FrameConfig(size=16), workers=1)
    assert not report.failed, report.summary()
    (video_id,) = report.extracted
    digest = hashlib.sha256(long.stem.encode()).hexdigest()[:12]
    assert video_id == "a" * (96 - 13) + "-" + digest and len(video_id.encode()) == 96
    assert open_cache(tmp_path / "cache").read_frames(video_id).shape[1:] == (16, 16, 3)


def test_an_unreadable_subdirectory_is_reported_and_counted_as_a_failure(videos, tmp_path, monkeypatch, capsys):
    (tmp_path / "in" / "locked").mkdir(parents=True)
    shutil.copy(videos["one"], tmp_path / "in" / "one.mp4")
    shutil.copy(videos["h264"], tmp_path / "in" / "locked" / "h264.mp4")
    scandir = os.scandir

    def refuse_locked(path="."):  # what scandir does without read permission (tests may run as root)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    assert main(["frames", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--size", "16",
                 "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "1 extracted" in out and "1 failed" in out
    assert f"unreadable {tmp_path / 'in' / 'locked'}: Permission denied" in out


def test_a_full_disk_stops_frames_with_one_line(videos, tmp_path, monkeypatch, capsys):
    def in_this_process(fn, tasks, **_):  # so that the injected error reaches the worker's code
        return (Outcome(task, result=fn(task)) for task in tasks)

    def disk_full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "run_isolated", in_this_process)
    monkeypatch.setattr(cache_module, "_write_frames", disk_full)
    assert main(["frames", str(videos["one"]), "--out", str(tmp_path), "--size", "16"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("vidsearch frames: error: no space left on the device for the keyframes "
                                           f"of {videos['one']} (No space left on device)") and "Traceback" not in err
    assert open_cache(tmp_path).count() == 0  # the video is not marked failed: it was never extracted


def test_keyframes_only_caches_intra_frames_at_their_own_times(videos, painted_index, tmp_path):
    """`frames --keyframes-only` on a clip with an intra frame every 0.7 s: the cache holds those frames, at their
    own times (0, 1.4, 2.1 s: the first intra frame of each second), not the frames the default sampler picks."""
    report = build_cache([videos["gop7"]], tmp_path / "kf", FrameConfig(size=48, keyframes_only=True), workers=1)
    assert report.failures == 0, report.summary()
    cache = open_cache(tmp_path / "kf")
    entry = next(cache.ok())
    assert entry.timestamps == pytest.approx([0.0, 1.4, 2.1])
    assert [painted_index(frame) for frame in cache.read_frames(entry.id)] == [0, 14, 21]


def test_keyframes_only_is_refused_with_the_maxdiff_sampler(videos, tmp_path):
    with pytest.raises(ValueError, match="uniform sampler only"):
        build_cache([videos["gop7"]], tmp_path / "kf", FrameConfig(sampler="maxdiff", keyframes_only=True))
    assert not (tmp_path / "kf").exists()


# --- byte-identical files and colliding names -----------------------------------------------------------------------


def test_byte_identical_files_are_reported_and_indexed_once_and_a_renamed_id_is_reported(videos, tmp_path, capsys):
    from vidsearch.store.store import Store

    library = tmp_path / "library"
    (library / "sub").mkdir(parents=True)
    for target in (library / "copy.mp4", library / "one.mp4", library / "sub" / "one.mp4"):
        shutil.copyfile(videos["one"], target)
    shutil.copyfile(videos["h264"], library / "h264.mp4")
    assert main(["frames", str(library), "--out", str(tmp_path / "cache"), "--size", "32", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("4 extracted (") and lines[1:] == [
        "  duplicate one: the same bytes as copy; `vidsearch index` indexes copy only",
        "  duplicate one-2: the same bytes as copy; `vidsearch index` indexes copy only",
        f"  renamed {library / 'sub' / 'one.mp4'} to one-2: the id one is another file's",
    ], lines
    cache = open_cache(tmp_path / "cache")
    assert {entry.id: entry.duplicate_of for entry in cache.ok()} == {"copy": None, "h264": None, "one": "copy",
                                                                     "one-2": "copy"}
    assert main(["index", "--random-weights", "--model", "vidsearch-tiny", "--frames", str(tmp_path / "cache"),
                 "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("indexed 2 videos (2 rows), 0 videos already in the store, 0 failed in the cache, "
                          "2 duplicates skipped (one = copy, one-2 = copy); store version "), out
    assert sorted(Store.open(tmp_path / "store").videos()) == ["copy", "h264"]
    # A later run with one more copy: the video already in the cache is the one kept.
    shutil.copyfile(videos["one"], library / "again.mp4")
    report = build_cache([library / "again.mp4"], tmp_path / "cache", FrameConfig(size=32), workers=1)
    assert report.duplicates == {"again": "copy"} and open_cache(tmp_path / "cache").entry("again").duplicate_of == \
        "copy"


def test_a_cache_database_made_before_duplicates_were_recorded_is_read_then_given_the_column(videos, tmp_path):
    build_cache([videos["one"]], tmp_path, FrameConfig(size=16), workers=1)
    with sqlite3.connect(tmp_path / "videos.sqlite3") as db:
        db.execute("ALTER TABLE videos DROP COLUMN duplicate_of")
    assert open_cache(tmp_path).entry("one").duplicate_of is None
    shutil.copyfile(videos["one"], tmp_path / "copy.mp4")
    report = build_cache([videos["one"], tmp_path / "copy.mp4"], tmp_path, FrameConfig(size=16), workers=1)
    assert (report.skipped, report.extracted, report.duplicates) == (["one"], ["copy"], {"copy": "one"})
    assert [(e.id, e.duplicate_of) for e in open_cache(tmp_path).ok()] == [("copy", "one"), ("one", None)]
