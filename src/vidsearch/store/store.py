"""The feature store: named arrays plus per-row metadata, versioned, published by an atomic rename of its manifest.

The thesis' "tensor database" (§3.4) without pickle. One directory per store:

    manifest.json                               the published version; readers start from it and nothing else
    .lock                                       writers hold an exclusive flock on it: one writer at a time
    seg000003.video_feature.3fa9c1d2e4b5.npy    array files: immutable, named by segment and content hash
    seg000003.row_video.1c2d3e4f5a6b.npy        row metadata, column by column: the row's video (index into the
    seg000003.row_start….npy, row_end, row_thumbnail    segment's video table), start/end seconds (NaN: whole video),
                                                thumbnail (utf-8 bytes, empty: none)
    seg000003.meta.9a8b7c6d5e4f.json            the segment's video table: id, category, captions of each video
    seg000003.index.video_feature.5e6f….faiss   the segment's vector index, for segments of ≥ INDEX_MIN_ROWS rows
    .<name>.<random>.tmp                        an unfinished write: ignored by readers, removed by the next writer

A store is a list of segments (rows appended together) and a list of tombstoned row ids (removed rows). `add` writes
a new segment, `remove` adds tombstones, `compact` merges segments; each writes only new files and then publishes a
new manifest: temp file, fsync, rename, fsync the directory. Files that no published manifest refers to any more are
deleted after the publish. A reader that opens a version keeps its files open (memory maps), so a writer deleting
them later does not disturb it. Segments never change once written: `Store.open` of a new version reuses the
segments (memory maps, metadata, vector indexes) that a version still open in the process already holds.

Indexes belong to the store: the writer builds a segment's FAISS index (IVF with 4-bit product-quantised codes,
searched by FAISS's fast scan, candidates re-ranked exactly from the float32 vectors) when the segment has at least
`INDEX_MIN_ROWS` rows, and publishes it with the segment; smaller segments are searched exactly. A reader only loads
indexes, it never builds one. Compaction (in `add`/`remove` when it pays, or `compact`) merges runs of segments of
similar size (`MERGE_FANOUT` of them) and rewrites segments with many removed rows, so a row is rewritten about
log_8(rows) times over its life, and a new upload is one small segment, searchable as soon as it is published.

Integrity: every file's sha256 is in the manifest, with the file's (inode, size, mtime_ns, ctime_ns) as the writer
saw it right after writing and hashing it. `Store.open(verify="auto")` re-hashes every file whose stat differs from
that record (any write, copy or restore changes it) and checks the size of every file, so a store opens in
milliseconds when untouched and a modified file is caught at open; `verify="full"` hashes every file (catches silent
media corruption too, at about 1.4 GB/s on one core). Files below `COPY_MAX_BYTES` are read into memory, larger ones
are memory-mapped; `Store.check_files()` stats the mapped ones against what was verified at open, so a file truncated
or rewritten underneath a reader is reported (StoreCorrupted) instead of crashing it (SIGBUS) or answering from
changed bytes.

Format version 1 stores (row metadata as one JSON file a segment, no indexes) are still read; their segments are
searched exactly until a compaction rewrites them.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import math
import mmap
import os
import re
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from vidsearch import fsutil
from vidsearch.store import index as vector_index

logger = logging.getLogger(__name__)

FORMAT = "vidsearch-feature-store"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
LOCK = ".lock"
INDEX_MIN_ROWS = 50_000  # segments this large get a persisted vector index; smaller ones are searched exactly
INDEXED_ARRAYS = ("video_feature",)  # the arrays search reads; indexed when 2-D float32
MERGE_FANOUT = 8  # this many consecutive segments of one size class are merged into one
COMPACT_TOMBSTONE_FRACTION = 0.25  # a segment with more removed rows than this is rewritten
COMPACT_MAX_SEGMENTS = 16  # beyond this many segments, the smaller ones are merged whatever their sizes
COPY_MAX_BYTES = 16 << 20  # files below this are read into memory, larger ones memory-mapped
_OPEN_RETRIES = 5
_ARRAY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COLUMNS = {"video": np.int32, "start": np.float64, "end": np.float64}

Verify = Literal["auto", "full"]


class StoreError(Exception):
    """A feature store cannot be read or written as asked."""


class StoreNotFound(StoreError):
    """The directory holds no published version."""


class StoreCorrupted(StoreError):
    """A file of the published version is missing, truncated or does not match its sha256."""


class FingerprintMismatch(StoreError, ValueError):
    """Vectors from one model were given to a store built with another."""


@dataclass(frozen=True)
class RowMeta:
    """What one row (a video, or one moment of a video) is. `start`/`end` in seconds; None for a whole video."""

    video_id: str
    start: float | None = None
    end: float | None = None
    category: str | None = None
    thumbnail: str | None = None
    captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class VideoInfo:
    category: str | None
    captions: tuple[str, ...]


@dataclass(frozen=True)
class _RowColumns:
    """Row metadata of one segment: NumPy columns plus its table of videos (ids in order of first row)."""

    video: np.ndarray  # int32 [rows]: index into video_ids
    start: np.ndarray  # float64 [rows], NaN for None
    end: np.ndarray  # float64 [rows], NaN for None
    thumbnail: np.ndarray  # bytes [rows] (numpy "S"), b"" for None
    video_ids: list[str]
    video_info: list[VideoInfo]

    def __len__(self) -> int:
        return len(self.video)

    @cached_property
    def videos(self) -> dict[str, VideoInfo]:
        """Video id → info, in the table's order."""
        return dict(zip(self.video_ids, self.video_info))

    @cached_property
    def positions(self) -> dict[str, int]:
        """Video id → its index in the table."""
        return {video_id: i for i, video_id in enumerate(self.video_ids)}

    @classmethod
    def of(cls, rows: Sequence[RowMeta]) -> _RowColumns:
        positions: dict[str, int] = {}
        infos: list[VideoInfo] = []
        for row in rows:
            if row.video_id not in positions:
                positions[row.video_id] = len(infos)
                infos.append(VideoInfo(row.category, tuple(row.captions)))
        return cls(np.fromiter((positions[r.video_id] for r in rows), np.int32, len(rows)),
                   _floats([r.start for r in rows]), _floats([r.end for r in rows]),
                   np.array([(r.thumbnail or "").encode("utf-8") for r in rows], dtype=np.bytes_).reshape(len(rows)),
                   list(positions), infos)

    def live(self, keep: np.ndarray | None) -> _RowColumns:
        """The rows where `keep` is true (None: all), with the video table cut to the videos they show."""
        if keep is None:
            return self
        used, video = np.unique(self.video[keep], return_inverse=True)
        return _RowColumns(video.astype(np.int32), self.start[keep], self.end[keep], self.thumbnail[keep],
                           [self.video_ids[i] for i in used], [self.video_info[i] for i in used])


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64).reshape(len(values))


