"""Which keyframes of a video make its T frames: shared by training, evaluation and indexing (and free of torch)."""

from __future__ import annotations

import numpy as np


def frame_positions(available: int, wanted: int, *, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """`wanted` positions among `available` keyframes and the mask of real frames.

    With `rng` (training): random positions in time order. Without (evaluation): evenly spaced, first and last
    included. Fewer than `wanted`: all of them, then the last repeated; the mask is True on the real prefix.
    """
    if available < 1 or wanted < 1:
        raise ValueError(f"need at least one keyframe and one wanted frame, got {available} and {wanted}")
    mask = np.arange(wanted) < available
    if available <= wanted:
        return np.minimum(np.arange(wanted), available - 1), mask
    if rng is None:
        return np.round(np.linspace(0, available - 1, wanted)).astype(np.int64), mask
    return np.sort(rng.choice(available, size=wanted, replace=False)), mask
