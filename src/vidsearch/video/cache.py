"""The keyframe cache: keyframes picked once, stored as square JPEGs, so training and indexing never decode video.

The thesis (§3.3): caching 224×224 keyframes cut a training step from 5.99 s to 0.41 s and the data from 6.25 GB
to 1.87 GB.

On disk, a cache is a directory:

    manifest.json                 format, version and the settings; written once, when the cache is created
    videos.sqlite3                one row per video (SQLite, WAL mode), see below
    .lock                         writers hold an exclusive flock on it while they change the cache (briefly)
    frames/<video id>/0000.jpg    keyframes, short side scaled to `size` (bicubic), centre-cropped square, upright

`manifest.json`:

    {"format": "vidsearch.keyframes", "version": 2, "vidsearch": "0.1.0", "database": "videos.sqlite3",
     "settings": {FrameConfig fields: sampler, frames, size, fps, jpeg_quality, segment_seconds, scenes, ...}}

`videos.sqlite3`, table `videos`, one row per extracted video (JSON columns hold JSON text):

    id TEXT PRIMARY KEY              "video7": the file stem made filesystem-safe, at most 96 bytes (a longer stem is
                                     cut and ends with 12 hex digits of its sha256); a colliding stem gets "-2", ...
    source TEXT, size INTEGER, mtime REAL    "/abs/path/video7.mp4", bytes, seconds since the epoch
    status TEXT                      "ok" | "failed"
    error JSON                       null | {"code": "truncated", "message": "..."}
    duration REAL, fps REAL, width INTEGER, height INTEGER    the source as displayed; null if failed
    timestamps JSON                  [0.0, 1.0, ...] seconds from the first frame, one per keyframe, increasing
    frames JSON                      ["frames/video7/0000.jpg", ...] relative to the cache directory
    moments JSON                     [{"start": 0.0, "end": 10.0, "frames": [0, 1, 2]}, ...] indices into frames;
                                     [] unless built with segment_seconds or scenes
    duplicate_of TEXT                null, or the id of a video with the same bytes (found by size, then sha256, when
                                     `vidsearch frames` runs); the indexer indexes that one only. Added to caches
                                     made before it by their next writer; readers of those see null.

and table `ids (source TEXT PRIMARY KEY, id TEXT UNIQUE)`: every id ever given, so a source keeps its id across runs
and two writers never give one id to two files.

Without moments, a video's frames are its keyframes (at most `frames` of them, fewer for short videos: the loader
pads). With moments, each moment has its own keyframes and the video's frames are their union in time order. A
failed video has status "failed", its error, and no frames: nothing is ever replaced by blank frames.

Version 1 caches (`manifest.json` with every video under "videos", same fields) are still read as they are, and are
migrated to version 2 (atomically, under the lock) by the first writer that opens them.

Reading API (what the training loader, the indexer and the web server use):

    cache = open_cache(path)                  # FrameCache; CacheFormatError for an unknown format or version
    cache.settings                            # FrameConfig the cache was built with
    cache.entries                             # Mapping[str, VideoEntry], all videos, failed ones included; read
                                              # lazily, by id (nothing is loaded at open)
    cache.entry(video_id)                     # one VideoEntry (KeyError if absent)
    cache.ok()                                # Iterator[VideoEntry] with status "ok", sorted by id
    cache.count(status=None)                  # number of videos (with that status)
    cache.read_frames(video_id, indices=None) # uint8 [T, S, S, 3], RGB
    cache.frame_path(video_id, i)             # Path of keyframe i

A FrameCache reads the current rows: a video added by another process after `open_cache` is seen. It may be used
from several threads and survives a fork (each process opens its own database connection).

Building: `build_cache(inputs, out, config, workers=..., limits=...)` (the `vidsearch frames` command). Each video is
decoded in a child process with a time limit (`vidsearch.video.workers`); unchanged videos (same size, mtime and
settings) are skipped; failed ones are retried. Several builds may run at once on one cache (a web server's uploads
beside a `vidsearch frames`): the child that extracted a video writes its frames and its row together while holding
the cache's lock, so every video any of them extracted ends up in the cache, with its own frames. Writers run on the
cache's machine (SQLite's WAL is not shared between hosts); another machine decodes with `extract_keyframes` (the
entry and the JPEG bytes, nothing written), the cache's machine stores them with `store_entry`, and
`FramesInMemory` serves such JPEGs to an encoder as a FrameCache serves its files.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import heapq
import io
import json
import logging
import os
import re
import shutil
import stat
import sqlite3
import threading
import time
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from vidsearch import __version__
from vidsearch.config import FrameConfig, from_dict, to_dict
from vidsearch.fsutil import atomic_write_text, fsync_dir
from vidsearch.video import samplers, segments
from vidsearch.video.decode import DecodeLimits, VideoError, VideoInfo, check_local_file, decode_frames, iter_frames, probe
from vidsearch.video.workers import Outcome, run_isolated

log = logging.getLogger(__name__)

FORMAT = "vidsearch.keyframes"
VERSION = 2
MANIFEST = "manifest.json"
DATABASE = "videos.sqlite3"
LOCK = ".lock"
FRAMES_DIR = "frames"
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts"})
SAMPLERS = ("uniform", "maxdiff")
MAX_ID_BYTES = 96
_PAGE = 1000
_BUSY_TIMEOUT_S = 300.0
_COLUMNS = ("id", "source", "size", "mtime", "status", "error", "duration", "fps", "width", "height", "timestamps",
            "frames", "moments", "duplicate_of")
_JSON_COLUMNS = frozenset({"error", "timestamps", "frames", "moments"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL, status TEXT NOT NULL,
    error TEXT, duration REAL, fps REAL, width INTEGER, height INTEGER,
    timestamps TEXT NOT NULL, frames TEXT NOT NULL, moments TEXT NOT NULL, duplicate_of TEXT);
CREATE INDEX IF NOT EXISTS videos_by_status ON videos (status, id);
CREATE TABLE IF NOT EXISTS ids (source TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE);
"""