def _concat_columns(parts: list[_RowColumns]) -> _RowColumns:
    """One table of the rows of `parts` in order; a video in several parts keeps its first part's info."""
    positions: dict[str, int] = {}
    infos: list[VideoInfo] = []
    videos = []
    for part in parts:
        for video_id, info in zip(part.video_ids, part.video_info):
            if video_id not in positions:
                positions[video_id] = len(infos)
                infos.append(info)
        remap = np.array([positions[v] for v in part.video_ids], dtype=np.int32)
        videos.append(remap[part.video] if len(part) else np.empty(0, np.int32))
    thumbnails = [p.thumbnail for p in parts]
    width = max([t.dtype.itemsize for t in thumbnails] + [1])
    return _RowColumns(np.concatenate(videos) if videos else np.empty(0, np.int32),
                       np.concatenate([p.start for p in parts]) if parts else np.empty(0),
                       np.concatenate([p.end for p in parts]) if parts else np.empty(0),
                       np.concatenate([t.astype(f"S{width}") for t in thumbnails]) if parts else np.empty(0, "S1"),
                       list(positions), infos)


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else value


def _text(value: bytes) -> str | None:
    return value.decode("utf-8") if value else None


# ---------------------------------------------------------------------------------------------------------- reading


class _SegmentData:
    """A published segment's files, opened: arrays, row metadata, vector indexes. Shared by every version (and every
    Store object of the process) that includes the segment; never changes."""

    def __init__(self, directory: Path, entry: dict[str, Any]):
        self.id, self.first_row, self.rows = entry["id"], entry["first_row"], entry["rows"]
        # Every file with its stat when opened (after the manifest check), and whether it stays memory-mapped.
        self.files: list[tuple[Path, list[int], bool]] = [
            (directory / e["file"], _stamp((directory / e["file"]).stat()), False) for e in _segment_files(entry)]
        self.arrays = {name: self._array(directory, file) for name, file in entry["arrays"].items()}
        for name in entry.get("indexes", {}):
            _read_randomly(self.arrays[name])
        self.columns = self._columns(directory, entry)
        self._index_entries: dict[str, dict[str, Any]] = entry.get("indexes", {})
        self._indexes: dict[str, Any] = {}
        self._inverse_norms: dict[str, np.ndarray | None] = {}
        self._lock = threading.Lock()

    def _array(self, directory: Path, entry: dict[str, Any]) -> np.ndarray:
        path = directory / entry["file"]
        if entry["size"] < COPY_MAX_BYTES:
            array = np.load(path, allow_pickle=False)
        else:  # copy-on-write: callers may modify what they get (torch.from_numpy needs a writable array)
            array = np.load(path, mmap_mode="c", allow_pickle=False)
            self.files = [(p, stamp, mapped or p == path) for p, stamp, mapped in self.files]
        if str(array.dtype) != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise StoreCorrupted(f"{path}: {array.dtype}{list(array.shape)}, "
                                 f"the manifest says {entry['dtype']}{entry['shape']}")
        return array

    def _columns(self, directory: Path, entry: dict[str, Any]) -> _RowColumns:
        meta = json.loads((directory / entry["meta"]["file"]).read_bytes())
        if "columns" not in entry:  # format version 1: the rows' metadata in the JSON file
            return _RowColumns.of([RowMeta(v, s, e, meta["videos"][v]["category"], t,
                                           tuple(meta["videos"][v]["captions"]))
                                   for v, s, e, t in zip(meta["video_id"], meta["start"], meta["end"],
                                                         meta["thumbnail"])])
        columns = {name: self._array(directory, file) for name, file in entry["columns"].items()}
        if any(len(column) != self.rows for column in columns.values()):
            raise StoreCorrupted(f"{directory}: segment {self.id}'s row columns do not have {self.rows} rows")
        videos = meta["videos"]
        return _RowColumns(columns["video"], columns["start"], columns["end"], columns["thumbnail"],
                           [v["id"] for v in videos], [VideoInfo(v["category"], tuple(v["captions"])) for v in videos])

    def index(self, directory: Path, array: str) -> Any | None:
        """The segment's persisted vector index over `array` (loaded once), or None when it has none."""
        entry = self._index_entries.get(array)
        if entry is None:
            return None
        with self._lock:
            if array not in self._indexes:
                self._indexes[array] = vector_index.read_persisted(directory / entry["file"])
            return self._indexes[array]

    def inverse_norms(self, array: str) -> np.ndarray | None:
        """1/‖row‖ of `array`'s rows, or None when they are all unit vectors (computed once)."""
        with self._lock:
            if array not in self._inverse_norms:
                norms = np.linalg.norm(self.arrays[array], axis=1)
                unit = bool(np.allclose(norms, 1.0, rtol=0.0, atol=vector_index.UNIT_TOLERANCE))
                self._inverse_norms[array] = None if unit else (1.0 / np.maximum(norms, 1e-12)).astype(np.float32)
            return self._inverse_norms[array]


