"""Keyframe samplers (the thesis §3.3): which frames of a video become keyframes.

Samplers are plain functions with keyword-only parameters that return frame indices in time order. They work on
what is cheap to know before decoding pixels (timestamps from a demux-only pass) or on scores from one pass over
small luma frames, so that the frames themselves are decoded and converted once, and only the chosen ones.

- `uniform`: the first frame of every 1/`fps` seconds; more than `num_frames` of those → `num_frames` evenly spaced
  (the thesis' test-time choice); fewer → all of them (the loader pads).
- `maxdiff`: the `num_frames` frames that differ most from their predecessor, back in time order. The difference
  (`maxdiff_scores`) is the sum of absolute differences between consecutive frames after a centre square crop and a
  Gaussian blur, on luma (brightness), which carries the picture's changes at a third of the cost of RGB.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageFilter

BLUR_RADIUS = 2.0


def uniform(timestamps: np.ndarray, *, num_frames: int, fps: float = 1.0) -> np.ndarray:
    """Indices of the first frame in each 1/fps-second bin, thinned to `num_frames` evenly spaced ones."""
    bins = np.floor(np.asarray(timestamps, dtype=np.float64) * fps + 1e-9).astype(np.int64)
    firsts = np.flatnonzero(np.concatenate(([True], bins[1:] != bins[:-1])))
    return evenly_spaced(firsts, num_frames=num_frames)


def evenly_spaced(indices: np.ndarray, *, num_frames: int) -> np.ndarray:
    """`num_frames` of `indices` spread evenly from the first to the last, or all of them if there are fewer."""
    if len(indices) <= num_frames:
        return np.asarray(indices, dtype=np.int64)
    return np.asarray(indices)[np.linspace(0, len(indices) - 1, num_frames).round().astype(np.int64)]


def maxdiff(scores: np.ndarray, *, num_frames: int) -> np.ndarray:
    """Indices of the `num_frames` highest scores in time order; ties go to the earlier frame."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.sort(order[:num_frames])


def maxdiff_scores(frames: Iterable[np.ndarray]) -> np.ndarray:
    """For each luma frame [H, W], the sum of absolute differences to the previous one (0 for the first)."""
    return consecutive_differences(frames, prepare=blurred_centre, distance=_absolute_difference_sum)


def blurred_centre(frame: np.ndarray) -> np.ndarray:
    """The centre square of a luma frame, Gaussian-blurred against noise, as int32."""
    height, width = frame.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(frame[top:top + side, left:left + side]))
    return np.asarray(square.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)), dtype=np.int32)


def consecutive_differences(frames: Iterable[np.ndarray], *, prepare: Callable[[np.ndarray], np.ndarray],
                            distance: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    """distance(prepare(frame i-1), prepare(frame i)) for every frame, 0 for the first; one pass, two frames held."""
    scores, previous = [], None
    for frame in frames:
        current = prepare(frame)
        scores.append(0.0 if previous is None else distance(previous, current))
        previous = current
    return np.asarray(scores, dtype=np.float64)


def _absolute_difference_sum(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum())