class CacheFormatError(ValueError):
    """A manifest this version cannot read, or a cache built with other settings than asked for."""


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """A stretch of a video, [start, end) seconds, and its keyframes as indices into the video's frames."""

    start: float
    end: float
    frames: list[int]


@dataclass(frozen=True)
class VideoEntry:
    id: str
    source: str
    size: int
    mtime: float
    status: str
    error: dict[str, str] | None = None
    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    timestamps: list[float] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    duplicate_of: str | None = None  # the id of a video with the same bytes, which is the one indexed

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoEntry:
        moments = [Moment(**moment) for moment in data.get("moments", [])]
        entry = cls(**{**data, "moments": moments})
        _check_frame_paths(entry)
        return entry


class CacheDatabase:
    """The rows of a version 2 cache: one SQLite connection per process (opened again after a fork), shared by its
    threads one statement at a time. Pickles as its path."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._select = ", ".join(_COLUMNS)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._pid != os.getpid():
                if self._connection is not None:  # the parent's, copied by a fork: SQLite forbids using or closing it
                    _INHERITED_CONNECTIONS.append(self._connection)
                self._connection, self._pid = _connect(self.path), os.getpid()
                self._select = _select_list(self._connection)
            yield self._connection

    def get(self, video_id: str) -> VideoEntry | None:
        with self.connection() as db:
            row = db.execute(f"SELECT {self._select} FROM videos WHERE id = ?", (video_id,)).fetchone()
        return _entry_of(row) if row else None

    def count(self, status: str | None = None) -> int:
        with self.connection() as db:
            if status is None:
                return db.execute("SELECT count(*) FROM videos").fetchone()[0]
            return db.execute("SELECT count(*) FROM videos WHERE status = ?", (status,)).fetchone()[0]

    def ids(self) -> Iterator[str]:
        for page in self._pages("id", None):
            yield from (row[0] for row in page)

    def entries(self, status: str | None = None) -> Iterator[VideoEntry]:
        """Entries (with `status`, or all) sorted by id, read a page at a time."""
        for page in self._pages(None, status):
            yield from map(_entry_of, page)

    def _pages(self, columns: str | None, status: str | None) -> Iterator[list[tuple]]:
        """Rows a page at a time: `columns`, or (None) every column of an entry."""
        after, where = "", "" if status is None else "status = ? AND "
        while True:
            with self.connection() as db:
                page = db.execute(f"SELECT {columns or self._select} FROM videos WHERE {where}id > ? ORDER BY id LIMIT {_PAGE}",
                                  (*([status] if status else []), after)).fetchall()
            if not page:
                return
            yield page
            after = page[-1][0]

    def assign_ids(self, sources: Sequence[Path]) -> dict[Path, str]:
        """A cache id per source, in one transaction: a source's own id if it has one, else a new one (its stem made
        filesystem-safe and bounded, numbered when taken), recorded before any other writer can take it."""
        ids = {}
        with self.connection() as db, _transaction(db):
            for source in sources:
                row = db.execute("SELECT id FROM ids WHERE source = ?", (str(source),)).fetchone()
                ids[source] = row[0] if row else _new_id(db, source)
        return ids

    def mark_duplicates(self, duplicates: Mapping[str, str]) -> None:
        """Record each video's `duplicate_of` (id → the id of the video with the same bytes)."""
        with self.connection() as db, _transaction(db):
            db.executemany("UPDATE videos SET duplicate_of = ? WHERE id = ?",
                           [(original, video_id) for video_id, original in duplicates.items()])

    def id_of(self, source: str | Path) -> str | None:
        """The cache id given to `source` (as it was named when extracted), or None."""
        with self.connection() as db:
            row = db.execute("SELECT id FROM ids WHERE source = ?", (str(source),)).fetchone()
        return row[0] if row else None

    def delete(self, video_id: str) -> bool:
        """Forget one video's row and its id (call while holding the cache's lock); True if it had a row."""
        with self.connection() as db, _transaction(db):
            gone = db.execute("DELETE FROM videos WHERE id = ?", (video_id,)).rowcount
            db.execute("DELETE FROM ids WHERE id = ?", (video_id,))
        return bool(gone)

    def put(self, entry: dict[str, Any]) -> None:
        """Insert or replace one video's row (call while holding the cache's lock, with its frames in place)."""
        with self.connection() as db, _transaction(db):
            db.execute(f"INSERT OR REPLACE INTO videos VALUES ({', '.join('?' * len(_COLUMNS))})", _row_of(entry))