@dataclass(frozen=True)
class Segment:
    """One segment as a store version sees it: its shared data plus which of its rows are live.

    `offset`: the position of its first live row among the store's live rows (what `Store.array` rows are numbered
    by); `dead`: sorted local indices of its removed rows."""

    data: _SegmentData
    directory: Path
    offset: int
    dead: np.ndarray

    @property
    def rows(self) -> int:
        return self.data.rows

    @property
    def live_rows(self) -> int:
        return self.data.rows - len(self.dead)

    @property
    def live(self) -> np.ndarray | None:
        """Boolean mask of the live rows; None when every row is live."""
        if not len(self.dead):
            return None
        mask = np.ones(self.data.rows, dtype=bool)
        mask[self.dead] = False
        return mask

    def array(self, name: str) -> np.ndarray:
        """All rows of array `name`, dead ones included (index them with `live`)."""
        return self.data.arrays[name]

    def index(self, array: str) -> Any | None:
        return self.data.index(self.directory, array)

    def positions(self, local: np.ndarray) -> np.ndarray:
        """Store positions of live local rows."""
        local = np.asarray(local, dtype=np.int64)
        return self.offset + local - np.searchsorted(self.dead, local)

    def locals_of(self, positions: np.ndarray) -> np.ndarray:
        """Local rows of store positions that fall in this segment."""
        live_rank = np.asarray(positions, dtype=np.int64) - self.offset
        if not len(self.dead):
            return live_rank
        # The r-th live row is r plus the number of dead rows before it: dead[j] - j (live rows before the j-th dead
        # one) is non-decreasing, so that number is a binary search.
        return live_rank + np.searchsorted(self.dead - np.arange(len(self.dead)), live_rank, side="right")


class RowColumn(Sequence):
    """One metadata column of a store's live rows, read lazily; compares equal to a list of its values."""

    def __init__(self, table: RowTable, name: str):
        self._table, self._name = table, name

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, slice):
            return self._table.take(np.arange(len(self))[item])[self._name]
        if not -len(self) <= item < len(self):
            raise IndexError(f"row {item} of {len(self)}")
        return self._table.take(np.array([item % len(self)]))[self._name][0]

    def __iter__(self) -> Iterator[Any]:
        for segment in self._table.segments:
            yield from self._table.segment_values(segment, self._name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, tuple, RowColumn)) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RowColumn({self._name}, {len(self)} rows)"

    def tolist(self) -> list[Any]:
        return list(self)


class RowTable:
    """Metadata of the live rows, column by column, aligned with `Store.array(name)`; nothing read until asked."""

    def __init__(self, segments: list[Segment]):
        self.segments = segments
        self._starts = np.array([s.offset for s in segments], dtype=np.int64)
        self._length = sum(s.live_rows for s in segments)
        self.video_id, self.start, self.end, self.thumbnail = (RowColumn(self, name) for name in
                                                                ("video_id", "start", "end", "thumbnail"))

    def __len__(self) -> int:
        return self._length

    def take(self, positions: np.ndarray) -> dict[str, list[Any]]:
        """Columns of the rows at store `positions` (any order): video_id, start, end, thumbnail lists."""
        positions = np.asarray(positions, dtype=np.int64)
        out: dict[str, list[Any]] = {name: [None] * len(positions) for name in ("video_id", "start", "end",
                                                                                 "thumbnail")}
        owners = np.searchsorted(self._starts, positions, side="right") - 1
        for number in np.unique(owners):
            where = np.flatnonzero(owners == number)
            segment = self.segments[number]
            local = segment.locals_of(positions[where])
            for name, values in self._values(segment, local).items():
                for slot, value in zip(where.tolist(), values):
                    out[name][slot] = value
        return out

    def segment_values(self, segment: Segment, name: str) -> list[Any]:
        live = segment.live
        local = np.arange(segment.rows) if live is None else np.flatnonzero(live)
        return self._values(segment, local, (name,))[name]

    @staticmethod
    def _values(segment: Segment, local: np.ndarray,
                names: Sequence[str] = ("video_id", "start", "end", "thumbnail")) -> dict[str, list[Any]]:
        columns = segment.data.columns
        values: dict[str, list[Any]] = {}
        for name in names:
            if name == "video_id":
                ids = columns.video_ids
                values[name] = [ids[i] for i in columns.video[local].tolist()]
            elif name == "thumbnail":
                values[name] = [_text(t) for t in columns.thumbnail[local].tolist()]
            else:
                values[name] = [_optional(v) for v in getattr(columns, name)[local].tolist()]
        return values


