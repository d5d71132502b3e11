"""The feature store: named arrays plus per-row metadata, versioned, published by an atomic rename of its manifest.

The seed's "tensor database" (§3.4) without pickle. One directory per store:

    manifest.json                               the published version; readers start from it and nothing else
    .lock                                       writers hold an exclusive flock on it: one writer at a time
    seg000003.video_feature.3fa9c1d2e4b5.npy    array files: immutable, named by segment and content hash
    seg000003.meta.1c2d3e4f5a6b.json            the segment's row metadata (JSON; its sha256 is in the manifest)
    .<name>.<random>.tmp                        an unfinished write: ignored by readers, removed by the next writer

A store is a list of segments (rows appended together) and a list of tombstoned row ids (removed rows). `add` writes
a new segment, `remove` adds tombstones, `compact` rewrites the live rows as one segment; each writes only new files
and then publishes a new manifest: temp file, fsync, rename, fsync the directory. Files that no published manifest
refers to any more are deleted after the publish. A reader that opens a version keeps its files open (memory maps),
so a writer deleting them later does not disturb it.

Integrity: every array file's sha256 is in the manifest, with the file's (inode, size, mtime_ns, ctime_ns) as the
writer saw it right after writing and hashing it. `Store.open(verify="auto")` re-hashes every file whose stat
differs from that record (any write, copy or restore changes it) and checks the size of every file, so a store
opens in milliseconds when untouched and a modified file is caught at open; `verify="full"` hashes every file
(catches silent media corruption too, at about 1.4 GB/s on one core).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from vidsearch import fsutil

logger = logging.getLogger(__name__)

FORMAT = "vidsearch-feature-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"
COMPACT_TOMBSTONE_FRACTION = 0.25
COMPACT_MAX_SEGMENTS = 16
_OPEN_RETRIES = 5
_ARRAY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

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
class RowTable:
    """Metadata of the live rows, column by column, aligned with `Store.array(name)`."""

    video_id: list[str]
    start: list[float | None]
    end: list[float | None]
    thumbnail: list[str | None]

    def __len__(self) -> int:
        return len(self.video_id)


@dataclass(frozen=True)
class _Segment:
    first_row: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    live: np.ndarray  # bool mask over the segment's rows


# ---------------------------------------------------------------------------------------------------------- reading


class Store:
    """One published version of a store: memory-mapped arrays and row metadata. Immutable; use `Store.open`."""

    def __init__(self, path: Path, manifest: dict[str, Any], segments: list[_Segment]):
        self.path = path
        self.manifest = manifest
        self._segments = segments
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
        return sum(int(segment.live.sum()) for segment in self._segments)

    def check_fingerprint(self, fingerprint: str) -> None:
        """Raise FingerprintMismatch unless `fingerprint` is the model fingerprint this store was built with."""
        if fingerprint != self.fingerprint:
            raise FingerprintMismatch(
                f"store {self.path} holds features of model {self.fingerprint!r}; the query was encoded by model "
                f"{fingerprint!r}. Rebuild the store with this model (vidsearch index) or search with its model."
            )

    def array(self, name: str) -> np.ndarray:
        """The live rows of array `name`: a memory map when the store is one segment without tombstones."""
        if name not in self._arrays:
            if name not in self.schema:
                raise KeyError(f"store {self.path} has no array {name!r}; it has {self.names}")
            self._arrays[name] = _live_concat([(s.arrays[name], s.live) for s in self._segments], self.schema[name])
        return self._arrays[name]

    def load(self) -> dict[str, np.ndarray]:
        """All arrays by name (the seed's `load`)."""
        return {name: self.array(name) for name in self.names}

    @property
    def rows(self) -> RowTable:
        if self._rows is None:
            self._rows = _live_rows(self._segments)
        return self._rows

    @property
    def info(self) -> dict[str, Any]:
        """What the writer recorded about the store's origin (JSON; e.g. the model source and the frame cache)."""
        return self.manifest.get("info", {})

    def videos(self) -> dict[str, VideoInfo]:
        """Category and captions of each video that has live rows, in row order."""
        if self._videos is None:
            self._videos = _live_videos(self._segments, set(self.rows.video_id))
        return self._videos

    def row_ids(self) -> np.ndarray:
        """Stable ids of the live rows (never reused; what tombstones refer to)."""
        ids = [np.arange(s.first_row, s.first_row + len(s.live))[s.live] for s in self._segments]
        return np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)

    def row(self, index: int) -> RowMeta:
        rows = self.rows
        video = self.videos()[rows.video_id[index]]
        return RowMeta(rows.video_id[index], rows.start[index], rows.end[index], video.category,
                       rows.thumbnail[index], video.captions)