_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []


def _select_list(db: sqlite3.Connection) -> str:
    """The entry columns to select; NULL for those a database made by an earlier version lacks."""
    present = {row[1] for row in db.execute("PRAGMA table_info(videos)")}
    return ", ".join(c if c in present else f"NULL AS {c}" for c in _COLUMNS)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns added since a cache's database was made (call under the cache's lock)."""
    if "duplicate_of" not in {row[1] for row in db.execute("PRAGMA table_info(videos)")}:
        db.execute("ALTER TABLE videos ADD COLUMN duplicate_of TEXT")


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing database (never creates one), waiting for writers rather than failing."""
    connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=_BUSY_TIMEOUT_S,
                                 isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: consistent after a crash, each commit one write
    return connection


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; SQLite's "database or disk is full" comes out as OSError(ENOSPC)."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.OperationalError as error:
        if error.sqlite_errorcode == sqlite3.SQLITE_FULL:
            raise OSError(errno.ENOSPC, f"no space left on the device for the cache database: {error}") from None
        raise


def _row_of(entry: dict[str, Any]) -> tuple:
    values = {"error": None, "duration": None, "fps": None, "width": None, "height": None, "timestamps": [],
              "frames": [], "moments": [], "duplicate_of": None, **entry}
    return tuple(json.dumps(values[c]) if c in _JSON_COLUMNS else values[c] for c in _COLUMNS)


def _entry_of(row: Sequence[Any]) -> VideoEntry:
    data = {c: json.loads(v) if c in _JSON_COLUMNS else v for c, v in zip(_COLUMNS, row)}
    return VideoEntry.from_json(data)


class _DatabaseEntries(Mapping[str, VideoEntry]):
    """`FrameCache.entries` of a version 2 cache: each lookup reads one row; iterating reads a page at a time.
    `extra`: entries that come before the database's (one the caller knows was just extracted)."""

    def __init__(self, database: CacheDatabase, extra: Mapping[str, VideoEntry] | None = None):
        self.database = database
        self.extra = dict(extra or {})

    def __getitem__(self, video_id: str) -> VideoEntry:
        entry = self.extra.get(video_id) or self.database.get(video_id)
        if entry is None:
            raise KeyError(video_id)
        return entry

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, str) and self.get(video_id) is not None

    def __iter__(self) -> Iterator[str]:
        extra = [entry.id for entry in self._extra_only()]
        return heapq.merge(self.database.ids(), extra) if extra else self.database.ids()

    def __len__(self) -> int:
        return self.count(None)

    def values(self) -> Iterator[VideoEntry]:  # type: ignore[override]  # one query per page, not one per key
        return self.ok(None)

    def items(self) -> Iterator[tuple[str, VideoEntry]]:  # type: ignore[override]
        return ((entry.id, entry) for entry in self.values())

    def ok(self, status: str | None = "ok") -> Iterator[VideoEntry]:
        """Entries with `status` (all for None) sorted by id."""
        extra = [e for e in self._extra_only() if status is None or e.status == status]
        rows = (self.extra.get(e.id, e) for e in self.database.entries(status))
        return heapq.merge(rows, extra, key=lambda entry: entry.id) if extra else rows

    def count(self, status: str | None) -> int:
        extra = sum(status is None or e.status == status for e in self._extra_only())
        return self.database.count(status) + extra

    def _extra_only(self) -> list[VideoEntry]:
        return sorted((e for e in self.extra.values() if self.database.get(e.id) is None), key=lambda e: e.id)


class _JsonEntries(dict):
    """`FrameCache.entries` of a version 1 cache: the manifest's entries, all in memory."""

    def ok(self) -> Iterator[VideoEntry]:
        return (entry for _, entry in sorted(self.items()) if entry.status == "ok")

    def count(self, status: str | None) -> int:
        return sum(status is None or entry.status == status for entry in self.values())


class FrameCache:
    """A keyframe cache opened for reading (see the module docstring)."""

    def __init__(self, root: Path, settings: FrameConfig, entries: _DatabaseEntries | _JsonEntries):
        self.root = root
        self.settings = settings
        self.entries = entries

    def entry(self, video_id: str) -> VideoEntry:
        return self.entries[video_id]

    def ok(self) -> Iterator[VideoEntry]:
        return self.entries.ok()

    def count(self, status: str | None = None) -> int:
        return self.entries.count(status)

    def with_entry(self, data: dict[str, Any]) -> FrameCache:
        """This cache as it is after one more video was extracted into it (`data`: that video's entry)."""
        entry = VideoEntry.from_json(data)
        if isinstance(self.entries, _JsonEntries):
            return FrameCache(self.root, self.settings, _JsonEntries({**self.entries, entry.id: entry}))
        if self.entries.database.get(entry.id) == entry:
            return self
        return FrameCache(self.root, self.settings,
                          _DatabaseEntries(self.entries.database, {**self.entries.extra, entry.id: entry}))

    def frame_path(self, video_id: str, i: int) -> Path:
        return self.root / self.entries[video_id].frames[i]

    def read_frames(self, video_id: str, indices: Sequence[int] | None = None) -> np.ndarray:
        """Keyframes of one video as uint8 [T, S, S, 3] (all of them unless `indices` says which)."""
        entry = self.entries[video_id]
        if entry.status != "ok":
            raise ValueError(f"video {video_id} has no frames: {entry.error}")
        chosen = range(len(entry.frames)) if indices is None else indices
        return np.stack([_read_jpeg(self.root / entry.frames[i]) for i in chosen])


