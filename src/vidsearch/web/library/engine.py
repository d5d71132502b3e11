"""The process's library: one feature store, its model and its keyframe cache, loaded once and shared by requests.

`vidsearch serve` opens it before the first request (`install`); otherwise the first request opens the store named
by settings.VIDSEARCH_STORE. Searches run concurrently. A newly published store version (looked for at most once a
`refresh_seconds`, on a background thread, or at once after an upload was indexed) is opened and made ready beside
the searches; only swapping it in waits until no search is running.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from django.conf import settings

from vidsearch.store.search import Searcher, SearchOptions, SearchResult
from vidsearch.store.store import Store, StoreCorrupted, StoreError
from vidsearch.video.cache import MANIFEST, FrameCache, VideoEntry, open_cache

if TYPE_CHECKING:  # the model's modules import torch: only the server, which loads the model, pays for that
    from vidsearch.model.source import ModelSource
    from vidsearch.model.videoclip import VideoTextModel
    from vidsearch.runtime.exported import ExportedModel

log = logging.getLogger(__name__)


class LibraryUnavailable(Exception):
    """No store to serve: none configured, or it cannot be opened."""


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writer)
            self._writer = True
            self._condition.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._condition:
                self._writer = False
                self._condition.notify_all()


class Library:
    """A Searcher (store + query encoder) and the keyframe cache its thumbnails and videos are found in."""

    def __init__(self, searcher: Searcher, *, refresh_seconds: float = 1.0):
        self.searcher = searcher
        self._refresh_seconds = refresh_seconds
        self._checked = time.monotonic()
        self._lock = _ReadWriteLock()
        self._refresh_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: tuple[tuple[int, int], FrameCache] | None = None
        self._ingesting = 0
        self._cache_reloading = False
        self._changed_warned: list[Path] = []

    @classmethod
    def open(cls, store_dir: str | Path, *, refresh_seconds: float = 1.0, model: str | Path | None = None) -> Library:
        """The store and its own model, or the exported model directory `model`."""
        from vidsearch.store.indexer import open_searcher

        log.info("loading the store %s and its model", store_dir)
        return cls(open_searcher(store_dir, model=model), refresh_seconds=refresh_seconds)

    @property
    def store(self) -> Store:
        """The store version searches currently read (immutable)."""
        return self.searcher.store

    @property
    def model(self) -> VideoTextModel | ExportedModel:
        encoder = self.searcher.encoder
        return getattr(encoder, "model", encoder)  # an exported model is its own query encoder

    @property
    def model_source(self) -> ModelSource:
        from vidsearch.model.source import ModelSource

        return ModelSource.from_dict(self.store.info["model"])

    @property
    def cache_dir(self) -> Path:
        return Path(self.store.info["frames"])

    def search(self, query: str, options: SearchOptions) -> SearchResult:
        return self._searching(lambda: self.searcher.search(query, options))

    def search_example(self, vector: np.ndarray, options: SearchOptions, *, query: str) -> SearchResult:
        """A vector of the video space as the query (Searcher.search_example)."""
        return self._searching(lambda: self.searcher.search_example(vector, options, query=query))

    def similar(self, video_id: str, start: float | None, options: SearchOptions) -> SearchResult | None:
        """More like one of the video's moments (Searcher.similar); None when it has no such moment."""
        return self._searching(lambda: self.searcher.similar(video_id, start, options))

    def _searching(self, run: Callable[[], SearchResult | None]) -> SearchResult | None:
        if time.monotonic() - self._checked > self._refresh_seconds:
            self._refresh_in_background()
        with self._lock.reading():
            try:
                return run()
            except StoreCorrupted as error:
                log.warning("cannot search store version %d: %s", self.store.version, error)
                raise LibraryUnavailable(f"the store's files changed underneath the server: {error}. Rebuild or "
                                         f"restore the store (vidsearch index)") from error

    def refresh(self) -> bool:
        """Follow the store's latest published version; True when it changed.

        The new version is opened and made ready (arrays, rows, vector index) while searches go on with the old one;
        only the swap itself waits for running searches to finish.
        """
        with self._refresh_lock:
            self._checked = time.monotonic()
            prepared = self.searcher.prepare_latest()
            if prepared is None:
                self._warn_if_changed()
                return False
            with self._lock.writing():
                self.searcher.use(prepared)
        log.info("now serving store version %d", self.store.version)
        return True

    def _warn_if_changed(self) -> None:
        """Files of the version served changed on disk: say so (searches of files read into memory go on)."""
        changed = self.store.changed_files()
        if changed and changed != self._changed_warned:  # once, not at every check
            self._changed_warned = changed
            log.warning("files of store version %d changed on disk (truncated or rewritten): %s; serving it from "
                        "what was read when it was opened, where that holds", self.store.version,
                        ", ".join(map(str, changed)))

    def _refresh_in_background(self) -> None:
        """Start a refresh on its own thread unless one is running: the request that noticed pays nothing."""
        self._checked = time.monotonic()
        if not self._refresh_lock.locked():
            threading.Thread(target=self._refresh_quietly, name="vidsearch-refresh", daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except (StoreError, OSError) as error:  # searches keep the version they have; the next check tries again
            log.warning("cannot follow the store %s, still serving version %d: %s", self.store.path,
                        self.store.version, error)

    def cache(self) -> FrameCache:
        """The keyframe cache as last read.

        When its manifest was replaced, requests go on with the version held while a background thread reads the new
        one; an upload being ingested adds its own entry instead (`ingesting`, `cache_added`). On a large library,
        parsing the manifest holds the interpreter lock long enough to delay every request.
        """
        stamp = self.cache_stamp()
        with self._cache_lock:
            if self._cache is None:
                self._cache = (stamp, open_cache(self.cache_dir))
            elif self._cache[0] != stamp and not self._ingesting and not self._cache_reloading:
                self._cache_reloading = True
                threading.Thread(target=self._reload_cache_quietly, name="vidsearch-cache", daemon=True).start()
            return self._cache[1]

    def cache_entry(self, video_id: str) -> VideoEntry | None:
        """A video's keyframe entry; one the held cache does not know yet is looked for in the current manifest."""
        entry = self.cache().entries.get(video_id)
        if entry is None and self._cache is not None and self._cache[0] != self.cache_stamp():
            self._read_cache()
            entry = self.cache().entries.get(video_id)
        return entry

    def cache_stamp(self) -> tuple[int, int]:
        """Identifies the keyframe manifest's current version (it is replaced by rename on every change)."""
        stat = os.stat(self.cache_dir / MANIFEST)
        return stat.st_ino, stat.st_mtime_ns

    @contextmanager
    def ingesting(self) -> Iterator[tuple[int, int]]:
        """Around the extraction of one upload's keyframes: yields the manifest's version before it; meanwhile
        requests do not read the manifest that the extraction rewrites (the job adds the entry: `cache_added`)."""
        self.cache()
        with self._cache_lock:
            self._ingesting += 1
        try:
            yield self.cache_stamp()
        finally:
            with self._cache_lock:
                self._ingesting -= 1

    def cache_added(self, entry: dict, *, before: tuple[int, int]) -> None:
        """One video was extracted into the cache, whose manifest was at `before`: add its entry to the cache held
        here rather than parse the whole manifest again. If anything else changed the manifest, read it all."""
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == before:
                self._cache = (self.cache_stamp(), self._cache[1].with_entry(entry))
                return
        self._read_cache()

    def _read_cache(self) -> None:
        stamp = self.cache_stamp()  # taken first: a change during the read is noticed by the next look
        cache = open_cache(self.cache_dir)
        with self._cache_lock:
            self._cache = (stamp, cache)

    def _reload_cache_quietly(self) -> None:
        try:
            self._read_cache()
        except (OSError, ValueError) as error:  # requests keep the cache they have; the next look tries again
            log.warning("cannot read the keyframe cache %s: %s", self.cache_dir, error)
        finally:
            with self._cache_lock:
                self._cache_reloading = False
        self._changed_warned: list[Path] = []


_library: Library | None = None
_library_lock = threading.Lock()


def get_library() -> Library:
    """The process's library, opened on first use from settings.VIDSEARCH_STORE."""
    global _library
    with _library_lock:
        if _library is None:
            _library = _open_configured()
        return _library


def _open_configured() -> Library:
    if settings.VIDSEARCH_STORE is None:
        raise LibraryUnavailable("no store configured: set VIDSEARCH_STORE or run `vidsearch serve --store DIR`")
    try:
        return Library.open(settings.VIDSEARCH_STORE, refresh_seconds=settings.VIDSEARCH_REFRESH_SECONDS)
    except (StoreError, OSError, KeyError) as error:
        raise LibraryUnavailable(f"cannot open the store {settings.VIDSEARCH_STORE}: {error}") from error


def install(library: Library | None) -> None:
    """Make `library` the process's library (`vidsearch serve` at start; tests), or forget it (None)."""
    global _library
    with _library_lock:
        _library = library
