import json
import os

import numpy as np
import pytest

from vidsearch.store import store as st
from vidsearch.store.store import (FeatureDatabase, FingerprintMismatch, RowMeta, Store, StoreCorrupted,
                                   StoreError, StoreNotFound)


def test_round_trip_manifest_and_memory_map(tmp_path, helpers, monkeypatch):
    monkeypatch.setattr(st, "COPY_MAX_BYTES", 0)  # every file memory-mapped
    arrays, rows = helpers.batch(["a", "b"])
    arrays["video_id"] = np.arange(4, dtype=np.int64)
    version = st.write(tmp_path, arrays, fingerprint="model-1", rows=rows, info={"frames": "/cache"})
    store = Store.open(tmp_path)
    assert store.info == {"frames": "/cache"}
    assert version == store.version == 1 and store.fingerprint == "model-1" and len(store) == 4
    np.testing.assert_array_equal(store.array("video_feature"), arrays["video_feature"])
    assert isinstance(store.array("video_feature"), np.memmap)
    assert store.row(3) == rows[3]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["segments"][0]["arrays"]["video_feature"]
    assert manifest["format"] == "vidsearch-feature-store" and manifest["format_version"] == 2
    assert (entry["dtype"], entry["shape"]) == ("float32", [4, helpers.DIM])
    assert entry["file"].endswith(f".{entry['sha256'][:12]}.npy") and len(entry["sha256"]) == 64
    assert manifest["segments"][0]["meta"]["file"].endswith(".json")
    columns = manifest["segments"][0]["columns"]
    assert {name: (c["dtype"], c["shape"]) for name, c in columns.items()} == {
        "video": ("int32", [4]), "start": ("float64", [4]), "end": ("float64", [4]), "thumbnail": ("|S14", [4])}


def test_small_files_are_read_into_memory_and_metadata_is_columnar(tmp_path, helpers):
    arrays, rows = helpers.batch(["a", "b"])
    rows[0] = RowMeta("a", None, None, "circle", None, rows[0].captions)
    st.write(tmp_path, arrays, fingerprint="m", rows=rows)
    store = Store.open(tmp_path)
    assert not isinstance(store.array("video_feature"), np.memmap)
    assert not any(mapped for _, _, mapped in store.segments[0].data.files)
    columns = store.segments[0].data.columns
    assert columns.video.tolist() == [0, 0, 1, 1] and columns.video_ids == ["a", "b"]
    assert np.isnan(columns.start[0]) and columns.thumbnail[0] == b""
    assert [store.row(i) for i in range(4)] == rows and store.rows.start[0] is None


def test_no_pickle_in_files(tmp_path, helpers):
    helpers.write_videos(tmp_path, ["a"])
    for path in tmp_path.glob("seg*.npy"):
        np.load(path, allow_pickle=False)


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreNotFound, match="no published manifest.json"):
        Store.open(tmp_path / "nothing")


def test_incremental_add_remove_compact(tmp_path, helpers):
    helpers.add_videos(tmp_path, ["a", "b"])
    first_files = set(os.listdir(tmp_path))
    helpers.add_videos(tmp_path, ["c"], info={"model": "m"})
    assert first_files <= set(os.listdir(tmp_path)), "an add rewrote files of the previous version"
    st.remove(tmp_path, moments=[("a", 2.0)], auto_compact=False)
    store = Store.open(tmp_path)
    assert store.rows.video_id == ["a", "b", "b", "c", "c"] and store.version == 3 and store.info == {"model": "m"}
    helpers.assert_consistent(store)
    st.remove(tmp_path, video_ids=["b"], auto_compact=False)
    assert len(st.read_manifest(tmp_path)["tombstones"]) == 3
    before = st.read_manifest(tmp_path)
    assert st.compact(tmp_path) == 5  # 3 dead of the first segment's 4 rows: rewriting it pays
    store = Store.open(tmp_path)
    manifest = st.read_manifest(tmp_path)
    assert (len(manifest["segments"]), manifest["tombstones"]) == (2, [])
    assert manifest["segments"][1] == before["segments"][1], "the segment without removed rows was rewritten"
    assert store.rows.video_id == ["a", "c", "c"] and set(store.videos()) == {"a", "c"}
    helpers.assert_consistent(store)
    referenced = {entry["file"] for entry in st._file_entries(manifest)}
    assert {p.name for p in tmp_path.glob("seg*")} == referenced, "garbage collection left files of old versions"