class Store:
    """One published version of a store: memory-mapped arrays and row metadata. Immutable; use `Store.open`."""

    def __init__(self, path: Path, manifest: dict[str, Any], segments: list[Segment]):
        self.path = path
        self.manifest = manifest
        self.segments = segments
        self._arrays: dict[str, np.ndarray] = {}
        self._rows: RowTable | None = None
        self._videos: dict[str, VideoInfo] | None = None

    @classmethod
    def open(cls, path: str | Path, *, verify: Verify = "auto") -> Store:
        """Open the latest published version of the store at `path` (see the module docstring for `verify`)."""
        path = Path(path)
        for _ in range(_OPEN_RETRIES):
            manifest = read_manifest(path)
            try:
                return cls(path, manifest, _open_segments(path, manifest, verify))
            except FileNotFoundError as error:
                if read_manifest(path)["version"] == manifest["version"]:
                    raise StoreCorrupted(f"{path}: version {manifest['version']} lacks {error.filename}") from None
                logger.debug("%s: a writer published while opening; reading the new version", path)
        raise StoreError(f"{path}: versions change faster than they can be opened")

    @property
    def version(self) -> int:
        return self.manifest["version"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def schema(self) -> dict[str, dict[str, Any]]:
        """Array name → {"dtype", "shape" (per row)}."""
        return self.manifest["schema"]

    @property
    def names(self) -> list[str]:
        return list(self.schema)

    def __len__(self) -> int:
        return sum(segment.live_rows for segment in self.segments)

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise FingerprintMismatch unless `fingerprint` is the model fingerprint this store was built with."""
        if fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"store {self.path} holds features of model {self.fingerprint!r}; the query was encoded by model "
                f"{fingerprint!r}. Rebuild the store with this model (vidsearch index) or search with its model."
            )

    def changed_files(self, *, mapped_only: bool = False) -> list[Path]:
        """This version's files whose stat differs from when they were opened (truncated, rewritten, replaced); a
        file deleted by a writer's garbage collection is not changed (what was read or mapped keeps its bytes)."""
        changed = []
        for segment in self.segments:
            for path, stamp, mapped in segment.data.files:
                if mapped or not mapped_only:
                    try:
                        if _stamp(path.stat()) != stamp:
                            changed.append(path)
                    except FileNotFoundError:
                        pass
        return changed

    def check_files(self) -> None:
        """Raise StoreCorrupted if a memory-mapped file of this version changed since it was opened: reading a
        truncated mapping kills the process (SIGBUS), a rewritten one gives other data. Files read into memory
        keep serving what was verified."""
        changed = self.changed_files(mapped_only=True)
        if changed:
            raise StoreCorrupted(f"{', '.join(map(str, changed))} changed on disk after version {self.version} was "
                                 f"opened (truncated or rewritten in place); not reading it")

    def array(self, name: str) -> np.ndarray:
        """The live rows of array `name`: a memory map when the store is one large segment without tombstones."""
        if name not in self._arrays:
            if name not in self.schema:
                raise KeyError(f"store {self.path} has no array {name!r}; it has {self.names}")
            self._arrays[name] = _live_concat([(s.array(name), s.live) for s in self.segments], self.schema[name])
        return self._arrays[name]

    def load(self) -> dict[str, np.ndarray]:
        """All arrays by name (the thesis' `load`)."""
        return {name: self.array(name) for name in self.names}

    @property
    def rows(self) -> RowTable:
        if self._rows is None:
            self._rows = RowTable(self.segments)
        return self._rows

    @property
    def info(self) -> dict[str, Any]:
        """What the writer recorded about the store's origin (JSON; e.g. the model source and the frame cache)."""
        return self.manifest.get("info", {})

    def videos(self) -> dict[str, VideoInfo]:
        """Category and captions of each video that has live rows, in row order."""
        if self._videos is None:
            self._videos = _live_videos(self.segments)
        return self._videos

    def rows_of(self, video_id: str) -> np.ndarray:
        """Store positions of a video's live rows, in order."""
        found = []
        for segment in self.segments:
            columns = segment.data.columns
            if video_id in columns.positions:
                local = np.flatnonzero(columns.video == columns.positions[video_id])
                found.append(segment.positions(local[~np.isin(local, segment.dead)]))
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def row_ids(self) -> np.ndarray:
        """Stable ids of the live rows (never reused; what tombstones refer to)."""
        ids = [np.delete(np.arange(s.data.first_row, s.data.first_row + s.rows), s.dead) for s in self.segments]
        return np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)

    def row(self, index: int) -> RowMeta:
        values = self.rows.take(np.array([index]))
        video = self.videos()[values["video_id"][0]]
        return RowMeta(values["video_id"][0], values["start"][0], values["end"][0], video.category,
                       values["thumbnail"][0], video.captions)


