"""Properties of the keyframe samplers over generated timestamps and scores (Hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vidsearch.video import samplers

SETTINGS = settings(max_examples=200, deadline=None)
COUNTS = st.integers(1, 40)
RATES = st.floats(0.05, 30.0, allow_nan=False)


@st.composite
def timestamps(draw) -> np.ndarray:
    """Increasing presentation times in seconds from 0, some gaps large, some tiny (as variable frame rates have)."""
    steps = draw(st.lists(st.floats(1e-4, 20.0, allow_nan=False), max_size=300))
    return np.concatenate(([0.0], np.cumsum(steps)))


def assert_valid_selection(chosen: np.ndarray, *, length: int, num_frames: int) -> None:
    """Sorted, distinct, integer indices into a sequence of `length`, at most `num_frames` of them."""
    assert chosen.dtype.kind == "i"
    assert 0 < len(chosen) <= num_frames
    assert (np.diff(chosen) > 0).all()
    assert 0 <= chosen[0] and chosen[-1] < length


@SETTINGS
@given(timestamps(), COUNTS, RATES)
def test_uniform_picks_first_frames_of_distinct_bins(times, num_frames, fps):
    chosen = samplers.uniform(times, num_frames=num_frames, fps=fps)
    assert_valid_selection(chosen, length=len(times), num_frames=num_frames)
    bins = np.floor(times * fps + 1e-9)
    assert len(np.unique(bins[chosen])) == len(chosen)  # never two frames of one bin
    assert len(chosen) == min(num_frames, len(np.unique(bins)))
    assert chosen[0] == 0  # the first frame always opens the first bin
    assert all(i == 0 or bins[i - 1] != bins[i] for i in chosen)  # each is the first frame of its bin


@SETTINGS
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200, unique=True), COUNTS)
def test_evenly_spaced_keeps_both_ends(values, num_frames):
    indices = np.array(sorted(values))
    chosen = samplers.evenly_spaced(indices, num_frames=num_frames)
    assert len(chosen) == min(num_frames, len(indices))
    assert (np.diff(chosen) > 0).all() and set(chosen.tolist()) <= set(indices.tolist())
    assert chosen[0] == indices[0] and (num_frames == 1 or chosen[-1] == indices[-1])


@SETTINGS
@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=300), COUNTS)
def test_maxdiff_takes_the_highest_scores_in_time_order(values, num_frames):
    scores = np.array(values)
    chosen = samplers.maxdiff(scores, num_frames=num_frames)
    assert_valid_selection(chosen, length=len(scores), num_frames=num_frames)
    assert len(chosen) == min(num_frames, len(scores))
    left_out = np.setdiff1d(np.arange(len(scores)), chosen)
    if len(left_out):
        assert scores[chosen].min() >= scores[left_out].max()