def test_compact_only_when_it_pays(tmp_path, helpers):
    for video in "abc":
        helpers.add_videos(tmp_path, [video])
    assert st.compact(tmp_path) == 3
    assert st.compact(tmp_path, force=True) == 4


def test_auto_compaction_merges_segments_of_one_size_class(tmp_path, helpers):
    """Each add publishes its own segment; the eighth of one size class triggers a merge of the eight, in place."""
    for i in range(st.MERGE_FANOUT - 1):
        helpers.add_videos(tmp_path, [f"v{i}"])
    assert [s["rows"] for s in st.read_manifest(tmp_path)["segments"]] == [2] * (st.MERGE_FANOUT - 1)
    assert helpers.add_videos(tmp_path, ["last"]) == st.MERGE_FANOUT + 1  # the add's version, then the merge's
    assert [s["rows"] for s in st.read_manifest(tmp_path)["segments"]] == [2 * st.MERGE_FANOUT]
    store = Store.open(tmp_path)
    assert store.rows.video_id == [v for i in range(st.MERGE_FANOUT - 1) for v in [f"v{i}"] * 2] + ["last"] * 2
    helpers.assert_consistent(store)


def test_segment_count_stays_logarithmic(tmp_path, helpers):
    for i in range(70):
        helpers.add_videos(tmp_path, [f"v{i}"])
    sizes = [s["rows"] for s in st.read_manifest(tmp_path)["segments"]]
    assert sum(sizes) == 140 and len(sizes) <= 2 * (st.MERGE_FANOUT - 1), sizes
    assert sizes == sorted(sizes, reverse=True), f"merges must keep the larger, older segments first: {sizes}"
    helpers.assert_consistent(Store.open(tmp_path))


def test_remove_everything_then_add(tmp_path, helpers):
    helpers.add_videos(tmp_path, ["a"])
    st.remove(tmp_path, video_ids=["a"])
    store = Store.open(tmp_path)
    assert len(store) == 0 and store.array("video_feature").shape == (0, helpers.DIM)
    helpers.add_videos(tmp_path, ["b"])
    helpers.assert_consistent(Store.open(tmp_path))


def test_fingerprint_and_schema_refused(tmp_path, helpers):
    arrays, rows = helpers.batch(["a"])
    st.add(tmp_path, arrays, fingerprint="model-1", rows=rows)
    with pytest.raises(FingerprintMismatch, match="model-1"):
        st.add(tmp_path, arrays, fingerprint="model-2", rows=rows)
    with pytest.raises(FingerprintMismatch, match="model-2"):
        Store.open(tmp_path).check_fingerprint("model-2")
    with pytest.raises(ValueError, match="cannot add"):
        st.add(tmp_path, {"video_feature": arrays["video_feature"][:, :8]}, fingerprint="model-1", rows=rows)
    st.write(tmp_path, arrays, fingerprint="model-2", rows=rows)  # a rebuild may change the model
    assert Store.open(tmp_path).fingerprint == "model-2"


def test_reader_keeps_its_version_while_writers_publish(tmp_path, helpers):
    helpers.add_videos(tmp_path, ["a"])
    old = Store.open(tmp_path)
    helpers.write_videos(tmp_path, ["b"])
    assert old.version == 1 and old.rows.video_id == ["a", "a"]
    helpers.assert_consistent(old)  # its files were deleted, its memory maps still read them
    assert Store.open(tmp_path).rows.video_id == ["b", "b"]


def test_leftover_temp_files_ignored_then_cleaned(tmp_path, helpers):
    helpers.add_videos(tmp_path, ["a"])
    (tmp_path / ".manifest.json.x.tmp").write_text("{garbage")
    (tmp_path / ".seg000009.video_feature.y.tmp").write_bytes(b"\0" * 10)
    (tmp_path / "seg000009.video_feature.0123456789ab.npy").write_bytes(b"orphan")
    helpers.assert_consistent(Store.open(tmp_path))
    helpers.add_videos(tmp_path, ["b"])
    names = set(os.listdir(tmp_path))
    assert not any(n.endswith(".tmp") for n in names) and "seg000009.video_feature.0123456789ab.npy" not in names