def read_manifest(path: Path) -> dict[str, Any]:
    """The published manifest of the store at `path`, checked for format and version."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise StoreNotFound(f"{path} is not a feature store: no published {MANIFEST}") from None
    except ValueError as error:
        raise StoreCorrupted(f"{path}/{MANIFEST} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("format_version") not in READABLE_VERSIONS:
        found = manifest if isinstance(manifest, dict) else {}
        raise StoreError(f"{path}: format {found.get('format')!r} v{found.get('format_version')!r}, "
                         f"this vidsearch reads {FORMAT!r} v{', v'.join(map(str, READABLE_VERSIONS))}")
    _check_manifest_schema(path, manifest)
    return manifest


_FILE_ENTRY = {"type": "object", "required": ["file", "sha256", "size", "stamp"], "properties": {
    # a file name inside the store directory: never a path (a manifest edited to name ../x reads nothing outside)
    "file": {"type": "string", "pattern": r"^seg[0-9]{6}\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"},
    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "size": {"type": "integer", "minimum": 0},
    "stamp": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
    "dtype": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}
_ARRAY_ENTRY = {**_FILE_ENTRY, "required": [*_FILE_ENTRY["required"], "dtype", "shape"]}
_COUNT = {"type": "integer", "minimum": 0}
#: What a published manifest must look like (format versions 1 and 2); checked on every read, so a manifest edited by
#: hand into valid JSON of the wrong shape is refused with one line instead of failing later with a KeyError.
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "version", "fingerprint", "info", "schema", "next_row", "next_segment",
                 "segments", "tombstones"],
    "properties": {
        "version": _COUNT, "next_row": _COUNT, "next_segment": _COUNT, "fingerprint": {"type": "string"},
        "info": {"type": "object"},
        "schema": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["dtype", "shape"],
            "properties": {"dtype": {"type": "string"},
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}},
        "tombstones": {"type": "array", "items": _COUNT},
        "segments": {"type": "array", "items": {
            "type": "object", "required": ["id", "first_row", "rows", "arrays", "meta"],
            "properties": {"id": _COUNT, "first_row": _COUNT, "rows": _COUNT,
                           "arrays": {"type": "object", "additionalProperties": _ARRAY_ENTRY},
                           "columns": {"type": "object", "additionalProperties": _ARRAY_ENTRY},
                           "indexes": {"type": "object", "additionalProperties": _FILE_ENTRY},
                           "meta": _FILE_ENTRY}}},
    },
}


def _check_manifest_schema(path: Path, manifest: dict[str, Any]) -> None:
    import jsonschema

    error = jsonschema.exceptions.best_match(_manifest_validator().iter_errors(manifest))
    if error is not None:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        raise StoreCorrupted(f"{path}/{MANIFEST}: manifest{where}: {error.message}; the manifest was edited or "
                             f"damaged: restore it or rebuild the store (vidsearch index --rebuild)")
    for segment in manifest["segments"]:
        for name, entry in segment["arrays"].items():
            if entry["shape"][:1] != [segment["rows"]]:
                raise StoreCorrupted(f"{path}/{MANIFEST}: segment {segment['id']} has {segment['rows']} rows but "
                                     f"its array {name} has shape {entry['shape']}; restore the manifest or rebuild")


@functools.lru_cache(maxsize=1)
def _manifest_validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


_opened: weakref.WeakValueDictionary[tuple, _SegmentData] = weakref.WeakValueDictionary()
_opened_lock = threading.Lock()


def _open_segments(path: Path, manifest: dict[str, Any], verify: Verify) -> list[Segment]:
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda entry: _check_file(path, entry, verify), _file_entries(manifest)))
    tombstones = np.unique(np.asarray(manifest["tombstones"], dtype=np.int64))
    segments, offset = [], 0
    for entry in manifest["segments"]:
        first = entry["first_row"]
        dead = tombstones[np.searchsorted(tombstones, first):np.searchsorted(tombstones, first + entry["rows"])]
        segment = Segment(_segment_data(path, entry), path, offset, dead - first)
        segments.append(segment)
        offset += segment.live_rows
    return segments


def _segment_data(directory: Path, entry: dict[str, Any]) -> _SegmentData:
    """The opened segment, reused from another open version when one holds it (segments never change)."""
    key = (str(directory.resolve()), entry["id"], tuple(e["sha256"] for e in _segment_files(entry)))
    with _opened_lock:
        data = _opened.get(key)
    if data is None:
        data = _SegmentData(directory, entry)
        with _opened_lock:
            data = _opened.setdefault(key, data)
    return data


def _segment_files(segment: dict[str, Any]) -> list[dict[str, Any]]:
    return [*segment["arrays"].values(), segment["meta"], *segment.get("columns", {}).values(),
            *segment.get("indexes", {}).values()]


def _file_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for segment in manifest["segments"] for entry in _segment_files(segment)]


def _check_file(directory: Path, entry: dict[str, Any], verify: Verify) -> None:
    """Raise StoreCorrupted if the file is truncated, or (when its stat changed, or always with "full") its hash."""
    path = directory / entry["file"]
    stat = path.stat()
    if stat.st_size != entry["size"]:
        raise StoreCorrupted(f"{path}: {stat.st_size} bytes, the manifest says {entry['size']}: the file is truncated "
                             f"or overwritten; rebuild the store (vidsearch index)")
    if verify == "auto" and _stamp(stat) == entry["stamp"]:
        return
    actual = fsutil.sha256_file(path)
    if actual != entry["sha256"]:
        raise StoreCorrupted(f"{path}: sha256 {actual} does not match the manifest's {entry['sha256']}: the file is "
                             f"corrupted; rebuild the store (vidsearch index)")


def _read_randomly(array: np.ndarray) -> None:
    """Tell the kernel a mapped array is read at random rows (an index's candidates re-ranked): no read-ahead, so
    each row read costs its own pages, not 128 KB around it (which filled memory with the whole file at 1 M rows)."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _live_concat(parts: list[tuple[np.ndarray, np.ndarray | None]], schema: dict[str, Any]) -> np.ndarray:
    if len(parts) == 1 and parts[0][1] is None:
        return parts[0][0]
    chunks = [array if live is None else array[live] for array, live in parts]
    if not chunks:
        return np.empty((0, *schema["shape"]), dtype=schema["dtype"])
    return np.concatenate(chunks)


def _live_videos(segments: list[Segment]) -> dict[str, VideoInfo]:
    videos: dict[str, VideoInfo] = {}
    for segment in segments:
        columns = segment.data.columns
        live = segment.live
        if live is None and not videos:  # the usual first segment: all of its videos, copied at C speed
            videos.update(columns.videos)
            continue
        shown = range(len(columns.video_ids)) if live is None else np.unique(columns.video[live]).tolist()
        for position in shown:
            videos.setdefault(columns.video_ids[position], columns.video_info[position])
    return videos


# ---------------------------------------------------------------------------------------------------------- writing


def write(path: str | Path, arrays: Mapping[str, np.ndarray], *, fingerprint: str,
          rows: Sequence[RowMeta] | None = None, info: dict[str, Any] | None = None,
          index_min_rows: int | None = None) -> int:
    """Replace the store's content with `arrays` (one row per first-axis entry); return the published version.

    `index_min_rows`: build the segment's vector index from this many rows (default INDEX_MIN_ROWS)."""
    with _writer(Path(path)) as (directory, current):
        manifest = _empty_manifest(fingerprint, _schema_of(arrays), info)
        if current:  # keep counters monotonic: new files never take the name of one a published version refers to
            manifest.update({key: current[key] for key in ("version", "next_row", "next_segment")})
        segment = _new_segment(directory, manifest, arrays, rows, index_min_rows)
        return _publish(directory, _appended(manifest, segment))["version"]


def add(path: str | Path, arrays: Mapping[str, np.ndarray], *, fingerprint: str,
        rows: Sequence[RowMeta] | None = None, info: dict[str, Any] | None = None, auto_compact: bool = True,
        index_min_rows: int | None = None) -> int:
    """Append rows (a new segment) without rewriting existing ones; create the store if absent; `info` replaces.

    The new segment is published first (searchable at once); then, when segments have piled up, a merge of some of
    them is published as a further version (readers go on meanwhile). Returns the last version published."""
    with _writer(Path(path)) as (directory, current):
        manifest = current or _empty_manifest(fingerprint, _schema_of(arrays), info)
        _check_compatible(directory, manifest, arrays, fingerprint)
        if info is not None:
            manifest = {**manifest, "info": info}
        segment = _new_segment(directory, manifest, arrays, rows, index_min_rows)
        manifest = _publish(directory, _appended(manifest, segment))
        return _compact_published(directory, manifest, auto_compact, index_min_rows)


def remove(path: str | Path, *, video_ids: Iterable[str] = (),
           moments: Iterable[tuple[str, float | None]] = (), auto_compact: bool = True) -> int:
    """Remove whole videos and/or single moments (video id, start seconds) by tombstoning their rows."""
    with _writer(Path(path)) as (directory, current):
        if current is None:
            raise StoreNotFound(f"{directory} is not a feature store: nothing to remove")
        doomed = _row_ids_matching(directory, current, set(video_ids), set(moments))
        if not doomed:
            return current["version"]
        manifest = {**current, "tombstones": sorted(set(current["tombstones"]) | doomed)}
        plan = _merge_plan(manifest) if auto_compact else []
        return _publish(directory, _compacted(directory, manifest, plan, None) if plan else manifest)["version"]


def compact(path: str | Path, *, force: bool = False, index_min_rows: int | None = None) -> int:
    """Merge segments and drop removed rows where it pays (see the module docstring); `force`: everything into one
    segment. Readers go on with the versions they hold meanwhile."""
    with _writer(Path(path)) as (directory, current):
        if current is None:
            raise StoreNotFound(f"{directory} is not a feature store: nothing to compact")
        plan = [(0, len(current["segments"]))] if force else _merge_plan(current)
        if not plan:
            return current["version"]
        return _publish(directory, _compacted(directory, current, plan, index_min_rows))["version"]


def set_videos(path: str | Path, videos: Mapping[str, VideoInfo]) -> int:
    """Give videos the store holds this category and these captions (what search's category filter and text mode
    read), rewriting only the small metadata files of the segments that hold them; vectors and rows are untouched.
    Videos the store does not hold are ignored. Returns the published version (the same one when nothing changed)."""
    with _writer(Path(path)) as (directory, current):
        if current is None:
            raise StoreNotFound(f"{directory} is not a feature store: nothing to describe")
        segments = [_segment_with_videos(directory, segment, videos) for segment in current["segments"]]
        if segments == current["segments"]:
            return current["version"]
        return _publish(directory, {**current, "segments": segments})["version"]


def _segment_with_videos(directory: Path, segment: dict[str, Any], videos: Mapping[str, VideoInfo]) -> dict[str, Any]:
    """`segment` with a new metadata file if any of its videos is described otherwise in `videos` (not published)."""
    meta = json.loads((directory / segment["meta"]["file"]).read_bytes())
    changed = False
    # format 2 keeps a list of {"id", "category", "captions"}; format 1 a dict by id
    described = meta["videos"] if isinstance(meta["videos"], list) else [
        {"id": video_id, **info} for video_id, info in meta["videos"].items()]
    for video in described:
        wanted = videos.get(video["id"])
        if wanted is not None and (video["category"], tuple(video["captions"])) != (wanted.category, wanted.captions):
            video["category"], video["captions"] = wanted.category, list(wanted.captions)
            changed = True
    if not changed:
        return segment
    if not isinstance(meta["videos"], list):
        meta["videos"] = {video.pop("id"): video for video in described}
    stem = f"seg{segment['id']:06d}"
    return {**segment, "meta": _write_json(directory, f"{stem}.meta", meta)}


@contextmanager
def _writer(directory: Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """Hold the store's write lock; clean what an interrupted writer left; yield the current manifest (or None)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for leftover in fsutil.remove_temp_files(directory):
                logger.info("removed %s left by an interrupted writer", leftover)
            current = read_manifest(directory) if (directory / MANIFEST).exists() else None
            yield directory, current
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _empty_manifest(fingerprint: str, schema: dict[str, Any], info: dict[str, Any] | None) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "version": 0, "fingerprint": fingerprint,
            "info": info or {}, "schema": schema, "next_row": 0, "next_segment": 0, "segments": [], "tombstones": []}


def _schema_of(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if not arrays:
        raise ValueError("a store needs at least one array")
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must have the same number of rows: {lengths}")
    for name, array in arrays.items():
        if not _ARRAY_NAME.match(name) or array.dtype.hasobject or array.ndim == 0:
            raise ValueError(f"array {name!r}: names are lowercase identifiers, arrays are numeric with a row axis")
    return {name: {"dtype": str(a.dtype), "shape": list(a.shape[1:])} for name, a in arrays.items()}


def _check_compatible(directory: Path, manifest: dict[str, Any], arrays: Mapping[str, np.ndarray],
                      fingerprint: str) -> None:
    if fingerprint != manifest["fingerprint"]:
        raise FingerprintMismatch(f"store {directory} holds features of model {manifest['fingerprint']!r}, "
                                  f"cannot add features of model {fingerprint!r}; rebuild it with `write`")
    if _schema_of(arrays) != manifest["schema"]:
        raise ValueError(f"store {directory} holds {manifest['schema']}, cannot add {_schema_of(arrays)}")


def _new_segment(directory: Path, manifest: dict[str, Any], arrays: Mapping[str, np.ndarray],
                 rows: Sequence[RowMeta] | None, index_min_rows: int | None) -> dict[str, Any]:
    count = len(next(iter(arrays.values())))
    rows = list(rows) if rows is not None else _default_rows(arrays, manifest["next_row"], count)
    if len(rows) != count:
        raise ValueError(f"{len(rows)} rows of metadata for {count} rows of arrays")
    return _write_segment(directory, manifest, {name: [array] for name, array in arrays.items()},
                          _RowColumns.of(rows), index_min_rows)


def _appended(manifest: dict[str, Any], segment: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "format_version": FORMAT_VERSION, "segments": [*manifest["segments"], segment],
            "next_row": manifest["next_row"] + segment["rows"], "next_segment": manifest["next_segment"] + 1}


def _write_segment(directory: Path, manifest: dict[str, Any], arrays: Mapping[str, list[np.ndarray]],
                   columns: _RowColumns, index_min_rows: int | None) -> dict[str, Any]:
    """Write a new segment's files (arrays given in parts, written one after the other); return its entry."""
    count = len(columns)
    stem = f"seg{manifest['next_segment']:06d}"
    segment = {"id": manifest["next_segment"], "first_row": manifest["next_row"], "rows": count,
               "arrays": {name: _write_array(directory, f"{stem}.{name}", parts) for name, parts in arrays.items()},
               "columns": {name: _write_array(directory, f"{stem}.row_{name}", [getattr(columns, name)])
                           for name in (*_COLUMNS, "thumbnail")},
               "meta": _write_json(directory, f"{stem}.meta", {"videos": [
                   {"id": video_id, "category": info.category, "captions": list(info.captions)}
                   for video_id, info in zip(columns.video_ids, columns.video_info)]})}
    threshold = INDEX_MIN_ROWS if index_min_rows is None else index_min_rows
    indexes = {}
    for name in INDEXED_ARRAYS:
        entry = segment["arrays"].get(name)
        if entry and count >= max(threshold, 1) and entry["dtype"] == "float32" and len(entry["shape"]) == 2:
            vectors = np.load(directory / entry["file"], mmap_mode="r", allow_pickle=False)
            index = vector_index.build_persisted(vectors)
            indexes[name] = _write_file(directory, f"{stem}.index.{name}", "faiss", [index])
    if indexes:
        segment["indexes"] = indexes
    return segment


def _default_rows(arrays: Mapping[str, np.ndarray], first_row: int, count: int) -> list[RowMeta]:
    """Rows named by the thesis' `video_id` array when there is one, else by their row number."""
    ids = arrays["video_id"].reshape(count, -1)[:, 0] if "video_id" in arrays else range(first_row, first_row + count)
    return [RowMeta(str(video_id)) for video_id in ids]


def _write_array(directory: Path, stem: str, parts: list[np.ndarray]) -> dict[str, Any]:
    """One .npy file holding the rows of `parts` one after the other (never concatenated in memory)."""
    parts = [np.ascontiguousarray(part) for part in parts]
    shape = (sum(len(part) for part in parts), *parts[0].shape[1:])
    header = BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(parts[0].dtype),
                                                  "fortran_order": False, "shape": shape})
    entry = _write_file(directory, stem, "npy", [header.getvalue(), *(p.reshape(-1).view(np.uint8) for p in parts)])
    return {**entry, "dtype": str(parts[0].dtype), "shape": list(shape)}


