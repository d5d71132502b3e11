"""Properties of the retrieval metrics over generated similarity matrices (Hypothesis), ties included."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vidsearch.eval.metrics import retrieval_metrics, text_to_video_ranks, video_to_text_ranks

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def matrices(draw) -> tuple[np.ndarray, np.ndarray]:
    """sim [captions, videos] with scores from a few levels (so ties are common) and each caption's video."""
    videos = draw(st.integers(1, 12))
    caption_video = np.array(draw(st.lists(st.integers(0, videos - 1), min_size=1, max_size=30)))
    levels = st.sampled_from([-1.0, -0.25, 0.0, 0.1, 0.5, 0.5000001, 1.0])
    sim = draw(hnp.arrays(np.float32, (caption_video.size, videos), elements=levels))
    return sim, caption_video


@st.composite
def matrices_and_permutations(draw) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sim, caption_video = draw(matrices())
    videos = np.array(draw(st.permutations(range(sim.shape[1]))))
    captions = np.array(draw(st.permutations(range(sim.shape[0]))))
    return sim, caption_video, videos, captions


@SETTINGS
@given(matrices_and_permutations())
def test_reordering_the_videos_changes_no_rank(case):
    sim, caption_video, order, _ = case
    new_column = np.argsort(order)  # video order[j] moves to column j
    moved_sim, moved_truth = sim[:, order], new_column[caption_video]
    assert text_to_video_ranks(moved_sim, moved_truth).tolist() == text_to_video_ranks(sim, caption_video).tolist()
    before = dict(zip(np.unique(caption_video), video_to_text_ranks(sim, caption_video)))
    after = dict(zip(np.unique(moved_truth), video_to_text_ranks(moved_sim, moved_truth)))
    assert {order[column]: rank for column, rank in after.items()} == before


@SETTINGS
@given(matrices_and_permutations())
def test_reordering_the_queries_reorders_their_ranks_only(case):
    sim, caption_video, _, order = case
    moved_sim, moved_truth = sim[order], caption_video[order]
    ranks = text_to_video_ranks(sim, caption_video)
    assert text_to_video_ranks(moved_sim, moved_truth).tolist() == ranks[order].tolist()
    assert video_to_text_ranks(moved_sim, moved_truth).tolist() == video_to_text_ranks(sim, caption_video).tolist()
    assert retrieval_metrics(moved_sim, moved_truth) == retrieval_metrics(sim, caption_video)


@SETTINGS
@given(matrices())
def test_recalls_and_ranks_stay_within_their_bounds(case):
    sim, caption_video = case
    captions, videos = sim.shape
    own = np.bincount(caption_video)[np.unique(caption_video)]  # each captioned video's own captions
    worst = {"text_to_video": videos, "video_to_text": 1 + captions - own.min()}  # only others compete
    for direction, m in retrieval_metrics(sim, caption_video).items():
        assert 0.0 <= m.r1 <= m.r5 <= m.r10 <= 100.0
        assert 1.0 <= m.mdr <= worst[direction] and 1.0 <= m.mnr <= worst[direction]
        assert m.queries == (captions if direction == "text_to_video" else own.size)
    assert (video_to_text_ranks(sim, caption_video) <= 1 + captions - own).all()
    assert (text_to_video_ranks(sim, caption_video) <= videos).all()


@SETTINGS
@given(matrices())
def test_recall_is_the_share_of_ranks_within_k(case):
    sim, caption_video = case
    ranks = text_to_video_ranks(sim, caption_video)
    m = retrieval_metrics(sim, caption_video)["text_to_video"]
    assert (m.r1, m.r5, m.r10) == tuple(100.0 * np.mean(ranks <= k) for k in (1, 5, 10))
    assert m.mdr == np.median(ranks) and m.mnr == np.mean(ranks)


@SETTINGS
@given(matrices(), st.integers(1, 40))
def test_chunked_and_whole_computation_agree(case, chunk):
    sim, caption_video = case
    assert retrieval_metrics(sim, caption_video, chunk=chunk) == retrieval_metrics(sim, caption_video, chunk=10**6)
    assert text_to_video_ranks(sim, caption_video, chunk=chunk).tolist() == \
        text_to_video_ranks(sim, caption_video, chunk=10**6).tolist()


@SETTINGS
@given(matrices(), st.data())
def test_raising_a_ground_truth_score_never_worsens_its_rank(case, data):
    sim, caption_video = case
    row = data.draw(st.integers(0, sim.shape[0] - 1))
    raised = sim.copy()
    raised[row, caption_video[row]] += np.float32(0.5)
    assert text_to_video_ranks(raised, caption_video)[row] <= text_to_video_ranks(sim, caption_video)[row]
