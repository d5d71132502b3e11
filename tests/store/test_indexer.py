"""`vidsearch index` and `vidsearch search` end to end: synthetic videos → keyframe cache → tiny model → store."""

import errno
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from vidsearch import fsutil
from vidsearch.cli import main as cli
from vidsearch.config import FrameConfig
from vidsearch.data.manifest import load_manifest
from vidsearch.data.synthetic import generate_library
from vidsearch.model.source import ModelSource
from vidsearch.store import indexer
from vidsearch.store.indexer import encode_rows, index_cache, open_searcher, rows_of
from vidsearch.store.store import FingerprintMismatch, Store
from vidsearch.video.cache import build_cache, open_cache

TINY = ModelSource(backbone="vidsearch-tiny", num_frames=4)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    manifest = generate_library(root / "lib", videos=6, seed=3, size=64, seconds=4.0, fps=4.0)
    build_cache([root / "lib" / "videos"], root / "cache", FrameConfig(frames=4, size=64), workers=1)
    build_cache([root / "lib" / "videos"], root / "moments", FrameConfig(frames=4, size=64, segment_seconds=2.0),
                workers=1)
    return root, manifest


@pytest.fixture(scope="module")
def tiny_model():
    return TINY.load()


def test_index_stores_exactly_the_model_features_with_metadata(library, tiny_model, tmp_path):
    root, manifest = library
    records = load_manifest(manifest)
    report = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store",
                         records=records, batch_size=4)
    assert (report.videos_added, report.rows_added, report.version) == (6, 6, 1)
    store = Store.open(tmp_path / "store")
    cache = open_cache(root / "cache")
    entry = cache.entries[store.rows.video_id[0]]
    expected = encode_rows(tiny_model, cache, rows_of(entry))
    frames = torch.from_numpy(cache.read_frames(entry.id, [0, 1, 2, 3]))
    with torch.no_grad():
        direct = tiny_model.encode_video(tiny_model.preprocess_frames(frames[None])).numpy()
    np.testing.assert_allclose(store.array("video_feature")[0], direct[0], atol=1e-6)
    np.testing.assert_allclose(expected, direct, atol=1e-6)
    by_id = {r.video_id: r for r in records}
    info = store.videos()[entry.id]
    assert info.category == by_id[entry.id].category and list(info.captions) == list(by_id[entry.id].captions)
    assert store.info["frames"] == str((root / "cache").resolve())
    assert (root / "cache" / store.rows.thumbnail[0]).is_file()


def test_index_resumes_and_refuses_another_model(library, tiny_model, tmp_path):
    root, _ = library
    index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store")
    again = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store")
    assert (again.videos_added, again.videos_skipped, again.version) == (0, 6, None)
    other = ModelSource(backbone="vidsearch-tiny", num_frames=3)
    with pytest.raises(FingerprintMismatch):
        index_cache(model=other.load(), source=other, cache_dir=root / "cache", store_dir=tmp_path / "store")


def test_moments_become_rows_and_search_returns_them(library, tiny_model, tmp_path):
    root, manifest = library
    cache = open_cache(root / "moments")
    moments = sum(len(entry.moments) for entry in cache.ok())
    report = index_cache(model=tiny_model, source=TINY, cache_dir=root / "moments", store_dir=tmp_path / "store",
                         records=load_manifest(manifest))
    assert report.rows_added == moments > 6
    hit = open_searcher(tmp_path / "store").search("a red circle moves to the left").hits[0]
    assert hit.moments[0].start is not None and hit.moments[0].end > hit.moments[0].start
    assert hit.matched_moments >= 1