def _write_json(directory: Path, stem: str, value: Any) -> dict[str, Any]:
    return _write_file(directory, stem, "json", [json.dumps(value, ensure_ascii=False).encode("utf-8")])


def _write_file(directory: Path, stem: str, suffix: str, parts: list) -> dict[str, Any]:
    """Write an immutable, content-named file; return its manifest entry."""
    tmp, sha256 = fsutil.write_temp_hashed(directory, stem, parts)
    final = directory / f"{stem}.{sha256[:12]}.{suffix}"
    try:
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stat = final.stat()
    return {"file": final.name, "sha256": sha256, "size": stat.st_size, "stamp": _stamp(stat)}


def _size_class(rows: int) -> int:
    return int(math.log(max(rows, 1), MERGE_FANOUT))


def _merge_plan(manifest: dict[str, Any]) -> list[tuple[int, int]]:
    """Runs [start, stop) of consecutive segments to rewrite as one each: MERGE_FANOUT or more of one size class,
    a segment with many removed rows on its own, and the smallest tail when there are too many segments."""
    segments = manifest["segments"]
    tombstones = np.unique(np.asarray(manifest["tombstones"], dtype=np.int64))
    dead = [int(np.searchsorted(tombstones, s["first_row"] + s["rows"]) - np.searchsorted(tombstones, s["first_row"]))
            for s in segments]
    classes = [_size_class(s["rows"] - d) for s, d in zip(segments, dead)]
    plan, start = [], 0
    while start < len(segments):
        stop = start + 1
        while stop < len(segments) and classes[stop] == classes[start]:
            stop += 1
        if stop - start >= MERGE_FANOUT:
            plan.append((start, stop))
        else:
            plan += [(i, i + 1) for i in range(start, stop)
                     if dead[i] > COMPACT_TOMBSTONE_FRACTION * segments[i]["rows"]]
        start = stop
    remaining = len(segments) - sum(stop - start - 1 for start, stop in plan)
    if remaining > COMPACT_MAX_SEGMENTS:
        tail = len(segments) - (remaining - COMPACT_MAX_SEGMENTS + 1)
        first = min([tail] + [a for a, b in plan if b > tail])  # a planned run that overlaps the tail joins it
        plan = [(a, b) for a, b in plan if b <= tail] + [(first, len(segments))]
    return plan