def _array_file(path):
    return path / st.read_manifest(path)["segments"][0]["arrays"]["video_feature"]["file"]


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_corrupted_array_detected_at_open(tmp_path, helpers, keep_mtime):
    helpers.write_videos(tmp_path, ["a"])
    path = _array_file(tmp_path)
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(-3, os.SEEK_END)
        handle.write(b"\x13\x37\x42")
    if keep_mtime:  # ctime still changes: the stat record still catches it
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(StoreCorrupted, match="sha256 .* does not match"):
        Store.open(tmp_path)


def test_truncated_array_and_missing_file_detected(tmp_path, helpers):
    helpers.write_videos(tmp_path, ["a"])
    path = _array_file(tmp_path)
    os.truncate(path, path.stat().st_size - 4)
    with pytest.raises(StoreCorrupted, match="truncated"):
        Store.open(tmp_path)
    path.unlink()
    with pytest.raises(StoreCorrupted, match="lacks"):
        Store.open(tmp_path)


_MANIFEST_EDITS = {
    "a row count of the wrong type": (lambda m: m["segments"][0].update(rows="12"), r"\['rows'\]|\.rows"),
    "a version of the wrong type": (lambda m: m.update(version=[1]), "version"),
    "an array shape of the wrong type": (
        lambda m: next(iter(m["segments"][0]["arrays"].values())).update(shape="12x8"), "shape"),
    "a file outside the store": (
        lambda m: m["segments"][0]["meta"].update(file="../../etc/passwd"), "file"),
    "a tombstone that is not a row id": (lambda m: m.update(tombstones=["a"]), "tombstones"),
    "a missing segment list": (lambda m: m.pop("segments"), "segments"),
    "a row count the arrays do not have": (lambda m: m["segments"][0].update(rows=99), "99 rows"),
    "a manifest that is not an object": (lambda m: m.clear(), "format"),
}


@pytest.mark.parametrize("edit", list(_MANIFEST_EDITS))
def test_a_manifest_edited_into_valid_json_of_the_wrong_shape_is_refused_in_one_line(tmp_path, helpers, edit):
    """Edits that stay valid JSON used to surface as IndexError/KeyError tracebacks (or be accepted silently)."""
    helpers.write_videos(tmp_path, ["a", "b"])
    manifest = json.loads((tmp_path / st.MANIFEST).read_text())
    change, mentioned = _MANIFEST_EDITS[edit]
    change(manifest)
    (tmp_path / st.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=mentioned) as refused:
        Store.open(tmp_path)
    assert "\n" not in str(refused.value)


def test_full_verification_hashes_untouched_files(tmp_path, helpers, monkeypatch):
    helpers.write_videos(tmp_path, ["a"])
    hashed = []
    real_sha256 = st.fsutil.sha256_file
    monkeypatch.setattr(st.fsutil, "sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    Store.open(tmp_path)
    assert hashed == []
    Store.open(tmp_path, verify="full")
    assert sorted(p.suffix for p in hashed) == [".json"] + [".npy"] * 5  # the vectors and 4 row columns


def test_seed_database_api(tmp_path, helpers):
    db = FeatureDatabase(tmp_path)
    name = st.database_name("msrvtt", "test")
    items = {"video_id": np.arange(3), "text_feature": helpers.unit_rows(3).reshape(3, 1, -1),
             "video_feature": helpers.unit_rows(3, seed=1)}
    db.store(name, items, fingerprint="m")
    loaded = db.load(name)
    assert set(loaded) == set(items) and db.names() == ["msrvtt_test"]
    for key in items:
        np.testing.assert_array_equal(loaded[key], items[key])
    assert db.open(name).rows.video_id == ["0", "1", "2"]
    with pytest.raises(ValueError, match="video_feature_raw"):
        db.store("msrvtt_test_raw", items)
    with pytest.raises(ValueError, match="kind"):
        st.database_name("msrvtt", "val")
    db.store(name, {k: v[:2] for k, v in items.items()}, fingerprint="m")
    assert len(db.load(name)["video_id"]) == 2, "open() must follow a newly published version"


def test_a_new_version_reuses_the_opened_segments_it_keeps(tmp_path, helpers):
    """Following a version that added one video reads that video's rows, not the whole store's again."""
    helpers.write_videos(tmp_path, ["a", "b"])
    first = Store.open(tmp_path)
    helpers.add_videos(tmp_path, ["c"])
    second = Store.open(tmp_path)
    assert second.segments[0].data is first.segments[0].data
    assert second.videos().keys() == {"a", "b", "c"} and first.videos().keys() == {"a", "b"}