def test_cli_index_then_search_json(library, tmp_path, capsys):
    root, manifest = library
    store = str(tmp_path / "store")
    assert cli(["index", "--model", "vidsearch-tiny", "--random-weights", "--frames", str(root / "cache"),
                "--store", store, "--data", str(manifest)]) == 0
    capsys.readouterr()
    assert cli(["search", "a red circle moves to the left", "--store", store, "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 3 and result["index"] == "exact"
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_cli_index_without_a_model_explains_where_to_get_one(library, tmp_path, capsys):
    root, _ = library
    assert cli(["index", "--frames", str(root / "cache"), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "--pretrained openai" in err and "Hugging Face" in err


@pytest.mark.parametrize("threads", [1, None])
def test_query_encoder_equals_encode_text_and_restores_threads(tiny_model, threads):
    from vidsearch.store.indexer import ModelQueryEncoder

    texts = ["a red circle moves to the left", "x"]
    before = torch.get_num_threads()
    encoder = ModelQueryEncoder(tiny_model, threads=threads)
    assert encoder.tower is not None and encoder.fingerprint == tiny_model.fingerprint
    got = encoder.encode(texts)
    with torch.no_grad():
        expected = tiny_model.encode_texts(texts).numpy()
    assert got.dtype == np.float32 and torch.get_num_threads() == before
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def _video_counts(store_dir) -> Counter:
    store = Store.open(store_dir)
    return Counter(video for video, start in zip(store.rows.video_id, store.rows.start) if start is None)


def test_two_index_runs_at_once_add_each_video_once(library, tiny_model, tmp_path, monkeypatch):
    """The first run has planned all 6 videos and starts encoding when a second run indexes them from start to end."""
    root, _ = library
    encode, others = indexer._encode_chunk, []

    def second_run_first(*args, **kwargs):
        if not others:
            others.append("running")
            others[0] = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache",
                                    store_dir=tmp_path / "store")
        return encode(*args, **kwargs)

    monkeypatch.setattr(indexer, "_encode_chunk", second_run_first)
    first = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store")
    assert (others[0].videos_added, others[0].version) == (6, 1)
    assert (first.videos_added, first.rows_added, first.videos_skipped, first.version) == (0, 0, 6, None)
    assert _video_counts(tmp_path / "store") == Counter({entry.id: 1 for entry in open_cache(root / "cache").ok()})


def test_a_rebuild_that_fails_midway_leaves_the_complete_previous_version(library, tiny_model, tmp_path,
                                                                          monkeypatch):
    root, _ = library
    index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store")
    before, files = Store.open(tmp_path / "store"), sorted(p.name for p in (tmp_path / "store").iterdir())
    encode, chunks = indexer._encode_chunk, []

    def fail_at_the_second_chunk(*args, **kwargs):
        chunks.append(1)
        if len(chunks) == 2:
            raise RuntimeError("killed after 2 of 6 videos")
        return encode(*args, **kwargs)

    monkeypatch.setattr(indexer, "CHUNK_VIDEOS", 2)
    monkeypatch.setattr(indexer, "_encode_chunk", fail_at_the_second_chunk)
    with pytest.raises(RuntimeError, match="killed after 2"):
        index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store",
                    rebuild=True)
    after = Store.open(tmp_path / "store", verify="full")
    assert (after.version, len(after)) == (1, 6)
    assert [after.row(i) for i in range(len(after))] == [before.row(i) for i in range(len(before))]
    np.testing.assert_array_equal(after.array("video_feature"), before.array("video_feature"))
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == files  # and nothing left behind
    monkeypatch.setattr(indexer, "_encode_chunk", encode)
    report = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store",
                         rebuild=True)
    assert (report.version, report.videos_added, report.rows_added) == (2, 6, 6)  # 3 chunks, one version
    np.testing.assert_allclose(Store.open(tmp_path / "store").array("video_feature"),
                               before.array("video_feature"), rtol=0, atol=1e-6)


def test_a_full_disk_stops_index_with_one_line(library, tmp_path, monkeypatch, capsys):
    root, _ = library

    def disk_full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil, "write_all", disk_full)
    assert cli(["index", "--model", "vidsearch-tiny", "--random-weights", "--frames", str(root / "cache"),
                "--store", str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "vidsearch index: error: No space left on device: free some space, then run it " \
                                   "again" and "Traceback" not in err
    assert not (tmp_path / "store" / "manifest.json").exists()


KILLED_REBUILD = """
import os, sys
from vidsearch.model.source import ModelSource
from vidsearch.store import indexer

source, encode, chunks = ModelSource(backbone="vidsearch-tiny", num_frames=4), indexer._encode_chunk, []

def killed_at_the_second_chunk(*args, **kwargs):
    chunks.append(1)
    if len(chunks) == 2:
        os._exit(9)  # no clean-up runs, as under SIGKILL
    return encode(*args, **kwargs)

indexer.CHUNK_VIDEOS, indexer._encode_chunk = 2, killed_at_the_second_chunk
indexer.index_cache(model=source.load(), source=source, cache_dir=sys.argv[1], store_dir=sys.argv[2], rebuild=True)
"""


@pytest.mark.slow  # a fresh interpreter loading torch: ~10 s; the failure injected in-process above runs always
def test_a_killed_rebuild_leaves_the_previous_version_and_no_files(library, tiny_model, tmp_path):
    root, _ = library
    index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=tmp_path / "store")
    files = sorted(p.name for p in (tmp_path / "store").iterdir())
    killed = subprocess.run([sys.executable, "-c", KILLED_REBUILD, str(root / "cache"), str(tmp_path / "store")],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr[-2000:]
    assert Store.open(tmp_path / "store", verify="full").version == 1
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == files


def test_captions_added_to_an_indexed_store_reach_its_text_mode_and_category_filter(library, tiny_model, tmp_path):
    """frames → index without captions → index --data: the store's captions and categories (what text mode, hybrid
    search and the category filter read) become the manifest's, as the site's caption database does, without
    --rebuild and without touching the vectors."""
    from vidsearch.store.search import SearchOptions

    root, manifest = library
    records = load_manifest(manifest)
    store_dir = tmp_path / "store"
    index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=store_dir)
    before = Store.open(store_dir)
    vectors = np.array(before.array("video_feature"))
    assert all(info.category is None and info.captions == () for info in before.videos().values())
    report = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=store_dir,
                         records=records)
    after = Store.open(store_dir)
    assert report.videos_added == 0 and report.version == after.version == before.version + 1
    assert {video_id: (info.category, list(info.captions)) for video_id, info in after.videos().items()} == \
        {record.video_id: (record.category, list(record.captions)) for record in records}
    np.testing.assert_array_equal(after.array("video_feature"), vectors)
    searcher = open_searcher(store_dir)
    word = records[0].captions[0].split()[-1]
    matches = searcher.search(word, SearchOptions(k=10, mode="text")).text_matches
    assert records[0].video_id in [match.video_id for match in matches]
    category = records[0].category
    hits = searcher.search("a shape", SearchOptions(k=10, category=category)).hits
    assert hits and {hit.category for hit in hits} == {category}
    again = index_cache(model=tiny_model, source=TINY, cache_dir=root / "cache", store_dir=store_dir, records=records)
    assert again.version is None or again.version == after.version  # nothing changed: nothing published
    assert Store.open(store_dir).version == after.version