def _compact_published(directory: Path, manifest: dict[str, Any], auto_compact: bool,
                       index_min_rows: int | None) -> int:
    plan = _merge_plan(manifest) if auto_compact else []
    if not plan:
        return manifest["version"]
    return _publish(directory, _compacted(directory, manifest, plan, index_min_rows))["version"]


def _compacted(directory: Path, manifest: dict[str, Any], plan: list[tuple[int, int]],
               index_min_rows: int | None) -> dict[str, Any]:
    """`manifest` with each run of `plan` rewritten as one new segment of its live rows (not yet published)."""
    store = _snapshot(directory, manifest)
    logger.info("%s: compacting %s of %d segments", directory, plan, len(manifest["segments"]))
    segments, merged_ids, result = [], set(), {**manifest}
    position = 0
    for start, stop in sorted(plan):
        segments += manifest["segments"][position:start]
        run = store.segments[start:stop]
        merged_ids |= {(s.data.first_row, s.rows) for s in run}
        if sum(s.live_rows for s in run):
            parts = {name: [s.array(name) if s.live is None else s.array(name)[s.live] for s in run]
                     for name in manifest["schema"]}
            columns = _concat_columns([s.data.columns.live(s.live) for s in run])
            segment = _write_segment(directory, result, parts, columns, index_min_rows)
            segments.append(segment)
            result = {**result, "next_row": result["next_row"] + segment["rows"],
                      "next_segment": result["next_segment"] + 1}
        position = stop
    segments += manifest["segments"][position:]
    tombstones = [t for t in manifest["tombstones"]
                  if not any(first <= t < first + rows for first, rows in merged_ids)]
    return {**result, "format_version": FORMAT_VERSION, "segments": segments, "tombstones": tombstones}