def read_manifest(path: Path) -> dict[str, Any]:
    """The published manifest of the store at `path`, checked for format and version."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise StoreNotFound(f"{path} is not a feature store: no published {MANIFEST}") from None
    except ValueError as error:
        raise StoreCorrupted(f"{path}/{MANIFEST} is not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')!r}, "
                         f"this vidsearch reads {FORMAT!r} v{FORMAT_VERSION}")
    return manifest


def _open_segments(path: Path, manifest: dict[str, Any], verify: Verify) -> list[_Segment]:
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda entry: _check_file(path, entry, verify), _file_entries(manifest)))
    tombstones = np.asarray(manifest["tombstones"], dtype=np.int64)
    return [_open_segment(path, segment, tombstones) for segment in manifest["segments"]]


def _file_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for segment in manifest["segments"] for entry in [*segment["arrays"].values(), segment["meta"]]]


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


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _open_segment(directory: Path, segment: dict[str, Any], tombstones: np.ndarray) -> _Segment:
    arrays = {name: _map_array(directory, entry) for name, entry in segment["arrays"].items()}
    meta = _segment_meta(directory, segment["meta"])
    ids = np.arange(segment["first_row"], segment["first_row"] + segment["rows"])
    return _Segment(segment["first_row"], arrays, meta, ~np.isin(ids, tombstones))


_meta_cache: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()
_meta_cache_lock = threading.Lock()
_META_CACHE_SIZE = 64


def _segment_meta(directory: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """A segment's row metadata (read-only). Segments never change once published, so a new version that keeps a
    segment reuses its parsed metadata: following a version that added one upload costs that upload's rows only."""
    key = (str(directory.resolve()), entry["file"], entry["sha256"])
    with _meta_cache_lock:
        if key in _meta_cache:
            _meta_cache.move_to_end(key)
            return _meta_cache[key]
    meta = json.loads((directory / entry["file"]).read_bytes())
    meta["video_info"] = {video_id: VideoInfo(info["category"], tuple(info["captions"]))
                          for video_id, info in meta["videos"].items()}
    with _meta_cache_lock:
        _meta_cache[key] = meta
        while len(_meta_cache) > _META_CACHE_SIZE:
            _meta_cache.popitem(last=False)
    return meta


def _map_array(directory: Path, entry: dict[str, Any]) -> np.ndarray:
    # Copy-on-write: callers may modify what they get (torch.from_numpy needs a writable array); the file never changes.
    array = np.load(directory / entry["file"], mmap_mode="c", allow_pickle=False)
    if str(array.dtype) != entry["dtype"] or list(array.shape) != entry["shape"]:
        raise StoreCorrupted(f"{directory / entry['file']}: {array.dtype}{list(array.shape)}, "
                             f"the manifest says {entry['dtype']}{entry['shape']}")
    return array


def _live_concat(parts: list[tuple[np.ndarray, np.ndarray]], schema: dict[str, Any]) -> np.ndarray:
    if len(parts) == 1 and parts[0][1].all():
        return parts[0][0]
    chunks = [array if live.all() else array[live] for array, live in parts]
    if not chunks:
        return np.empty((0, *schema["shape"]), dtype=schema["dtype"])
    return np.concatenate(chunks)


def _live_rows(segments: list[_Segment]) -> RowTable:
    columns: dict[str, list] = {"video_id": [], "start": [], "end": [], "thumbnail": []}
    for segment in segments:
        for name, values in columns.items():
            values.extend(v for v, keep in zip(segment.meta[name], segment.live) if keep)
    return RowTable(**columns)


