import sys

import numpy as np
import pytest

from vidsearch.store import index as ix
from vidsearch.store.store import Store


def brute_force(vectors, queries, k):
    scores = queries @ vectors.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.mark.parametrize("k", [1, 7, 500, 2000])
def test_exact_equals_brute_force(helpers, k):
    vectors, queries = helpers.unit_rows(1000, 32, seed=1), helpers.unit_rows(5, 32, seed=2)
    scores, ids = ix.ExactIndex(vectors).search(queries, k)
    expected_scores, expected_ids = brute_force(vectors, queries, k)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    assert scores.dtype == np.float32 and ids.shape == (5, min(k, 1000))


def test_exact_breaks_ties_by_row(helpers):
    vectors = np.repeat(helpers.unit_rows(3), 4, axis=0)  # every vector four times
    _, ids = ix.ExactIndex(vectors).search(vectors[5], 6)
    assert ids[0, :4].tolist() == [4, 5, 6, 7]


def test_unnormalised_vectors_are_normalised(helpers):
    vectors = helpers.unit_rows(50)
    scores, _ = ix.ExactIndex(vectors * 3.0).search(vectors[:1], 1)
    np.testing.assert_allclose(scores, [[1.0]], rtol=1e-6)


def test_rows_a_little_off_unit_length_are_normalised_and_unit_rows_are_not_copied(helpers):
    """A row 0.05% short used to pass for unit length (tolerance 1e-3) and score 0.05% low, losing a near tie."""
    vectors = helpers.unit_rows(4)
    short = vectors.copy()
    short[1] *= 0.9995
    assert ix.l2_normalised(vectors) is vectors  # normalised rows: no copy
    fixed = ix.l2_normalised(short)
    np.testing.assert_allclose(np.linalg.norm(fixed, axis=1), 1.0, rtol=0, atol=1e-6)
    scores, ids = ix.ExactIndex(np.stack([vectors[1], short[1]])).search(vectors[1:2], 2)
    assert ids[0].tolist() == [0, 1] and scores[0, 0] == pytest.approx(scores[0, 1], abs=1e-6), scores


def recall_at(approx_ids, exact_ids):
    return np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx_ids, exact_ids)])


@pytest.mark.parametrize("ivf", [False, True])
def test_faiss_recall_on_random_data(helpers, monkeypatch, ivf):
    """HNSW on vectors uniform on the sphere (the hardest case); IVF on random clustered vectors."""
    monkeypatch.setattr(ix, "IVF_MIN_ROWS", 1000 if ivf else 10**9)
    make = helpers.clustered if ivf else helpers.unit_rows
    vectors, queries = make(8000, 32, seed=3), make(50, 32, seed=4)
    index = ix.build_index(vectors, "faiss")
    assert index.kind == ("faiss-ivf" if ivf else "faiss-hnsw") and len(index) == 8000
    scores, ids = index.search(queries, 10)
    _, exact = brute_force(vectors, queries, 10)
    assert recall_at(ids, exact) >= 0.95
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, ids, axis=1), rtol=1e-4, atol=1e-5)


def test_auto_chooses_by_size(helpers, monkeypatch):
    assert ix.build_index(helpers.unit_rows(100)).kind == "exact"
    monkeypatch.setattr(ix, "FAISS_MIN_ROWS", 50)
    assert ix.build_index(helpers.unit_rows(100)).kind == "faiss-hnsw"
    monkeypatch.setattr(ix, "faiss_available", lambda: False)
    assert ix.build_index(helpers.unit_rows(100)).kind == "exact"


def test_missing_faiss_is_a_clear_error(helpers, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"vidsearch\[ann\]"):
        ix.build_index(helpers.unit_rows(10), "faiss")


def test_index_cached_per_store_version(tmp_path, helpers):
    helpers.add_videos(tmp_path, ["a"])
    first = ix.index_for(Store.open(tmp_path))
    assert ix.index_for(Store.open(tmp_path)) is first
    helpers.add_videos(tmp_path, ["b"])
    second = ix.index_for(Store.open(tmp_path))
    assert second is not first and len(second) == 4
