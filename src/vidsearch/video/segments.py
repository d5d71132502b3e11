"""Moments of long videos: fixed windows or shots, each to get its own keyframes so search can answer with a moment.

A window is `(start, end)` in seconds from the first frame, end exclusive. `fixed_windows` cuts every S seconds;
`shot_windows` cuts where the picture changes abruptly. Neither leaves a last moment shorter than `MIN_SHOT_SECONDS`
(or half a fixed window, if that is shorter): such a tail (a 10.04 s video cut every 5 s) joins the moment before it
rather than stand alone as a moment of one frame, labelled "0:10–0:10". Shot changes are found by frame difference
on small grey frames (mean absolute difference of 64×36 luma thumbnails above a threshold), which needs no extra
library: PySceneDetect would bring opencv-python, which clashes with the headless OpenCV the benchmarks use.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from vidsearch.video.samplers import consecutive_differences

THUMBNAIL_SIZE = (64, 36)
MIN_SHOT_SECONDS = 1.0


def fixed_windows(*, duration: float, seconds: float,
                  min_seconds: float = MIN_SHOT_SECONDS) -> list[tuple[float, float]]:
    """Consecutive windows of `seconds` covering [0, duration); the last one may be shorter, or longer by a tail
    shorter than `min_seconds` (or than half a window)."""
    count = max(1, math.ceil(duration / seconds - 1e-9))
    starts = _without_short_tail([k * seconds for k in range(count)], duration, min(min_seconds, seconds / 2))
    return list(zip(starts, starts[1:] + [duration]))


def shot_differences(thumbnails: Iterable[np.ndarray]) -> np.ndarray:
    """Mean absolute difference in [0, 1] between consecutive grey thumbnails (0 for the first)."""
    return consecutive_differences(thumbnails, prepare=_as_float, distance=_mean_absolute_difference)


def shot_windows(*, timestamps: np.ndarray, differences: np.ndarray, duration: float, threshold: float,
                 min_seconds: float = MIN_SHOT_SECONDS) -> list[tuple[float, float]]:
    """Windows between shot changes: frames whose difference exceeds `threshold`, at least `min_seconds` apart
    (and from the end)."""
    starts = [0.0]
    for index in np.flatnonzero(np.asarray(differences) > threshold):
        if timestamps[index] - starts[-1] >= min_seconds:
            starts.append(float(timestamps[index]))
    starts = _without_short_tail(starts, duration, min_seconds)
    return list(zip(starts, starts[1:] + [duration]))


def _without_short_tail(starts: list[float], duration: float, min_seconds: float) -> list[float]:
    """The window starts, less the last one if its window would be shorter than `min_seconds` (never the first)."""
    return starts[:-1] if len(starts) > 1 and duration - starts[-1] < min_seconds else starts


def frames_in(timestamps: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Indices of the frames shown within the window."""
    first, stop = np.searchsorted(timestamps, window, side="left")
    return np.arange(first, stop)


def _as_float(thumbnail: np.ndarray) -> np.ndarray:
    return thumbnail.astype(np.float32) / 255.0


def _mean_absolute_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())