def _live_videos(segments: list[_Segment], live_ids: set[str]) -> dict[str, VideoInfo]:
    videos: dict[str, VideoInfo] = {}
    for segment in segments:
        infos = segment.meta["video_info"]
        if not videos and segment.live.all():  # the usual first segment: all of its videos, copied at C speed
            videos.update(infos)
            continue
        for video_id, info in infos.items():
            if video_id in live_ids and video_id not in videos:
                videos[video_id] = info
    return videos


# ---------------------------------------------------------------------------------------------------------- writing


def write(path: str | Path, arrays: Mapping[str, np.ndarray], *, fingerprint: str,
          rows: Sequence[RowMeta] | None = None, info: dict[str, Any] | None = None) -> int:
    """Replace the store's content with `arrays` (one row per first-axis entry); return the published version."""
    with _writer(Path(path)) as (directory, current):
        manifest = _empty_manifest(fingerprint, _schema_of(arrays), info)
        if current:  # keep counters monotonic: new files never take the name of one a published version refers to
            manifest.update({key: current[key] for key in ("version", "next_row", "next_segment")})
        return _publish(directory, _with_segment(directory, manifest, arrays, rows))


def add(path: str | Path, arrays: Mapping[str, np.ndarray], *, fingerprint: str,
        rows: Sequence[RowMeta] | None = None, info: dict[str, Any] | None = None, auto_compact: bool = True) -> int:
    """Append rows (a new segment) without rewriting existing ones; create the store if absent; `info` replaces."""
    with _writer(Path(path)) as (directory, current):
        manifest = current or _empty_manifest(fingerprint, _schema_of(arrays), info)
        _check_compatible(directory, manifest, arrays, fingerprint)
        if info is not None:
            manifest = {**manifest, "info": info}
        manifest = _with_segment(directory, manifest, arrays, rows)
        return _publish(directory, _compacted(directory, manifest) if auto_compact and _pays(manifest) else manifest)


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
        return _publish(directory, _compacted(directory, manifest) if auto_compact and _pays(manifest) else manifest)


def compact(path: str | Path, *, force: bool = False) -> int:
    """Rewrite the live rows as one segment when tombstones or segments pass their thresholds (or `force`)."""
    with _writer(Path(path)) as (directory, current):
        if current is None:
            raise StoreNotFound(f"{directory} is not a feature store: nothing to compact")
        if not (force or _pays(current)):
            return current["version"]
        return _publish(directory, _compacted(directory, current))


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


def _with_segment(directory: Path, manifest: dict[str, Any], arrays: Mapping[str, np.ndarray],
                  rows: Sequence[RowMeta] | None) -> dict[str, Any]:
    """`manifest` plus a new segment holding `arrays`, written to new files (not yet published)."""
    count = len(next(iter(arrays.values())))
    rows = list(rows) if rows is not None else _default_rows(arrays, manifest["next_row"], count)
    if len(rows) != count:
        raise ValueError(f"{len(rows)} rows of metadata for {count} rows of arrays")
    stem = f"seg{manifest['next_segment']:06d}"
    segment = {"id": manifest["next_segment"], "first_row": manifest["next_row"], "rows": count,
               "arrays": {name: _write_array(directory, f"{stem}.{name}", a) for name, a in arrays.items()},
               "meta": _write_json(directory, f"{stem}.meta", _meta_of(rows))}
    return {**manifest, "segments": [*manifest["segments"], segment],
            "next_row": manifest["next_row"] + count, "next_segment": manifest["next_segment"] + 1}


def _default_rows(arrays: Mapping[str, np.ndarray], first_row: int, count: int) -> list[RowMeta]:
    """Rows named by the seed's `video_id` array when there is one, else by their row number."""
    ids = arrays["video_id"].reshape(count, -1)[:, 0] if "video_id" in arrays else range(first_row, first_row + count)
    return [RowMeta(str(video_id)) for video_id in ids]


