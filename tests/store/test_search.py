import json

import numpy as np
import pytest

from vidsearch.store import store as st
from vidsearch.store.search import (FunctionEncoder, Searcher, SearchOptions, reciprocal_rank_fusion, search)
from vidsearch.store.store import FingerprintMismatch, RowMeta, Store

DIM = 4
AXES = np.eye(DIM, dtype=np.float32)


def unit(*components):
    vector = np.asarray(components, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# (video, start, category, caption, vector): moments of videos, with vectors chosen so scores are known.
LIBRARY = [
    ("red", 0.0, "circle", "A Red circle moves left", unit(1, 0, 0, 0)),
    ("red", 4.0, "circle", "A Red circle moves left", unit(1, 0.5, 0, 0)),
    ("red", 8.0, "circle", "A Red circle moves left", unit(0, 0, 1, 0)),
    ("blue", 0.0, "square", "a blue square slides up", unit(1, 1, 0, 0)),
    ("green", 0.0, "circle", "a green ball goes down", unit(0, 1, 0, 0)),
    ("plain", 0.0, "square", "a red square", unit(0, 0, 0, 1)),
]


class CountingEncoder:
    """Encodes query "axis N" (or a caption word) as unit vector N; counts calls."""

    fingerprint = "toy-model"

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return np.stack([AXES[int(t.split()[-1])] if t.startswith("axis") else AXES[0] for t in texts])


@pytest.fixture
def store(tmp_path):
    rows = [RowMeta(v, s, s + 4, c, f"{v}/{s}.jpg", (cap, f"{v} clip")) for v, s, c, cap, _ in LIBRARY]
    st.write(tmp_path, {"video_feature": np.stack([r[-1] for r in LIBRARY])}, fingerprint="toy-model", rows=rows)
    return Store.open(tmp_path)


def test_hits_grouped_by_video_best_moment_first(store):
    result = Searcher(store, CountingEncoder()).search("axis 0", SearchOptions(k=10))
    assert [h.video_id for h in result.hits] == ["red", "blue", "green", "plain"]
    red = result.hits[0]
    assert red.score == pytest.approx(1.0) and red.matched_moments == 3 and red.thumbnail == "red/0.0.jpg"
    assert [(m.start, m.end) for m in red.moments] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    assert [m.score for m in red.moments] == pytest.approx([1.0, 1 / np.sqrt(1.25), 0.0], abs=1e-6)
    assert result.hits[1].score == pytest.approx(1 / np.sqrt(2)) and result.index == "exact"


def test_k_and_moments_per_video(store):
    result = search(store, "axis 0", CountingEncoder(), SearchOptions(k=1, moments_per_video=2))
    assert len(result.hits) == 1 and len(result.hits[0].moments) == 2 and result.hits[0].matched_moments == 3


def test_threshold(store):
    result = search(store, "axis 0", CountingEncoder(), SearchOptions(threshold=0.5))
    assert [(h.video_id, h.matched_moments) for h in result.hits] == [("red", 2), ("blue", 1)]
    assert all(m.score >= 0.5 for h in result.hits for m in h.moments)


def test_category_filter_widens_the_candidates(store):
    result = search(store, "axis 3", CountingEncoder(), SearchOptions(k=2, category="circle"))
    assert [h.video_id for h in result.hits] == ["red", "green"] and {h.category for h in result.hits} == {"circle"}


def test_query_vectors_cached_by_text(store):
    encoder = CountingEncoder()
    searcher = Searcher(store, encoder, cache_size=2)
    assert not searcher.search("axis 1").cached_query
    assert searcher.search(" axis 1 ").cached_query and encoder.calls == 2  # the query, and once the null captions
    searcher.search("axis 2")
    searcher.search("axis 3")  # evicts "axis 1"
    assert not searcher.search("axis 1").cached_query and encoder.calls == 5


def test_encoder_of_another_model_refused(store):
    with pytest.raises(FingerprintMismatch, match="toy-model"):
        Searcher(store, FunctionEncoder(lambda texts: np.ones((len(texts), DIM), np.float32), "other-model"))


def test_text_mode_is_case_insensitive_substring_without_an_encoder(store):
    result = search(store, "RED", None, SearchOptions(mode="text"))
    assert [(m.video_id, m.captions) for m in result.text_matches] == [
        ("red", ["A Red circle moves left", "red clip"]), ("plain", ["a red square"])]
    assert result.hits == [] and result.index is None
    assert search(store, "red", None, SearchOptions(mode="text", category="square")).text_matches[0].video_id == "plain"
    assert search(store, "  ", None, SearchOptions(mode="text")).text_matches == []


def test_hybrid_without_fusion_flags_caption_matches(store):
    result = search(store, "axis 1", CountingEncoder(), SearchOptions(mode="hybrid", fuse=False, k=2))
    assert [(h.video_id, h.text_match) for h in result.hits] == [("green", False), ("blue", False)]
    assert result.text_matches == []


def test_hybrid_fusion_by_reciprocal_rank(store):
    # "red": vector ranking green, blue, red, plain; caption ranking red, plain.
    class RedIsAxis1(CountingEncoder):
        def encode(self, texts):
            return np.stack([AXES[1] for _ in texts])

    result = search(store, "red", RedIsAxis1(), SearchOptions(mode="hybrid", k=3))
    expected = reciprocal_rank_fusion([["green", "blue", "red"], ["red", "plain"]])
    assert [h.video_id for h in result.hits] == list(expected)[:3] == ["red", "green", "blue"]
    assert [h.fused_score for h in result.hits] == pytest.approx(list(expected.values())[:3])
    assert result.hits[0].text_match and not result.hits[1].text_match


def test_hybrid_caption_only_hit_is_scored_exactly(store):
    result = search(store, "square", CountingEncoder(), SearchOptions(mode="hybrid", k=4, threshold=0.9))
    by_id = {h.video_id: h for h in result.hits}
    plain = by_id["plain"]  # below the threshold, found by its caption
    assert plain.text_match and plain.matched_moments == 0 and plain.score == pytest.approx(0.0)
    assert [(m.start, m.thumbnail) for m in plain.moments] == [(0.0, "plain/0.0.jpg")]


def test_rrf_orders_by_summed_reciprocal_ranks():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "b"]], k=1)
    assert list(fused) == ["c", "b", "a"]  # c: 1/4 + 1/2, b: 1/3 + 1/3, a: 1/2
    assert fused["b"] == pytest.approx(1 / 3 + 1 / 3)


