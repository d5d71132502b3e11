import numpy as np
import pytest

from vidsearch.eval.metrics import (RetrievalMetrics, format_table, metrics_from_ranks, retrieval_metrics,
                                    text_to_video_ranks, video_to_text_ranks)

ONE_TIE = np.array([[0.9, 0.9, 0.1],
                    [0.2, 0.8, 0.3],
                    [0.1, 0.2, 0.7]])


def test_perfect_retrieval():
    result = retrieval_metrics(np.eye(4), np.arange(4))
    expected = RetrievalMetrics(r1=100.0, r5=100.0, r10=100.0, mdr=1.0, mnr=1.0, queries=4)
    assert result == {"text_to_video": expected, "video_to_text": expected}


def test_a_tie_counts_against_the_query():
    # CLIP4Clip's compute_metrics reports R@1 = 75% here (the tie adds a fourth "query"); pessimistic: 2 of 3
    ranks = text_to_video_ranks(ONE_TIE, np.arange(3))
    assert ranks.tolist() == [2, 1, 1]
    m = metrics_from_ranks(ranks)
    assert (m.r1, m.r5, m.mdr, m.mnr, m.queries) == (pytest.approx(200 / 3), 100.0, 1.0, pytest.approx(4 / 3), 3)


def test_all_equal_scores_rank_every_query_last():
    assert text_to_video_ranks(np.zeros((5, 5)), np.arange(5)).tolist() == [5] * 5
    assert video_to_text_ranks(np.zeros((5, 5)), np.arange(5)).tolist() == [5] * 5


def test_recall_at_5_and_10_and_median():
    # query i has exactly i other videos scoring above its own: ranks 1..12
    sim = np.zeros((12, 12))
    for i in range(12):
        sim[i, i] = 0.5
        sim[i, [j for j in range(12) if j != i][:i]] = 0.9
    ranks = text_to_video_ranks(sim, np.arange(12))
    assert ranks.tolist() == list(range(1, 13))
    m = metrics_from_ranks(ranks)
    assert (m.r1, m.r5, m.r10, m.mdr, m.mnr) == (pytest.approx(100 / 12), pytest.approx(500 / 12),
                                                   pytest.approx(1000 / 12), 6.5, 6.5)


def test_several_captions_per_video():
    caption_video = np.array([0, 0, 1, 2, 2])
    sim = np.array([[0.9, 0.1, 0.0],   # caption 0 of video 0: rank 1
                    [0.2, 0.5, 0.2],   # caption 1 of video 0: rank 2 (video 2 ties with video 0, video 1 above)
                    [0.3, 0.3, 0.1],   # caption 0 of video 1: tie with video 0 → rank 2
                    [0.0, 0.6, 0.4],   # caption 0 of video 2: rank 2
                    [0.1, 0.2, 0.3]])  # caption 1 of video 2: rank 1
    assert text_to_video_ranks(sim, caption_video).tolist() == [1, 3, 2, 2, 1]
    # video 0: best own caption 0.9, no other caption ≥ 0.9 → 1
    # video 1: own 0.3; captions of other videos ≥ 0.3: 0.5 (c1), 0.6 (c3) → 3
    # video 2: best own 0.4; others ≥ 0.4: none (0.0, 0.2, 0.1) → 1
    assert video_to_text_ranks(sim, caption_video).tolist() == [1, 3, 1]


def test_sibling_captions_do_not_compete_for_their_video():
    caption_video = np.array([0, 0, 1])
    sim = np.array([[0.7, 0.1], [0.7, 0.1], [0.2, 0.9]])
    assert video_to_text_ranks(sim, caption_video).tolist() == [1, 1]


def test_videos_without_captions_are_not_video_to_text_queries():
    sim = np.array([[0.9, 0.1, 0.95], [0.1, 0.8, 0.0]])  # video 2 has no caption but competes in text→video
    assert text_to_video_ranks(sim, np.array([0, 1])).tolist() == [2, 1]
    assert video_to_text_ranks(sim, np.array([0, 1])).tolist() == [1, 1]


def _reference_ranks(sim, caption_video):
    """The definitions written as plain loops."""
    t2v = [1 + sum(sim[c, v] >= sim[c, caption_video[c]] for v in range(sim.shape[1]) if v != caption_video[c])
           for c in range(sim.shape[0])]
    v2t = []
    for v in sorted(set(caption_video.tolist())):
        best = max(sim[c, v] for c in range(sim.shape[0]) if caption_video[c] == v)
        v2t.append(1 + sum(sim[c, v] >= best for c in range(sim.shape[0]) if caption_video[c] != v))
    return t2v, v2t


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_and_chunked_ranks_agree_with_the_definition(seed):
    rng = np.random.default_rng(seed)
    videos = int(rng.integers(3, 15))
    caption_video = rng.integers(0, videos, size=int(rng.integers(videos, 3 * videos)))
    sim = rng.integers(0, 4, size=(caption_video.size, videos)).astype(np.float32)  # many ties
    t2v, v2t = _reference_ranks(sim, caption_video)
    for chunk in (1, 2, 3, 7, 1024):
        assert text_to_video_ranks(sim, caption_video, chunk=chunk).tolist() == t2v
        assert video_to_text_ranks(sim, caption_video, chunk=chunk).tolist() == v2t


@pytest.mark.parametrize("sim, caption_video, message", [
    (np.array([[np.nan, 1.0], [0.0, 1.0]]), [0, 1], "NaN"),
    (np.zeros((2, 2)), [0, 2], "outside the matrix"),
    (np.zeros((3, 2)), [0, 1], "need sim"),
])
def test_bad_input_is_refused(sim, caption_video, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(sim, np.array(caption_video))


def test_format_table_in_the_seeds_layout():
    rows = {"meanP": RetrievalMetrics(42.04, 68.9, 79.61, 2.0, 16.23, 1000),
            "AIM": RetrievalMetrics(43.4, 71.1, 80.0, 2.5, 16.3, 1000)}
    assert format_table(rows, label="model") == (
        "| model | R@1↑ | R@5↑ | R@10↑ | MdR↓ | MnR↓ |\n"
        "|---|---|---|---|---|---|\n"
        "| meanP | 42.0 | 68.9 | 79.6 | 2 | 16.2 |\n"
        "| AIM | 43.4 | 71.1 | 80.0 | 2.5 | 16.3 |")
    assert rows["AIM"].as_dict() == {"R@1": 43.4, "R@5": 71.1, "R@10": 80.0, "MdR": 2.5, "MnR": 16.3,
                                     "queries": 1000}
