"""Samplers and moment windows as pure functions of timestamps and scores."""

import numpy as np
import pytest

from vidsearch.video import samplers, segments
from vidsearch.video.decode import DecodeLimits, iter_frames, probe


def test_uniform_bins_follow_the_rate():
    timestamps = np.arange(0, 4, 0.25)  # 4 fps, 4 s
    assert samplers.uniform(timestamps, num_frames=12, fps=1.0).tolist() == [0, 4, 8, 12]
    assert samplers.uniform(timestamps, num_frames=12, fps=2.0).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]


def test_uniform_with_gaps_keeps_only_seconds_that_have_frames():
    assert samplers.uniform(np.array([0.0, 0.5, 3.2, 3.9, 7.0]), num_frames=12).tolist() == [0, 2, 4]


def test_evenly_spaced_includes_both_ends():
    assert samplers.evenly_spaced(np.arange(100, 120), num_frames=5).tolist() == [100, 105, 110, 114, 119]
    assert samplers.evenly_spaced(np.arange(3), num_frames=5).tolist() == [0, 1, 2]


def test_maxdiff_takes_the_largest_in_time_order_and_breaks_ties_early():
    scores = np.array([0.0, 5.0, 1.0, 9.0, 5.0, 5.0, 2.0])
    assert samplers.maxdiff(scores, num_frames=3).tolist() == [1, 3, 4]
    assert samplers.maxdiff(scores, num_frames=10).tolist() == list(range(7))


def test_maxdiff_scores_are_blurred_absolute_differences_of_the_centre_square():
    still = np.full((40, 60), 50, np.uint8)
    edge_changed = still.copy()
    edge_changed[:, :5] = 255  # outside the centre 40×40 square: ignored
    centre_changed = still.copy()
    centre_changed[10:30, 20:40] = 150
    scores = samplers.maxdiff_scores([still, still, edge_changed, centre_changed])
    assert scores[:3].tolist() == [0.0, 0.0, 0.0]
    assert scores[3] == pytest.approx(20 * 20 * 100, rel=0.02)  # blurring moves the change around, keeps its sum


def test_fixed_windows_cover_the_video():
    assert segments.fixed_windows(duration=35.0, seconds=10) == [(0, 10), (10, 20), (20, 30), (30, 35.0)]
    assert segments.fixed_windows(duration=4.0, seconds=10) == [(0, 4.0)]


def test_a_short_tail_joins_the_previous_fixed_window():
    """10.04 s cut every 5 s used to end with a 0.04 s moment shown as "0:10–0:10"."""
    assert segments.fixed_windows(duration=10.04, seconds=5) == [(0, 5), (5, 10.04)]
    assert segments.fixed_windows(duration=11.0, seconds=5) == [(0, 5), (5, 10), (10, 11.0)]  # 1 s stands alone
    assert segments.fixed_windows(duration=1.1, seconds=0.5) == [(0, 0.5), (0.5, 1.1)]  # under half a window
    assert segments.fixed_windows(duration=0.04, seconds=5) == [(0, 0.04)]


def test_a_shot_change_just_before_the_end_starts_no_moment():
    timestamps = np.arange(0, 10, 0.1)
    differences = np.zeros(100)
    differences[[30, 95]] = 0.5  # cuts at 3.0 s and at 9.5 s, half a second before the end
    windows = segments.shot_windows(timestamps=timestamps, differences=differences, duration=10.0, threshold=0.1)
    assert windows == [(0.0, 3.0), (3.0, 10.0)]


def test_frames_in_a_window_include_its_start_not_its_end():
    assert segments.frames_in(np.arange(0, 5, 0.5), (1.0, 2.5)).tolist() == [2, 3, 4]


def test_shot_windows_ignore_changes_closer_than_the_minimum():
    timestamps = np.arange(0, 10, 0.5)
    differences = np.zeros(20)
    differences[[4, 5, 12]] = 0.5  # 2.0 s, 2.5 s (too close to the previous cut), 6.0 s
    windows = segments.shot_windows(timestamps=timestamps, differences=differences, duration=10.0, threshold=0.1)
    assert windows == [(0.0, 2.0), (2.0, 6.0), (6.0, 10.0)]


def test_shots_are_found_where_the_picture_changes(videos):
    limits = DecodeLimits()
    info = probe(videos["shots"], limits=limits)
    thumbnails = iter_frames(videos["shots"], limits=limits, width=64, height=36)
    windows = segments.shot_windows(timestamps=info.timestamps, differences=segments.shot_differences(thumbnails),
                                    duration=info.duration, threshold=0.12)
    assert np.array(windows) == pytest.approx(np.array([(0.0, 12.0), (12.0, 25.0), (25.0, 31.0), (31.0, 40.0)]))