def _row_ids_matching(directory: Path, manifest: dict[str, Any], video_ids: set[str],
                      moments: set[tuple[str, float | None]]) -> set[int]:
    doomed: set[int] = set()
    for segment in _snapshot(directory, manifest).segments:
        columns = segment.data.columns
        hit = np.isin(columns.video, [columns.positions[v] for v in video_ids if v in columns.positions])
        for video_id, start in moments:
            if video_id in columns.positions:
                same = np.isnan(columns.start) if start is None else columns.start == start
                hit |= (columns.video == columns.positions[video_id]) & same
        hit[segment.dead] = False
        doomed.update((segment.data.first_row + np.flatnonzero(hit)).tolist())
    return doomed


def _snapshot(directory: Path, manifest: dict[str, Any]) -> Store:
    return Store(directory, manifest, _open_segments(directory, manifest, "auto"))


def _publish(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Make `manifest` the published version, then delete the files no longer referenced; return it."""
    manifest = {**manifest, "version": manifest["version"] + 1}
    fsutil.fsync_dir(directory)  # the new files' names are durable before a manifest refers to them
    fsutil.atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1))
    _collect_garbage(directory, manifest)
    logger.info("%s: published version %d", directory, manifest["version"])
    return manifest


def _collect_garbage(directory: Path, manifest: dict[str, Any]) -> None:
    keep = {MANIFEST, LOCK} | {entry["file"] for entry in _file_entries(manifest)}
    for path in directory.iterdir():
        if path.name not in keep and path.name.startswith("seg"):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the thesis' database

#: The thesis' database kinds (table 3.1): database name suffix → the items a database of that kind holds.
SEED_KINDS: dict[str, tuple[str, ...]] = {
    "test_raw": ("video_id", "text_feature", "video_feature_raw"),
    "train_video_raw": ("video_id", "video_feature_raw"),
    "train_video": ("video_id", "video_feature"),
    "test": ("video_id", "text_feature", "video_feature"),
    "text": ("video_id", "text_feature"),
}


def database_name(dataset: str, kind: str) -> str:
    """The thesis' naming rule: dataset name + kind, e.g. `msrvtt_test_raw`."""
    if kind not in SEED_KINDS:
        raise ValueError(f"kind {kind!r}: one of {sorted(SEED_KINDS)}")
    return f"{dataset}_{kind}"


@dataclass
class FeatureDatabase:
    """Several named stores under one root directory: the thesis' `store(name, arrays)` / `load(name)`."""

    root: Path
    verify: Verify = "auto"
    _open: dict[str, Store] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def path(self, name: str) -> Path:
        if not _STORE_NAME.match(name):
            raise ValueError(f"database name {name!r}: letters, digits, '_', '.', '-'")
        return self.root / name

    def names(self) -> list[str]:
        """Names of the databases under the root that have a published version."""
        return sorted(manifest.parent.name for manifest in self.root.glob(f"*/{MANIFEST}"))

    def store(self, name: str, arrays: Mapping[str, np.ndarray], *, fingerprint: str = "",
              rows: Sequence[RowMeta] | None = None) -> int:
        """Save `arrays` as database `name` (replacing its content); names of the thesis' kinds need its items."""
        _check_seed_items(name, arrays)
        return write(self.path(name), arrays, fingerprint=fingerprint, rows=rows)

    def open(self, name: str) -> Store:
        """The latest published version of database `name` (re-opened only when a new version was published)."""
        cached = self._open.get(name)
        if cached is None or read_manifest(self.path(name))["version"] != cached.version:
            self._open[name] = cached = Store.open(self.path(name), verify=self.verify)
        return cached

    def load(self, name: str) -> dict[str, np.ndarray]:
        """The arrays of database `name`, as they were stored (memory-mapped)."""
        return self.open(name).load()


def _check_seed_items(name: str, arrays: Mapping[str, np.ndarray]) -> None:
    for kind, items in SEED_KINDS.items():
        if name.endswith(f"_{kind}"):
            missing = set(items) - set(arrays)
            if missing:
                raise ValueError(f"database {name!r} is of the thesis' kind {kind!r}: it needs {items}, "
                                 f"missing {sorted(missing)}")
            return
