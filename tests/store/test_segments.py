"""Indexes belong to the store: built and published by the writer, loaded (never built) by readers; segments
searched one by one and merged; format version 1 stores still read; files changed underneath a reader detected."""

import json
import os

import numpy as np
import pytest

from vidsearch import fsutil
from vidsearch.store import index as ix
from vidsearch.store import store as st
from vidsearch.store.search import FunctionEncoder, Searcher, SearchOptions
from vidsearch.store.store import RowMeta, Store, StoreCorrupted

INDEX_ROWS = 2_000


def _vectors_and_rows(helpers, count, prefix, seed):
    vectors = helpers.clustered(count, 32, seed=seed)
    rows = [RowMeta(f"{prefix}{i // 2}", 2.0 * (i % 2), 2.0 * (i % 2) + 2, "circle", f"{prefix}/{i}.jpg")
            for i in range(count)]
    return vectors, rows


def _forbid_building(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a reader built an index")

    monkeypatch.setattr(ix, "build_persisted", refuse)
    monkeypatch.setattr(ix, "build_index", refuse)
    faiss = pytest.importorskip("faiss")
    monkeypatch.setattr(faiss, "index_factory", refuse)


def _searcher(path, queries):
    return Searcher(Store.open(path), FunctionEncoder(lambda texts: queries[[int(t) if t.isdigit() else 0 for t in texts]], "m"))


def test_the_writer_publishes_an_index_and_readers_only_load_it(tmp_path, helpers, monkeypatch):
    vectors, rows = _vectors_and_rows(helpers, INDEX_ROWS, "v", seed=1)
    st.write(tmp_path, {"video_feature": vectors}, fingerprint="m", rows=rows, index_min_rows=INDEX_ROWS)
    segment = st.read_manifest(tmp_path)["segments"][0]
    entry = segment["indexes"]["video_feature"]
    assert entry["file"].startswith("seg000000.index.video_feature.") and entry["file"].endswith(".faiss")
    assert fsutil.sha256_file(tmp_path / entry["file"]) == entry["sha256"]
    _forbid_building(monkeypatch)
    searcher = _searcher(tmp_path, vectors)
    result = searcher.search("7", SearchOptions(k=3))
    assert result.index == "ivf-pq+rerank" and result.hits[0].video_id == "v3"
    assert result.hits[0].moments[0].score == pytest.approx(1.0, abs=1e-6)


def test_a_small_segment_added_is_searchable_at_once_beside_the_indexed_one(tmp_path, helpers, monkeypatch):
    vectors, rows = _vectors_and_rows(helpers, INDEX_ROWS, "v", seed=1)
    st.write(tmp_path, {"video_feature": vectors}, fingerprint="m", rows=rows, index_min_rows=INDEX_ROWS)
    new_vectors, new_rows = _vectors_and_rows(helpers, 4, "new", seed=2)
    queries = np.concatenate([vectors, new_vectors])
    searcher = _searcher(tmp_path, queries)
    loaded = searcher.store.segments[0].index("video_feature")
    st.add(tmp_path, {"video_feature": new_vectors}, fingerprint="m", rows=new_rows, index_min_rows=INDEX_ROWS)
    _forbid_building(monkeypatch)
    assert searcher.refresh()
    assert searcher.store.segments[0].index("video_feature") is loaded, "the kept segment's index was read again"
    result = searcher.search(str(INDEX_ROWS + 2), SearchOptions(k=2))
    assert result.index == "ivf-pq+rerank+exact" and result.hits[0].video_id == "new1"
    st.remove(tmp_path, video_ids=["v3"], auto_compact=False)
    assert searcher.refresh()
    served, exact = (searcher.search("7", SearchOptions(k=5, index=kind)) for kind in ("auto", "exact"))
    assert "v3" not in [h.video_id for h in served.hits]
    assert [(h.video_id, round(h.score, 5)) for h in served.hits] == [
        (h.video_id, round(h.score, 5)) for h in exact.hits]


def test_compaction_indexes_the_merged_segment_and_collects_the_old_files(tmp_path, helpers):
    halves = [_vectors_and_rows(helpers, INDEX_ROWS // 2, f"p{part}-", seed=part) for part in range(2)]
    for vectors, rows in halves:
        st.add(tmp_path, {"video_feature": vectors}, fingerprint="m", rows=rows, index_min_rows=INDEX_ROWS)
    assert "indexes" not in st.read_manifest(tmp_path)["segments"][1]
    st.compact(tmp_path, force=True, index_min_rows=INDEX_ROWS)
    manifest = st.read_manifest(tmp_path)
    assert len(manifest["segments"]) == 1 and "video_feature" in manifest["segments"][0]["indexes"]
    assert {p.name for p in tmp_path.glob("seg*")} == {e["file"] for e in st._file_entries(manifest)}
    store = Store.open(tmp_path)
    assert store.rows.video_id == [r.video_id for _, rows in halves for r in rows]
    np.testing.assert_array_equal(store.array("video_feature"), np.concatenate([v for v, _ in halves]))


def _write_v1(path, helpers, video_ids):
    """A store as format version 1 wrote it: one JSON file of row metadata a segment, no columns, no index."""
    arrays, rows = helpers.batch(video_ids)
    path.mkdir()
    meta = {"video_id": [r.video_id for r in rows], "start": [r.start for r in rows], "end": [r.end for r in rows],
            "thumbnail": [r.thumbnail for r in rows],
            "videos": {r.video_id: {"category": r.category, "captions": list(r.captions)} for r in rows}}
    segment = {"id": 0, "first_row": 0, "rows": len(rows),
               "arrays": {"video_feature": st._write_array(path, "seg000000.video_feature", [arrays["video_feature"]])},
               "meta": st._write_json(path, "seg000000.meta", meta)}
    manifest = {"format": st.FORMAT, "format_version": 1, "version": 1, "fingerprint": "m", "info": {},
                "schema": {"video_feature": {"dtype": "float32", "shape": [helpers.DIM]}}, "next_row": len(rows),
                "next_segment": 1, "segments": [segment], "tombstones": []}
    (path / st.MANIFEST).write_text(json.dumps(manifest))
    return rows


def test_a_format_1_store_is_read_then_upgraded_by_the_next_writer(tmp_path, helpers):
    path = tmp_path / "v1"
    rows = _write_v1(path, helpers, ["a", "b"])
    store = Store.open(path)
    assert [store.row(i) for i in range(len(store))] == rows and list(store.videos()) == ["a", "b"]
    helpers.assert_consistent(store)
    helpers.add_videos(path, ["c"])
    manifest = st.read_manifest(path)
    assert manifest["format_version"] == 2 and "columns" not in manifest["segments"][0]
    assert Store.open(path).rows.video_id == ["a", "a", "b", "b", "c", "c"]
    st.remove(path, video_ids=["b"], auto_compact=False)
    st.compact(path, force=True)
    store = Store.open(path)
    assert "columns" in st.read_manifest(path)["segments"][0] and store.rows.video_id == ["a", "a", "c", "c"]
    helpers.assert_consistent(store)


def _big_store(tmp_path, helpers, monkeypatch):
    """A store whose files are memory-mapped (as every file of a library-sized store is)."""
    monkeypatch.setattr(st, "COPY_MAX_BYTES", 0)
    helpers.write_videos(tmp_path, ["a", "b"])
    return tmp_path / st.read_manifest(tmp_path)["segments"][0]["arrays"]["video_feature"]["file"]


def test_a_mapped_file_truncated_underneath_is_refused_not_read(tmp_path, helpers, monkeypatch):
    array_file = _big_store(tmp_path, helpers, monkeypatch)
    searcher = Searcher(Store.open(tmp_path), FunctionEncoder(lambda t: helpers.unit_rows(1), "m"))
    assert searcher.search("q").hits
    os.truncate(array_file, 100)  # reading the mapped vectors now would raise SIGBUS
    with pytest.raises(StoreCorrupted, match="changed on disk"):
        searcher.search("q")


def test_a_mapped_file_rewritten_in_place_is_refused(tmp_path, helpers, monkeypatch):
    array_file = _big_store(tmp_path, helpers, monkeypatch)
    store = Store.open(tmp_path)
    data = bytearray(array_file.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"
    with open(array_file, "r+b") as handle:  # same inode, same size
        handle.write(data)
    assert store.changed_files() == [array_file]
    with pytest.raises(StoreCorrupted, match="changed on disk"):
        store.check_files()
    with pytest.raises(StoreCorrupted, match="sha256"):
        Store.open(tmp_path)


def test_two_shards_searched_and_merged_equal_one_store(tmp_path, helpers):
    vectors, rows = _vectors_and_rows(helpers, 600, "v", seed=3)
    st.write(tmp_path / "one", {"video_feature": vectors}, fingerprint="m", rows=rows)
    for shard, part in enumerate((slice(0, 250), slice(250, 600))):
        st.write(tmp_path / f"shard{shard}", {"video_feature": vectors[part]}, fingerprint="m", rows=rows[part])
    queries = helpers.clustered(20, 32, seed=4)
    one = ix.index_for(Store.open(tmp_path / "one"))
    shards = ix.ShardedIndex([ix.index_for(Store.open(tmp_path / f"shard{n}")) for n in range(2)])
    expected_scores, expected_ids = one.search(queries, 10)
    scores, ids = shards.search(queries, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-6)
    assert len(shards) == 600


def test_store_positions_and_segment_rows_map_both_ways_around_removed_rows(tmp_path, helpers):
    helpers.add_videos(tmp_path, [f"v{i}" for i in range(10)])  # 20 rows in one segment
    st.remove(tmp_path, video_ids=["v0", "v4"], moments=[("v9", 2.0), ("v5", 0.0)], auto_compact=False)
    segment = Store.open(tmp_path).segments[0]
    live = np.flatnonzero(segment.live)
    assert segment.dead.tolist() == [0, 1, 8, 9, 10, 19] and segment.live_rows == 14
    np.testing.assert_array_equal(segment.positions(live), np.arange(14))
    np.testing.assert_array_equal(segment.locals_of(np.arange(14)), live)
