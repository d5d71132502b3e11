"""Broken and hostile inputs: each ends as a failed entry with its error; nothing stops the job."""

import math
import os
import time
from pathlib import Path

import av
import pytest

from vidsearch.config import FrameConfig
from vidsearch.video.cache import build_cache, open_cache
from vidsearch.video.workers import run_isolated

EXPECTED = {
    "zero.mp4": {"empty"},
    "truncated30.mp4": {"unreadable"},
    "truncated60.mp4": {"truncated", "corrupt", "decode_error"},
    "truncated90.mp4": {"truncated"},
    "truncated99.mp4": {"truncated"},
    "moov_missing.mp4": {"unreadable"},
    "random.mp4": {"unreadable"},
    "text.mp4": {"unreadable"},
    "concat.avi": {"format_not_allowed"},
    "playlist.m3u8": {"format_not_allowed"},
    "playlist.mp4": {"format_not_allowed", "unreadable"},  # FFmpeg 8 itself no longer probes HLS named .mp4
    "audio.mp4": {"no_video_stream"},
    "huge.avi": {"bad_dimensions"},
    "absurd.avi": {"bad_dimensions"},
}


def test_every_bad_input_fails_with_its_error(bad_videos, videos, tmp_path):
    report = build_cache([*bad_videos.values(), videos["one"]], tmp_path, FrameConfig(size=16), workers=2)
    assert report.extracted == ["one"]
    cache = open_cache(tmp_path)
    assert [entry.id for entry in cache.ok()] == ["one"]
    failed = {Path(entry.source).name: entry for entry in report.failed}
    assert sorted(failed) == sorted(EXPECTED)
    for name, entry in failed.items():
        assert entry.error["code"] in EXPECTED[name], (name, entry.error)
        assert entry.error["message"] and entry.frames == [] and entry.timestamps == []
        assert not (tmp_path / "frames" / entry.id).exists()


def test_playlists_would_open_other_files_without_the_whitelist(bad_videos):
    """The control for the test above: FFmpeg's defaults follow both playlists to target/clip.mp4."""
    for name in ("concat.avi", "playlist.m3u8"):
        with av.open(str(bad_videos[name])) as container:
            assert sum(1 for _ in container.decode(video=0)) == 35


def test_a_hanging_or_crashing_task_does_not_stop_the_others():
    started = time.monotonic()
    outcomes = list(run_isolated(time.sleep, [0.0, 30.0, 0.0], workers=1, timeout_s=1.0))
    assert [(o.task, o.failure) for o in outcomes] == [(0.0, None), (30.0, "timeout"), (0.0, None)]
    assert time.monotonic() - started < 10
    outcomes = list(run_isolated(os._exit, [3, 4], workers=2, timeout_s=10.0))
    assert sorted((o.task, o.failure) for o in outcomes) == [(3, "crashed"), (4, "crashed")]
    assert "exit code 3" in next(o.detail for o in outcomes if o.task == 3)
    (outcome,) = run_isolated(math.sqrt, [-1.0], workers=1, timeout_s=10.0)
    assert (outcome.failure, outcome.detail) == ("error", "ValueError: math domain error")


def test_children_can_run_at_a_lower_priority():
    """A web server's ingest children yield the CPU to its requests: `nice` reaches the child process."""
    own = os.nice(0)
    (plain,) = run_isolated(os.nice, [0], workers=1, timeout_s=30.0)
    (lowered,) = run_isolated(os.nice, [0], workers=1, timeout_s=30.0, nice=5)
    assert plain.result == own and lowered.result == min(19, own + 5)


def test_a_long_lived_worker_keeps_its_process_until_a_task_costs_it():
    from vidsearch.video.workers import IsolatedWorker

    pids = IsolatedWorker(os.readlink, timeout_s=30.0)  # readlink("/proc/self"): the process id of whoever runs it
    first, second = pids.run("/proc/self"), pids.run("/proc/self")
    pids.close()
    assert first.failure is None and first.result == second.result != str(os.getpid())
    assert pids.run("/proc/self").result not in (first.result, None)  # after close, a fresh process
    sleeper = IsolatedWorker(time.sleep, timeout_s=1.0)
    assert sleeper.run(30.0).failure == "timeout" and sleeper.run(0.0).failure is None
    exits = IsolatedWorker(os._exit, timeout_s=10.0)
    assert exits.run(3).failure == "crashed" and exits.run(4).failure == "crashed"
