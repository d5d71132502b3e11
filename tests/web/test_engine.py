"""The server's library follows new store versions without making searches wait for the new version to load."""

import os
import threading
import time

import numpy as np

from vidsearch.store import store as st
from vidsearch.store.search import FunctionEncoder, Searcher, SearchOptions
from vidsearch.store.store import RowMeta, Store
from vidsearch.web.library import engine

DIM = 4


def _write(path, video_ids, *, add=False):
    vectors = np.eye(DIM, dtype=np.float32)[: len(video_ids)]
    rows = [RowMeta(v, None, None, "circle", f"{v}/0.jpg", (f"caption of {v}",)) for v in video_ids]
    (st.add if add else st.write)(path, {"video_feature": vectors}, fingerprint="toy", rows=rows)


def _library(path, refresh_seconds):
    encoder = FunctionEncoder(lambda texts: np.eye(DIM, dtype=np.float32)[[0] * len(texts)], "toy")
    return engine.Library(Searcher(Store.open(path), encoder), refresh_seconds=refresh_seconds)


def test_searches_go_on_while_a_new_version_is_prepared(tmp_path, monkeypatch):
    _write(tmp_path, ["a", "b"])
    library = _library(tmp_path, refresh_seconds=3600.0)
    _write(tmp_path, ["c"], add=True)
    preparing, release = threading.Event(), threading.Event()
    prepare = library.searcher.prepare_latest

    def slow_prepare():
        preparing.set()
        assert release.wait(10)
        return prepare()

    monkeypatch.setattr(library.searcher, "prepare_latest", slow_prepare)
    refresher = threading.Thread(target=library.refresh)
    refresher.start()
    assert preparing.wait(10)
    result = library.search("anything", SearchOptions(k=5))  # answered from version 1 while version 2 loads
    assert result.store_version == 1 and {h.video_id for h in result.hits} == {"a", "b"}
    release.set()
    refresher.join(10)
    result = library.search("anything", SearchOptions(k=5))
    assert result.store_version == 2 and {h.video_id for h in result.hits} == {"a", "b", "c"}


def test_a_due_check_refreshes_in_the_background(tmp_path):
    _write(tmp_path, ["a"])
    library = _library(tmp_path, refresh_seconds=0.0)
    assert not library.refresh()
    _write(tmp_path, ["b"], add=True)
    first = library.search("anything", SearchOptions(k=5))
    assert first.store_version in (1, 2)  # the search that noticed does not wait for the new version
    deadline = time.monotonic() + 10
    while library.store.version != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert library.search("anything", SearchOptions(k=5)).store_version == 2


def test_an_extracted_video_joins_the_held_cache_unless_the_manifest_changed_otherwise(web_library):
    import dataclasses

    import pytest

    from vidsearch.video.cache import CacheFormatError

    library = engine.Library.open(web_library.store)
    cache = library.cache()
    entry = dataclasses.asdict(next(iter(cache.entries.values())))
    library.cache_added({**entry, "id": "extra"}, before=(0, 0))  # not the version held: read from disk instead
    assert "extra" not in library.cache().entries
    library.cache_added({**entry, "id": "extra"}, before=library.cache_stamp())
    assert "extra" in library.cache().entries and set(cache.entries) < set(library.cache().entries)
    with pytest.raises(CacheFormatError, match="leaves the cache"):
        library.cache_added({**entry, "id": "evil", "frames": ["../../secret.jpg"]}, before=library.cache_stamp())


def test_a_video_another_writer_adds_to_the_cache_is_seen_with_the_held_cache(web_library, tmp_path):
    """The keyframe cache keeps one row per video in SQLite: a video another process adds (a `vidsearch frames` run
    beside the server) is found by the cache the server holds, at once, with nothing re-read or re-parsed."""
    import dataclasses
    import shutil

    from vidsearch.video.cache import cache_lock, open_for_writing

    cache_dir = tmp_path / "cache"
    shutil.copytree(engine.Library.open(web_library.store).cache_dir, cache_dir)
    library = engine.Library.open(web_library.store)
    library.store.info["frames"] = str(cache_dir)  # this test's own copy of the cache
    held = library.cache()
    first = next(held.ok())
    assert library.cache_entry("newcomer") is None
    database = open_for_writing(cache_dir, held.settings)
    with cache_lock(cache_dir):
        database.put({**dataclasses.asdict(first), "id": "newcomer"})
    assert library.cache() is held
    assert library.cache_entry("newcomer").frames == first.frames
    assert "newcomer" in library.cache().entries


def test_a_search_during_a_due_check_answers_from_the_held_version_at_once(tmp_path, monkeypatch):
    """The check that a new version exists runs beside the search: with preparing it blocked, the search that noticed
    returns version 1 (a refresh on the request thread would wait for the release, then answer version 2)."""
    _write(tmp_path, ["a"])
    library = _library(tmp_path, refresh_seconds=0.0)
    _write(tmp_path, ["b"], add=True)
    preparing, release = threading.Event(), threading.Event()
    prepare = library.searcher.prepare_latest

    def blocked_prepare():
        preparing.set()
        release.wait(10)
        return prepare()

    monkeypatch.setattr(library.searcher, "prepare_latest", blocked_prepare)
    result = library.search("anything", SearchOptions(k=5))
    released_before_answer = release.is_set()
    release.set()
    assert not released_before_answer and result.store_version == 1
    assert [h.video_id for h in result.hits] == ["a"]
    assert preparing.wait(10)


def test_two_engines_on_one_store_both_answer_with_a_publish(tmp_path):
    _write(tmp_path, ["a"])
    first, second = _library(tmp_path, refresh_seconds=3600.0), _library(tmp_path, refresh_seconds=3600.0)
    _write(tmp_path, ["b"], add=True)
    assert first.refresh() and second.refresh()
    for library in (first, second):
        result = library.search("anything", SearchOptions(k=5))
        assert result.store_version == 2 and {h.video_id for h in result.hits} == {"a", "b"}


def test_a_store_file_changed_underneath_is_reported_not_fatal(tmp_path, monkeypatch, caplog):
    """Small files were read into memory: the server keeps serving them and warns; a memory-mapped file that changed
    makes searches fail with a clear error instead of a SIGBUS or silently other results."""
    import logging

    import pytest

    _write(tmp_path, ["a", "b"])
    library = _library(tmp_path, refresh_seconds=3600.0)
    array_file = tmp_path / st.read_manifest(tmp_path)["segments"][0]["arrays"]["video_feature"]["file"]
    os.truncate(array_file, 10)
    with caplog.at_level(logging.WARNING, logger=engine.log.name):
        assert not library.refresh()
    assert "changed on disk" in caplog.text and array_file.name in caplog.text
    assert {h.video_id for h in library.search("anything", SearchOptions(k=5)).hits} == {"a", "b"}

    monkeypatch.setattr(st, "COPY_MAX_BYTES", 0)
    mapped = tmp_path / "mapped"
    _write(mapped, ["a", "b"])
    library = _library(mapped, refresh_seconds=3600.0)
    os.truncate(mapped / st.read_manifest(mapped)["segments"][0]["arrays"]["video_feature"]["file"], 10)
    with pytest.raises(engine.LibraryUnavailable, match="changed underneath"):
        library.search("anything", SearchOptions(k=5))
