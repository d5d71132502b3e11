"""Confidence of a hit: its cosine's z-score over the same row's cosines with generic captions (search.NULL_CAPTIONS)."""

import hashlib

import numpy as np
import pytest

from vidsearch.store import store as st
from vidsearch.store.search import (NULL_CAPTIONS, FunctionEncoder, Searcher, SearchOptions, confidence_label,
                                    confidence_of, NULL_Z_MIDPOINT)
from vidsearch.store.store import Store

DIM = 256
ROWS = 6


def text_vector(text: str) -> np.ndarray:
    """"row N" → the stored row N's direction; "half N" → 0.5 of it; anything else → a fixed random direction."""
    word, _, number = text.partition(" ")
    if word in ("row", "half"):
        vector = np.zeros(DIM, dtype=np.float32)
        vector[int(number)] = 1.0
        if word == "half":
            vector[DIM - 1] = np.sqrt(3.0)
        return vector / np.linalg.norm(vector)
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def searcher(tmp_path):
    st.write(tmp_path, {"video_feature": np.eye(DIM, dtype=np.float32)[:ROWS]}, fingerprint="m")
    return Searcher(Store.open(tmp_path), FunctionEncoder(lambda texts: np.stack([text_vector(t) for t in texts]), "m"))


def expected_confidence(query: str, row: int, best: int | None = None) -> float:
    """The null's confidence of `row`, times its closeness to the best row `best` (docs/contracts.md), in numpy."""
    null = np.stack([text_vector(caption) for caption in NULL_CAPTIONS])
    score = text_vector(query)
    confidence = float(confidence_of((score[row] - null[:, row].mean()) / null[:, row].std()))
    if best is None:
        return confidence
    reach = score[best] - null[:, best].mean()
    shortfall = (score[best] - score[row]) / reach

    def logistic(x):
        return 1.0 / (1.0 + np.exp((x - 0.12) / 0.01))

    return confidence * logistic(shortfall) / logistic(0.0)


def test_confidence_is_the_z_score_over_the_rows_null(searcher):
    result = searcher.search("row 2", SearchOptions(k=ROWS))
    top = result.hits[0]
    assert top.video_id == "2" and top.score == pytest.approx(1.0)
    assert top.confidence == pytest.approx(expected_confidence("row 2", 2), abs=1e-6)
    assert top.confidence > 0.99 and top.confidence_label == "high" and result.confident
    for hit in result.hits:
        expected = expected_confidence("row 2", int(hit.video_id), best=2)
        assert hit.moments[0].confidence == pytest.approx(expected, abs=1e-6)


def test_a_hit_far_below_a_good_best_is_not_called_a_good_match(tmp_path):
    """"near 3" is a blend of rows 3 (0.8) and 4 (0.6). Row 4 stands far above its own null (searched without row 3,
    it is a high-confidence best), but it is 0.2 below the best, a quarter of the best's reach: next to row 3 its
    confidence is cut to near 0, while row 3 keeps the null's."""
    blend = np.zeros(DIM, dtype=np.float32)
    blend[3], blend[4] = 0.8, 0.6
    st.write(tmp_path, {"video_feature": np.eye(DIM, dtype=np.float32)[:ROWS]}, fingerprint="m")
    searcher = Searcher(Store.open(tmp_path), FunctionEncoder(
        lambda texts: np.stack([blend if t == "near 3" else text_vector(t) for t in texts]), "m"))
    result = searcher.search("near 3", SearchOptions(k=2))
    by_id = {hit.video_id: hit for hit in result.hits}
    assert [hit.video_id for hit in result.hits] == ["3", "4"]
    alone = searcher.search("near 3", SearchOptions(k=2, exclude_video="3"))
    assert alone.hits[0].video_id == "4" and alone.hits[0].confidence_label == "high", alone.hits[0]
    assert by_id["4"].confidence < 0.01 and by_id["4"].confidence_label == "low", by_id["4"]
    assert by_id["3"].confidence_label == "high" and by_id["3"].confidence > 0.99, by_id["3"]


def test_a_query_for_nothing_held_is_not_confident_but_still_shows_the_nearest(searcher):
    result = searcher.search("a dog playing fetch", SearchOptions(k=3))
    assert len(result.hits) == 3, "the nearest videos are still returned"
    assert not result.confident, [(h.video_id, h.score, h.confidence) for h in result.hits]
    assert {hit.confidence_label for hit in result.hits} == {"low"}
    data = result.to_dict()
    assert data["confident"] is False and data["hits"][0]["confidence_label"] == "low"


def test_min_confidence_filters_while_threshold_stays_on_the_cosine(searcher):
    assert [h.video_id for h in searcher.search("row 1", SearchOptions(k=ROWS, min_confidence=0.9)).hits] == ["1"]
    assert searcher.search("a dog", SearchOptions(k=ROWS, min_confidence=0.9)).hits == []
    # "half 1" scores 0.5 on row 1: under a 0.6 threshold, whatever its confidence
    half = searcher.search("half 1", SearchOptions(k=ROWS))
    assert half.hits[0].score == pytest.approx(0.5) and half.hits[0].confidence > 0.8
    assert searcher.search("half 1", SearchOptions(k=ROWS, threshold=0.6)).hits == []


def test_labels():
    assert [confidence_label(c) for c in (0.0, 0.49, 0.5, 0.79, 0.8, 1.0)] == \
        ["low", "low", "medium", "medium", "high", "high"]
    assert confidence_of(np.array([NULL_Z_MIDPOINT]))[0] == 0.5 and NULL_Z_MIDPOINT == 5.0


def test_similar_queries_by_the_moments_stored_vector_without_its_own_video(tmp_path):
    """Videos a (rows along e0, e1), b (e0 + small e2), c (e1): more like a's moment at 0 s is b, never a itself."""
    vectors = np.zeros((4, DIM), dtype=np.float32)
    vectors[0, 0] = vectors[1, 1] = vectors[3, 1] = 1.0
    vectors[2, [0, 2]] = (0.9, np.sqrt(1 - 0.81))
    rows = [st.RowMeta("a", 0.0, 2.0), st.RowMeta("a", 2.0, 4.0), st.RowMeta("b", None, None),
            st.RowMeta("c", None, None)]
    st.write(tmp_path, {"video_feature": vectors}, rows=rows, fingerprint="m")
    calls = []
    searcher = Searcher(Store.open(tmp_path), FunctionEncoder(lambda texts: calls.append(texts), "m"))
    first = searcher.similar("a", 0.0, SearchOptions(k=5))
    assert [h.video_id for h in first.hits] == ["b", "c"] and first.query == "like a at 0 s"
    assert first.hits[0].score == pytest.approx(0.9) and first.hits[1].score == pytest.approx(0.0, abs=1e-6)
    second = searcher.similar("a", 3.5, SearchOptions(k=5))  # the moment 2–4 s: along e1, like c
    assert [h.video_id for h in second.hits][0] == "c" and second.hits[0].score == pytest.approx(1.0)
    assert [h.video_id for h in searcher.similar("a", None, SearchOptions(k=5)).hits] == ["b", "c"]
    assert searcher.similar("a", 9.0) is None and searcher.similar("nobody", 0.0) is None
    assert calls == [], "the model is never called"