class FramesInMemory:
    """Keyframes not read from a cache directory (their JPEG bytes came from the machine that decoded them), served
    to the encoder as a FrameCache serves them (`entry`, `read_frames`): the same bytes decode to the same pixels."""

    def __init__(self) -> None:
        self._entries: dict[str, VideoEntry] = {}
        self._jpegs: dict[str, Sequence[bytes]] = {}

    def add(self, entry: dict[str, Any], jpegs: Sequence[bytes]) -> None:
        """One "ok" video: its entry (frames named as in a cache) and one JPEG per frame."""
        video = VideoEntry.from_json(entry)
        if video.status != "ok" or len(jpegs) != len(video.frames):
            raise ValueError(f"video {video.id}: {len(jpegs)} JPEGs for {len(video.frames)} frames ({video.status})")
        self._entries[video.id], self._jpegs[video.id] = video, jpegs

    def entry(self, video_id: str) -> VideoEntry:
        return self._entries[video_id]

    def read_frames(self, video_id: str, indices: Sequence[int] | None = None) -> np.ndarray:
        """Keyframes of one video as uint8 [T, S, S, 3] (all of them unless `indices` says which)."""
        jpegs = self._jpegs[video_id]
        chosen = range(len(jpegs)) if indices is None else indices
        return np.stack([_read_jpeg(io.BytesIO(jpegs[i])) for i in chosen])


def open_cache(path: str | Path) -> FrameCache:
    """Open a cache directory; refuses a manifest of another format or version, or with unsafe frame paths."""
    root = Path(path)
    manifest = _read_manifest(root)
    settings = from_dict(FrameConfig, manifest["settings"])
    if manifest["version"] == 1:
        videos = manifest.get("videos")
        if not isinstance(videos, dict):
            raise CacheFormatError(f"{root / MANIFEST}: version 1 without its \"videos\"")
        return FrameCache(root, settings, _JsonEntries((k, VideoEntry.from_json(v)) for k, v in videos.items()))
    return FrameCache(root, settings, _DatabaseEntries(CacheDatabase(root / DATABASE)))