def test_result_is_json(store):
    result = search(store, "red", CountingEncoder(), SearchOptions(mode="hybrid"))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["hits"][0]["moments"][0]["start"] == 0.0 and data["store_version"] == 1
    assert set(data["timings_ms"]) == {"text", "encode", "vector", "total"}


def test_refresh_follows_a_new_version(store, tmp_path):
    searcher = Searcher(store, CountingEncoder())
    assert not searcher.refresh()
    st.remove(tmp_path, video_ids=["red"])
    assert searcher.refresh() and searcher.store.version == 2
    assert "red" not in [h.video_id for h in searcher.search("axis 0").hits]


def test_persisted_index_search_matches_exact_on_20k_rows(tmp_path, helpers):
    """20 000 clustered rows: the index probes a quarter of its lists and ranks by 4-bit codes, not exhaustively."""
    vectors = helpers.clustered(20_000, 64, seed=5)
    st.write(tmp_path, {"video_feature": vectors}, fingerprint="m", index_min_rows=10_000)
    queries = helpers.clustered(20, 64, seed=6)
    encoder = FunctionEncoder(lambda texts: queries[[int(t) if t.isdigit() else 0 for t in texts]], "m")
    searcher = Searcher(Store.open(tmp_path), encoder)
    same = 0
    for number in range(len(queries)):
        exact = searcher.search(str(number), SearchOptions(k=10, index="exact"))
        approx = searcher.search(str(number), SearchOptions(k=10))
        assert approx.index == "ivf-pq+rerank" and exact.index == "exact"
        same += [h.video_id for h in approx.hits] == [h.video_id for h in exact.hits]
        assert [h.score for h in approx.hits][:1] == pytest.approx([h.score for h in exact.hits][:1], abs=1e-6)
    assert same >= 18, f"only {same} of 20 queries got exact search's top 10 videos in its order"


def test_unknown_mode_refused(store):
    with pytest.raises(ValueError, match="mode"):
        search(store, "x", None, SearchOptions(mode="fuzzy"))