def _meta_of(rows: Sequence[RowMeta]) -> dict[str, Any]:
    videos: dict[str, dict[str, Any]] = {}
    for row in rows:
        videos.setdefault(row.video_id, {"category": row.category, "captions": list(row.captions)})
    return {"video_id": [r.video_id for r in rows], "start": [r.start for r in rows], "end": [r.end for r in rows],
            "thumbnail": [r.thumbnail for r in rows], "videos": videos}


def _write_array(directory: Path, stem: str, array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    header = BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    entry = _write_file(directory, stem, "npy", [header.getvalue(), array.reshape(-1).view(np.uint8).data])
    return {**entry, "dtype": str(array.dtype), "shape": list(array.shape)}


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


def _pays(manifest: dict[str, Any]) -> bool:
    """Compaction pays when many rows are dead or there are many segments to visit."""
    total = sum(segment["rows"] for segment in manifest["segments"])
    dead = len(manifest["tombstones"])
    return dead > COMPACT_TOMBSTONE_FRACTION * max(total, 1) or len(manifest["segments"]) > COMPACT_MAX_SEGMENTS


def _compacted(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` with its live rows rewritten as one new segment and no tombstones (not yet published)."""
    store = _snapshot(directory, manifest)
    rows = [store.row(i) for i in range(len(store))]
    base = {**manifest, "segments": [], "tombstones": []}
    logger.info("%s: compacting %d segments, %d dead rows", directory, len(manifest["segments"]),
                len(manifest["tombstones"]))
    return _with_segment(directory, base, store.load(), rows) if rows else base


def _row_ids_matching(directory: Path, manifest: dict[str, Any], video_ids: set[str],
                      moments: set[tuple[str, float | None]]) -> set[int]:
    store = _snapshot(directory, manifest)
    rows = store.rows
    doomed = [v in video_ids or (v, start) in moments for v, start in zip(rows.video_id, rows.start)]
    return set(store.row_ids()[np.asarray(doomed, dtype=bool)].tolist())


def _snapshot(directory: Path, manifest: dict[str, Any]) -> Store:
    return Store(directory, manifest, _open_segments(directory, manifest, "auto"))


def _publish(directory: Path, manifest: dict[str, Any]) -> int:
    """Make `manifest` the published version, then delete the files no longer referenced."""
    manifest = {**manifest, "version": manifest["version"] + 1}
    fsutil.fsync_dir(directory)  # the new files' names are durable before a manifest refers to them
    fsutil.atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1))
    _collect_garbage(directory, manifest)
    logger.info("%s: published version %d", directory, manifest["version"])
    return manifest["version"]


def _collect_garbage(directory: Path, manifest: dict[str, Any]) -> None:
    keep = {MANIFEST, LOCK} | {entry["file"] for entry in _file_entries(manifest)}
    for path in directory.iterdir():
        if path.name not in keep and path.name.startswith("seg"):
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the seed's database

#: The seed's database kinds (table 3.1): database name suffix → the items a database of that kind holds.
SEED_KINDS: dict[str, tuple[str, ...]] = {
    "test_raw": ("video_id", "text_feature", "video_feature_raw"),
    "train_video_raw": ("video_id", "video_feature_raw"),
    "train_video": ("video_id", "video_feature"),
    "test": ("video_id", "text_feature", "video_feature"),
    "text": ("video_id", "text_feature"),
}


def database_name(dataset: str, kind: str) -> str:
    """The seed's naming rule: dataset name + kind, e.g. `msrvtt_test_raw`."""
    if kind not in SEED_KINDS:
        raise ValueError(f"kind {kind!r}: one of {sorted(SEED_KINDS)}")
    return f"{dataset}_{kind}"


@dataclass
class FeatureDatabase:
    """Several named stores under one root directory: the seed's `store(name, arrays)` / `load(name)`."""

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
        """Save `arrays` as database `name` (replacing its content); names of the seed's kinds need its items."""
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
                raise ValueError(f"database {name!r} is of the seed's kind {kind!r}: it needs {items}, "
                                 f"missing {sorted(missing)}")
            return