def _read_manifest(root: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except ValueError as error:
        raise CacheFormatError(f"{root / MANIFEST} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") not in (1, 2):
        found = manifest if not isinstance(manifest, dict) else manifest.get("format"), \
            None if not isinstance(manifest, dict) else manifest.get("version")
        raise CacheFormatError(f"{root / MANIFEST}: format {found[0]!r} version {found[1]!r}, expected {FORMAT!r} "
                               f"version 1 or {VERSION}")
    if not isinstance(manifest.get("settings"), dict):
        raise CacheFormatError(f"{root / MANIFEST}: no \"settings\"")
    return manifest


def _check_frame_paths(entry: VideoEntry) -> None:
    for name in entry.frames:
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute() or ".." in parts or parts[:1] != (FRAMES_DIR,):
            raise CacheFormatError(f"video {entry.id}: frame path {name!r} leaves the cache's frames directory")


def _read_jpeg(path: Path | io.BytesIO) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# --- opening for writing: create, migrate, lock -------------------------------------------------------------------


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """The cache's write lock (an exclusive flock on `.lock`); writers hold it only while they change files or rows."""
    with open(root / LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_for_writing(root: Path, config: FrameConfig) -> CacheDatabase:
    """The database of the cache at `root`, created (version 2) if absent or migrated from version 1, after checking
    it was built with `config`; removes frame folders an interrupted writer left."""
    (root / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
    with cache_lock(root):
        if not (root / MANIFEST).exists():
            _create(root, config, entries=[])
        else:
            manifest = _read_manifest(root)
            if from_dict(FrameConfig, manifest["settings"]) != config:
                raise CacheFormatError(f"{root} was built with other settings ({manifest['settings']}); "
                                       "use another output directory or delete this one")
            if manifest["version"] == 1:
                log.info("%s: moving %d videos from manifest.json into %s", root, len(manifest["videos"]), DATABASE)
                _create(root, config, entries=manifest["videos"].values())
            else:
                with closing(_connect(root / DATABASE)) as db:
                    _add_missing_columns(db)
        _remove_partial_frames(root)
    return CacheDatabase(root / DATABASE)


def _create(root: Path, config: FrameConfig, *, entries: Iterable[dict[str, Any]]) -> None:
    """A new database holding `entries` (written under a temporary name, then renamed), then the version 2 manifest:
    until that manifest replaces a version 1 one, readers and writers go on with version 1."""
    final, tmp = root / DATABASE, root / f".{DATABASE}.tmp"
    for stale in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(_SCHEMA)
        with _transaction(db):
            db.executemany(f"INSERT INTO videos VALUES ({', '.join('?' * len(_COLUMNS))})", map(_row_of, entries))
            db.execute("INSERT INTO ids (source, id) SELECT source, id FROM videos")
    finally:
        db.close()
    for stale in (Path(f"{final}-wal"), Path(f"{final}-shm")):  # of a database no manifest refers to
        stale.unlink(missing_ok=True)
    os.replace(tmp, final)
    fsync_dir(root)
    manifest = {"format": FORMAT, "version": VERSION, "vidsearch": __version__, "database": DATABASE,
                "settings": to_dict(config)}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _remove_partial_frames(root: Path) -> None:
    """Frame folders a writer was filling when it was interrupted (call under the cache's lock)."""
    for partial in (root / FRAMES_DIR).glob(".*"):
        shutil.rmtree(partial, ignore_errors=True)


def _new_id(db: sqlite3.Connection, source: Path) -> str:
    stem, n = bounded_stem(source), 1
    candidate = stem
    while db.execute("SELECT 1 FROM ids WHERE id = ?", (candidate,)).fetchone():
        n += 1
        candidate = f"{stem}-{n}"
    db.execute("INSERT INTO ids (source, id) VALUES (?, ?)", (str(source), candidate))
    return candidate


def bounded_stem(path: Path) -> str:
    """The file's stem made filesystem-safe; one over MAX_ID_BYTES (UTF-8) is cut and ends with part of its sha256,
    so a frame folder's name (with ".partial" or "-99" added) stays far below the 255 bytes file systems allow."""
    stem = re.sub(r"[^\w.-]", "_", path.stem).lstrip(".") or "video"
    if len(stem.encode()) <= MAX_ID_BYTES:
        return stem
    digest = hashlib.sha256(path.stem.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    cut = stem.encode()[:MAX_ID_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{cut}-{digest}"


# --- building ---------------------------------------------------------------------------------------------------


@dataclass
class BuildReport:
    """What one `build_cache` run did, for the summary and the exit status."""

    cache: Path
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[VideoEntry] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # directories that could not be listed, with the reason
    duplicates: dict[str, str] = field(default_factory=dict)  # id → id of a video with the same bytes
    renamed: dict[str, str] = field(default_factory=dict)  # id → source, for ids not the file's stem (taken)
    frames: int = 0
    seconds: float = 0.0

    @property
    def failures(self) -> int:
        return len(self.failed) + len(self.unreadable)

    def summary(self) -> str:
        lines = [f"{len(self.extracted)} extracted ({self.frames} keyframes), {len(self.skipped)} unchanged, "
                 f"{self.failures} failed in {self.seconds:.1f} s → {self.cache}"]
        lines += [f"  failed {entry.id} ({entry.source}): {entry.error['code']}: {entry.error['message']}"
                  for entry in self.failed]
        lines += [f"  unreadable {problem}" for problem in self.unreadable]
        lines += [f"  duplicate {video_id}: the same bytes as {original}; `vidsearch index` indexes {original} only"
                  for video_id, original in sorted(self.duplicates.items())]
        lines += [f"  renamed {source} to {video_id}: the id {bounded_stem(Path(source))} is another file's"
                  for video_id, source in sorted(self.renamed.items())]
        return "\n".join(lines)


def find_videos(inputs: Iterable[str | Path], unreadable: list[str] | None = None) -> list[Path]:
    """Files named, plus files with a video suffix under directories named (recursively, hidden ones skipped).

    A directory that cannot be listed is logged and appended to `unreadable` ("DIR: reason")."""
    found: set[Path] = set()
    for item in map(Path, inputs):
        if item.is_dir():
            found.update(_videos_under(item, unreadable if unreadable is not None else []))
        elif item.exists():
            found.add(item.absolute())
        else:
            raise FileNotFoundError(f"no such file or directory: {item}")
    return sorted(found)


def _videos_under(root: Path, unreadable: list[str]) -> Iterator[Path]:
    def report(error: OSError) -> None:
        log.warning("cannot read the directory %s: %s", error.filename, error.strerror)
        unreadable.append(f"{error.filename}: {error.strerror}")

    for directory, subdirectories, files in os.walk(root, onerror=report):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in files:
            path = Path(directory, name)
            if not name.startswith(".") and path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
                yield path.absolute()


def build_cache(inputs: Iterable[str | Path], out: str | Path, config: FrameConfig, *, workers: int | None = None,
                limits: DecodeLimits = DecodeLimits(), duplicates: bool = True) -> BuildReport:
    """Extract the keyframes of every input video into the cache `out` (see the module docstring).

    `duplicates`: record which inputs hold the same bytes as another video (`same_bytes`).
    `workers` videos are decoded at once (default: one per core), each with cores/workers decoder threads. Raises
    OSError(ENOSPC) when the disk is full (what was extracted until then stays in the cache).
    """
    started = time.monotonic()
    plan = plan_extraction(inputs, out, config, workers=workers, limits=limits, duplicates=duplicates)
    _extract_all(plan, workers=plan.workers, timeout_s=limits.timeout_s)
    with cache_lock(plan.root):
        plan.database.mark_duplicates(plan.report.duplicates)
    plan.report.seconds = time.monotonic() - started
    return plan.report


@dataclass
class ExtractionPlan:
    """What a build has to do: `tasks` for `extract_video` (one per new, changed or failed video); the report has the
    unchanged videos and unreadable directories already."""

    root: Path
    database: CacheDatabase
    tasks: list[dict[str, Any]]
    report: BuildReport
    workers: int


def plan_extraction(inputs: Iterable[str | Path], out: str | Path, config: FrameConfig, *, workers: int | None = None,
                    limits: DecodeLimits = DecodeLimits(), duplicates: bool = True) -> ExtractionPlan:
    """Find the input videos, open (or create) the cache, give each video its id and decide which to extract."""
    _check_config(config)
    workers = workers or os.cpu_count() or 1
    root = Path(out)
    report = BuildReport(root)
    sources = find_videos(inputs, report.unreadable)
    database = open_for_writing(root, config)
    ids = database.assign_ids(sources)
    report.renamed = {ids[source]: str(source) for source in sources if ids[source] != bounded_stem(source)}
    report.duplicates = same_bytes(sources, ids, database) if duplicates else {}
    tasks = []
    for source in sources:
        if _unchanged(database.get(ids[source]), source):
            report.skipped.append(ids[source])
        else:
            tasks.append(_task(source, ids[source], root, config, limits, workers))
    return ExtractionPlan(root, database, tasks, report, workers)


def same_bytes(sources: Sequence[Path], ids: Mapping[Path, str], database: CacheDatabase) -> dict[str, str]:
    """The sources that hold the same bytes as another video of the cache or of `sources`: their id → that video's.

    Only files whose size another has are read (sha256). The video kept is one already in the cache and no
    duplicate itself, else the first id in sort order."""
    known = {entry.id: Path(entry.source) for entry in database.entries("ok") if entry.duplicate_of is None}
    candidates = {**known, **{ids[source]: source for source in sources}}
    by_size: dict[int, list[str]] = {}
    for video_id, path in candidates.items():
        with suppress(OSError):
            status = path.stat()
            if stat.S_ISREG(status.st_mode) and status.st_size > 0:  # a FIFO or a device is never read here
                by_size.setdefault(status.st_size, []).append(video_id)
    by_digest: dict[str, list[str]] = {}
    for video_id in (video_id for group in by_size.values() if len(group) > 1 for video_id in group):
        with suppress(OSError):
            by_digest.setdefault(_sha256(candidates[video_id]), []).append(video_id)
    ours = {ids[source] for source in sources}
    duplicates = {}
    for group in by_digest.values():
        original = min(group, key=lambda video_id: (video_id not in known, video_id))
        duplicates.update({video_id: original for video_id in group if video_id != original and video_id in ours})
    return duplicates


def _sha256(path: Path) -> str:
    """sha256 of a regular file (opened without blocking and checked after opening: a FIFO swapped in is refused)."""
    digest = hashlib.sha256()
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_config(config: FrameConfig) -> None:
    if config.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {config.sampler!r}; choose from {', '.join(SAMPLERS)}")
    if config.frames < 1 or config.size < 1 or config.fps <= 0 or not 1 <= config.jpeg_quality <= 100:
        raise ValueError("frames, size and fps must be positive and the JPEG quality within 1-100")
    if config.segment_seconds is not None and (config.segment_seconds <= 0 or config.scenes):
        raise ValueError("segment_seconds must be positive and cannot be combined with scenes")
    if config.keyframes_only and config.sampler != "uniform":
        raise ValueError("keyframes_only works with the uniform sampler only")


def _unchanged(entry: VideoEntry | None, source: Path) -> bool:
    if entry is None or entry.status != "ok":
        return False
    stat = source.stat()
    return entry.size == stat.st_size and entry.mtime == stat.st_mtime


def _task(source: Path, video_id: str, root: Path, config: FrameConfig, limits: DecodeLimits, workers: int) -> dict:
    threads = max(1, (os.cpu_count() or 1) // workers)
    return {"source": str(source), "id": video_id, "cache": str(root), "settings": to_dict(config),
            "limits": asdict(limits), "threads": threads}


def _extract_all(plan: ExtractionPlan, *, workers: int, timeout_s: float) -> None:
    from tqdm import tqdm  # here, not at the top: every worker process imports this module, and tqdm is a fifth of it

    outcomes = run_isolated(extract_video, plan.tasks, workers=workers, timeout_s=timeout_s)
    with closing(outcomes), tqdm(total=len(plan.tasks), desc="keyframes", unit="video",
                                 disable=not plan.tasks) as progress:
        for outcome in outcomes:
            _count(record_outcome(plan.root, plan.database, outcome), plan.report)
            progress.update()


def record_outcome(root: Path, database: CacheDatabase, outcome: Outcome) -> dict[str, Any]:
    """The cache entry an `extract_video` outcome leaves: the child's own, or (a child that died or timed out stored
    nothing) its failure, recorded here. Raises OSError(ENOSPC) when the child found the disk full."""
    if outcome.result and "disk_full" in outcome.result:
        raise OSError(errno.ENOSPC, f"no space left on the device for the keyframes of "
                                    f"{outcome.task['source']} ({outcome.result['disk_full']})")
    return outcome.result or store_entry(root, database, _failed_entry(outcome.task, outcome.failure, outcome.detail))


def _count(entry: dict[str, Any], report: BuildReport) -> None:
    if entry["status"] == "ok":
        report.extracted.append(entry["id"])
        report.frames += len(entry["frames"])
    else:
        report.failed.append(VideoEntry.from_json(entry))
        log.debug("failed %s: %s", entry["source"], entry["error"])


def store_entry(root: Path, database: CacheDatabase, entry: dict[str, Any],
                jpegs: Sequence[bytes] = ()) -> dict[str, Any]:
    """Write one video's frames (`jpegs`, for an "ok" entry) and its row, under the cache's lock; returns the entry
    now in the cache. A failure never replaces the frames another writer extracted from the same file (same size
    and mtime); otherwise it removes the video's earlier frames."""
    with cache_lock(root):
        if entry["status"] == "ok":
            entry = {**entry, "frames": _write_frames(root, entry["id"], jpegs)}
        else:
            existing = database.get(entry["id"])
            if existing and existing.status == "ok" and (existing.size, existing.mtime) == (entry["size"],
                                                                                           entry["mtime"]):
                return asdict(existing)
            shutil.rmtree(root / FRAMES_DIR / entry["id"], ignore_errors=True)
        database.put(entry)
    return entry


def remove_video(root: str | Path, *, source: str | Path) -> str | None:
    """Forget the video extracted from `source` (an upload that failed after its keyframes were taken): its row, its
    id and its frames, under the cache's lock. Returns its id, or None when the cache has none for that file."""
    root = Path(root)
    database = CacheDatabase(root / DATABASE)
    with cache_lock(root):
        video_id = database.id_of(source) or database.id_of(Path(source).resolve())
        if video_id is None:
            return None
        if not video_id or "/" in video_id or video_id.startswith("."):
            raise ValueError(f"not a cache id: {video_id!r}")
        database.delete(video_id)
        shutil.rmtree(root / FRAMES_DIR / video_id, ignore_errors=True)
    return video_id


# --- one video, in a worker process -----------------------------------------------------------------------------


def extract_video(task: dict[str, Any]) -> dict[str, Any]:
    """Pick, decode, scale and store one video's keyframes and its row; returns its entry (failed ones included),
    or {"disk_full": message} when the frames or the row could not be written for want of space."""
    root = Path(task["cache"])
    entry, jpegs = _extract(task)
    try:
        return store_entry(root, CacheDatabase(root / DATABASE), entry, jpegs)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return {"disk_full": error.strerror or str(error)}
        raise


def extract_keyframes(task: dict[str, Any]) -> dict[str, Any]:
    """`run_isolated` target on a machine without the cache (a Ray worker): pick, decode and scale one video's
    keyframes and write nothing. Returns {"entry": its entry, frames named as `store_entry` will name them,
    "jpegs": the keyframes' JPEG bytes, base64}; the cache's own machine stores them (`keyframes_of`, `store_entry`).
    Needs no "cache" in `task`."""
    entry, jpegs = _extract(task)
    if entry["status"] == "ok":
        entry = {**entry, "frames": frame_names(entry["id"], len(jpegs))}
    return {"entry": entry, "jpegs": [base64.b64encode(jpeg).decode("ascii") for jpeg in jpegs]}


def keyframes_of(outcome: Outcome) -> tuple[dict[str, Any], list[bytes]]:
    """The entry and JPEGs an `extract_keyframes` outcome gives: the child's, or (a child that died, timed out or
    raised) its failure, as `record_outcome` records it."""
    if outcome.result is None:
        return _failed_entry(outcome.task, outcome.failure, outcome.detail), []
    return outcome.result["entry"], [base64.b64decode(jpeg, validate=True) for jpeg in outcome.result["jpegs"]]


def _extract(task: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    source = Path(task["source"])
    try:
        stat = check_local_file(source).stat()
    except VideoError as error:
        return _failed_entry(task, error.code, error.message), []
    base = {"id": task["id"], "source": str(source), "size": stat.st_size, "mtime": stat.st_mtime}
    try:
        fields, jpegs = _keyframes(task)
    except VideoError as error:
        return {**base, "status": "failed", "error": {"code": error.code, "message": error.message}}, []
    return {**base, "status": "ok", "error": None, **fields}, jpegs


def _failed_entry(task: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    source = Path(task["source"])
    stat = source.stat() if source.exists() else None
    return {"id": task["id"], "source": str(source), "size": stat.st_size if stat else 0,
            "mtime": stat.st_mtime if stat else 0.0, "status": "failed", "error": {"code": code, "message": message}}


def _keyframes(task: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """The entry's fields (frames named in `_write_frames`) and the keyframes as JPEG files' bytes."""
    config, limits = from_dict(FrameConfig, task["settings"]), DecodeLimits(**task["limits"])
    source, threads = Path(task["source"]), task["threads"]
    info = probe(source, limits=limits)
    chosen, moments = select_keyframes(source, info, config, limits=limits, threads=threads)
    frames = decode_frames(source, info=info, indices=chosen.tolist(), size=config.size, limits=limits,
                           threads=threads)
    fields = {"duration": round(info.duration, 6), "fps": round(info.fps, 6), "width": info.width,
              "height": info.height, "timestamps": [round(float(info.timestamps[i]), 6) for i in chosen],
              "moments": [asdict(moment) for moment in moments]}
    return fields, [jpeg_bytes(frame, config.jpeg_quality) for frame in frames]


def jpeg_bytes(frame: np.ndarray, quality: int) -> bytes:
    """A keyframe as the cache stores it: JPEG at `quality` (Pillow)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def select_keyframes(source: Path, info: VideoInfo, config: FrameConfig, *, limits: DecodeLimits,
                     threads: int = 1) -> tuple[np.ndarray, list[Moment]]:
    """The frame indices to keep, in time order, and the moments (with indices into those kept frames)."""
    scores = None
    if config.sampler == "maxdiff":
        scores = samplers.maxdiff_scores(iter_frames(source, limits=limits, threads=threads))
    windows = _windows(source, info, config, limits=limits, threads=threads)
    if windows is None:
        return _sample(np.arange(len(info.pts)), info, scores, config), []
    picks = [(window, _sample(segments.frames_in(info.timestamps, window), info, scores, config)) for window in windows]
    picks = [(window, chosen) for window, chosen in picks if len(chosen)]
    kept = np.unique(np.concatenate([chosen for _, chosen in picks]))
    moments = [Moment(round(float(start), 6), round(float(end), 6), np.searchsorted(kept, chosen).tolist())
               for (start, end), chosen in picks]
    return kept, moments


def _windows(source: Path, info: VideoInfo, config: FrameConfig, *, limits: DecodeLimits,
             threads: int) -> list[tuple[float, float]] | None:
    if config.segment_seconds:
        return segments.fixed_windows(duration=info.duration, seconds=config.segment_seconds)
    if not config.scenes:
        return None
    width, height = segments.THUMBNAIL_SIZE
    thumbnails = iter_frames(source, limits=limits, width=width, height=height, threads=threads)
    return segments.shot_windows(timestamps=info.timestamps, differences=segments.shot_differences(thumbnails),
                                 duration=info.duration, threshold=config.scene_threshold)


def _sample(candidates: np.ndarray, info: VideoInfo, scores: np.ndarray | None, config: FrameConfig) -> np.ndarray:
    """Apply the configured sampler to a subset of the frames; returns frame indices of the whole video.

    keyframes_only: the uniform sampler chooses among the intra frames of the subset (a moment that holds none keeps
    all of its frames as candidates, so it still gets keyframes at their exact times)."""
    if config.keyframes_only and info.keyframes[candidates].any():
        candidates = candidates[info.keyframes[candidates]]
    if scores is None:
        return candidates[samplers.uniform(info.timestamps[candidates], num_frames=config.frames, fps=config.fps)]
    if len(scores) != len(info.pts):
        raise VideoError("decode_error", f"decoded {len(scores)} frames of the {len(info.pts)} the file lists")
    return candidates[samplers.maxdiff(scores[candidates], num_frames=config.frames)]


def _write_frames(root: Path, video_id: str, jpegs: Sequence[bytes]) -> list[str]:
    """JPEGs into a hidden folder first, then renamed into place: a video's frames appear all at once or not at all.
    Called under the cache's lock (a folder left by an interrupted writer is removed by the next one)."""
    final = root / FRAMES_DIR / video_id
    partial = root / FRAMES_DIR / f".{video_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    names = frame_names(video_id, len(jpegs))
    try:
        partial.mkdir()
        for name, data in zip(names, jpegs):
            (partial / PurePosixPath(name).name).write_bytes(data)
        if final.exists():
            old = root / FRAMES_DIR / f".{video_id}.old"
            final.rename(old)
            shutil.rmtree(old)
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return names


def frame_names(video_id: str, count: int) -> list[str]:
    """The names (relative to the cache) `store_entry` gives a video's `count` keyframes."""
    return [f"{FRAMES_DIR}/{video_id}/{i:04d}.jpg" for i in range(count)]


def extract_into(task: dict[str, str]) -> dict[str, Any]:
    """`run_isolated` target: one video (`task["video"]`) into the existing cache `task["cache"]`, with its settings.

    Returns {"video_id": id, "entry": its entry} or {"error": {"code", "message"}}. An upload is a video of its own
    even when its bytes are another's (no duplicate search): the uploader's captions and title belong to it. A web server runs this in a child
    process; it adds the entry to the cache it has open (`FrameCache.with_entry`).
    """
    settings = open_cache(task["cache"]).settings
    report = build_cache([task["video"]], task["cache"], settings, workers=1, duplicates=False)
    if report.failed:
        return {"error": report.failed[0].error}
    video_id = (report.extracted or report.skipped)[0]
    return {"video_id": video_id, "entry": asdict(open_cache(task["cache"]).entry(video_id))}
