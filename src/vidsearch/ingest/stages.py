"""The stages of `vidsearch ingest` (see the package docstring); the executors only decide where each one runs.

What flows between the stages is plain JSON values (and, between machines, the keyframes' JPEG bytes beside them),
so any executor can move them between processes or machines:

    item     {"id", "source", "cache", "task"}    a file to ingest; "task": the `extract_video` task, or None when
                                                  the cache already holds its keyframes
    video    {"id", "source", "status", "error"}  after keyframes: "ok", or "failed" with {"code", "message"}
    encoded  video + {"rows": [RowMeta fields], "features": [[float, ...], ...]}  after encoding ("ok" videos)

On one machine (`vidsearch.ingest.local`) the keyframe processes write the cache and the encoder reads it. Across
machines (`vidsearch.ingest.raydata`) only the driver's machine holds the cache and the store: a worker's item has
no "cache" (its task neither), `decoded_keyframes` returns each video's entry and JPEGs instead of storing them
(`cached_keyframes` reads those of cached videos, on the driver's machine), the encoder encodes them from memory
(`encode_keyframes`), and the driver stores them (`store_keyframes`) before it publishes the video. Such a video
also carries "entry" (its cache entry) and "new" (true: the driver has yet to store its keyframes).
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from vidsearch.config import FrameConfig
from vidsearch.model.source import ModelSource
from vidsearch.store.indexer import add_missing_rows, encode_rows, row_meta, rows_of, videos_in_store
from vidsearch.store.store import RowMeta
from vidsearch.video.cache import DATABASE, CacheDatabase, FrameCache, FramesInMemory, VideoEntry, \
    extract_keyframes, extract_video, frame_names, keyframes_of, open_cache, plan_extraction, record_outcome, \
    store_entry
from vidsearch.video.decode import DecodeLimits
from vidsearch.video.workers import run_isolated

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one job did. `failed`: (video id, source, error code, message) of each file that could not be ingested."""

    videos_added: int = 0
    rows_added: int = 0
    videos_in_store: int = 0
    failed: list[tuple[str, str, str, str]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        last = self.versions[-1] if self.versions else None
        lines = [f"ingested {self.videos_added} videos ({self.rows_added} rows) in {len(self.versions)} store "
                 f"versions (last {last}), {self.videos_in_store} already in the store, "
                 f"{len(self.failed) + len(self.unreadable)} failed in {self.seconds:.1f} s"]
        lines += [f"  failed {video_id} ({source}): {code}: {message}" for video_id, source, code, message in self.failed]
        lines += [f"  unreadable {problem}" for problem in self.unreadable]
        return "\n".join(lines)


@dataclass
class IngestPlan:
    items: list[dict[str, Any]]
    report: IngestReport
    cache: Path  # the keyframe cache's directory (created by `plan`)


# --- plan (driver) ----------------------------------------------------------------------------------------------


def plan(inputs: Iterable[str | Path], *, cache_dir: str | Path, store_dir: str | Path, config: FrameConfig,
         fingerprint: str, limits: DecodeLimits = DecodeLimits(), workers: int | None = None) -> IngestPlan:
    """The files to ingest: every input video the store lacks, with an extraction task unless its keyframes are
    cached already (same file, same settings). Creates the cache if absent; `workers` sets the decoder threads."""
    extraction = plan_extraction(inputs, cache_dir, config, workers=workers, limits=limits)
    present = videos_in_store(store_dir, fingerprint)
    report = IngestReport(unreadable=extraction.report.unreadable)
    items = [{"id": task["id"], "source": task["source"], "cache": str(extraction.root), "task": task}
             for task in extraction.tasks if task["id"] not in present]
    for video_id in extraction.report.skipped:
        if video_id in present:
            report.videos_in_store += 1
        else:
            entry = extraction.database.get(video_id)
            items.append({"id": video_id, "source": entry.source, "cache": str(extraction.root), "task": None})
    report.videos_in_store += sum(task["id"] in present for task in extraction.tasks)
    return IngestPlan(sorted(items, key=lambda item: item["id"]), report, extraction.root)


# --- keyframes (CPU) --------------------------------------------------------------------------------------------


def keyframes(items: Sequence[dict[str, Any]], *, workers: int, timeout_s: float) -> Iterator[dict[str, Any]]:
    """Videos (cached ones first, then extracted ones in completion order), each file decoded in an isolated child
    process, `workers` at once; a child that crashes or passes `timeout_s` fails its file only."""
    for item in items:
        if item["task"] is None:
            yield {"id": item["id"], "source": item["source"], "cache": item["cache"], "status": "ok", "error": None}
    tasks = [item["task"] for item in items if item["task"] is not None]
    if not tasks:
        return
    root = Path(tasks[0]["cache"])
    database = CacheDatabase(root / DATABASE)
    outcomes = run_isolated(extract_video, tasks, workers=workers, timeout_s=timeout_s)
    with closing(outcomes):
        for outcome in outcomes:
            entry = record_outcome(root, database, outcome)
            yield {"id": entry["id"], "source": entry["source"], "cache": str(root), "status": entry["status"],
                   "error": entry.get("error")}


def decoded_keyframes(items: Sequence[dict[str, Any]], *, timeout_s: float) -> Iterator[tuple[dict[str, Any],
                                                                                            list[bytes]]]:
    """Each item's video and keyframes (JPEG bytes), in completion order, writing nothing: for a machine without the
    cache. Each file is decoded in an isolated child process, one at a time; a child that crashes or passes
    `timeout_s` fails its file only."""
    outcomes = run_isolated(extract_keyframes, [item["task"] for item in items], workers=1, timeout_s=timeout_s)
    with closing(outcomes):
        for outcome in outcomes:
            entry, jpegs = keyframes_of(outcome)
            yield _remote_video(asdict(VideoEntry.from_json(entry)), new=True), jpegs


def cached_keyframes(items: Sequence[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[bytes]]]:
    """Each item's video and keyframes (JPEG bytes) as the cache holds them: on the cache's machine."""
    caches: dict[str, FrameCache] = {}
    for item in items:
        if item["cache"] not in caches:
            caches[item["cache"]] = open_cache(item["cache"])
        cache = caches[item["cache"]]
        entry = cache.entry(item["id"])
        jpegs = [cache.frame_path(entry.id, i).read_bytes() for i in range(len(entry.frames))]
        yield _remote_video(asdict(entry), new=False), jpegs


def _remote_video(entry: dict[str, Any], *, new: bool) -> dict[str, Any]:
    return {"id": entry["id"], "source": entry["source"], "status": entry["status"], "error": entry.get("error"),
            "entry": entry, "new": new}


# --- encode (GPU or CPU) ----------------------------------------------------------------------------------------


class VideoEncoder:
    """The model of the encode stage, loaded once per process; rows go through the indexer's `encode_rows`, so they
    are encoded exactly as `vidsearch index` encodes them, `batch_size` rows at a time."""

    def __init__(self, source: ModelSource, *, device: str = "cpu", precision: str = "fp32", batch_size: int = 16):
        self.model = source.load(precision=precision).to(device).eval()
        self.device = device
        self.batch_size = batch_size

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    def encode_videos(self, cache: FrameCache | FramesInMemory,
                      entries: Sequence[Any]) -> tuple[np.ndarray, list[RowMeta]]:
        """Features [rows, D] (float32) and row metadata of the videos' rows, in order."""
        specs = [spec for entry in entries for spec in rows_of(entry)]
        parts = [encode_rows(self.model, cache, specs[i:i + self.batch_size], self.device)
                 for i in range(0, len(specs), self.batch_size)]
        features = np.concatenate(parts) if parts else np.zeros((0, self.model.embed_dim))
        rows = [row_meta(spec, cache.entry(spec.video_id), None) for spec in specs]
        return features.astype(np.float32), rows


def encode(encoder: VideoEncoder, videos: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each "ok" video with its rows and features added; failed videos pass through unchanged."""
    ok = [video for video in videos if video["status"] == "ok"]
    encoded = {}
    for cache_dir in sorted({video["cache"] for video in ok}):
        cache = open_cache(cache_dir)
        entries = [cache.entry(video["id"]) for video in ok if video["cache"] == cache_dir]
        encoded.update(_encoded(encoder, cache, entries))
    return [{**video, **encoded[video["id"]]} if video["id"] in encoded else video for video in videos]


def encode_keyframes(encoder: VideoEncoder, videos: Sequence[dict[str, Any]],
                     jpegs: Sequence[Sequence[bytes]]) -> list[dict[str, Any]]:
    """`encode` for videos of `decoded_keyframes`/`cached_keyframes`: the frames come from their JPEGs (one list per
    video), not from a cache directory."""
    frames = FramesInMemory()
    for video, video_jpegs in zip(videos, jpegs, strict=True):
        if video["status"] == "ok":
            frames.add(video["entry"], video_jpegs)
    encoded = _encoded(encoder, frames, [frames.entry(video["id"]) for video in videos if video["status"] == "ok"])
    return [{**video, **encoded[video["id"]]} if video["id"] in encoded else video for video in videos]


def _encoded(encoder: VideoEncoder, cache: FrameCache | FramesInMemory, entries: Sequence[Any]) -> dict[str, dict]:
    """Video id → {"rows", "features"} of the entries' videos."""
    features, rows = encoder.encode_videos(cache, entries)
    encoded = {}
    for entry in entries:
        mine = [i for i, row in enumerate(rows) if row.video_id == entry.id]
        encoded[entry.id] = {"rows": [asdict(rows[i]) for i in mine], "features": features[mine].tolist()}
    return encoded


# --- publish (driver: the single store writer) -------------------------------------------------------------------


def store_keyframes(root: Path, database: CacheDatabase, video: dict[str, Any], jpegs: Sequence[bytes]) -> None:
    """Into the cache at `root` (this machine's), the entry and keyframes another machine decoded for `video` (one with
    "new": see `decoded_keyframes`), under the cache's lock: before the video is published, since its rows'
    thumbnails are those frames. Raises OSError(ENOSPC) when the disk is full."""
    entry = video["entry"]
    expected = frame_names(video["id"], len(jpegs)) if entry["status"] == "ok" else []
    if entry["id"] != video["id"] or entry["frames"] != expected or entry["status"] != "ok" and jpegs:
        raise RuntimeError(f"video {video['id']}: the keyframes came back as {entry['id']} ({entry['status']}) with "
                           f"{len(entry['frames'])} frame names for {len(jpegs)} JPEGs")
    store_entry(root, database, entry, jpegs)


class Publisher:
    """Collects encoded videos and adds every `batch_videos` of them to the store as one version (under the store's
    ingest lock, only those it still lacks); records failures. A video seen twice (a retried task) counts once."""

    def __init__(self, store_dir: str | Path, report: IngestReport, *, fingerprint: str, info: dict,
                 batch_videos: int, on_publish: Callable[[int, IngestReport], None] | None = None):
        self.store_dir = store_dir
        self.report = report
        self.fingerprint = fingerprint
        self.info = info
        self.batch_videos = batch_videos
        self.on_publish = on_publish
        self.pending: list[dict[str, Any]] = []
        self.seen: set[str] = set()

    def add(self, video: dict[str, Any]) -> None:
        if video["id"] in self.seen:
            return
        self.seen.add(video["id"])
        if video["status"] != "ok":
            error = video["error"] or {"code": "error", "message": "no keyframes"}
            self.report.failed.append((video["id"], video["source"], error["code"], error["message"]))
            return
        self.pending.append(video)
        if len(self.pending) >= self.batch_videos:
            self.flush()

    def flush(self) -> None:
        """Publish what is pending (nothing if nothing is)."""
        videos, self.pending = self.pending, []
        rows = [RowMeta(**{**row, "captions": tuple(row["captions"])}) for video in videos for row in video["rows"]]
        if not rows:
            return
        features = np.array([vector for video in videos for vector in video["features"]], dtype=np.float32)
        version, added = add_missing_rows(self.store_dir, features, rows, fingerprint=self.fingerprint, info=self.info)
        self.report.videos_in_store += len(videos) - len(added)
        if version is None:
            return
        self.report.videos_added += len(added)
        self.report.rows_added += sum(row.video_id in added for row in rows)
        self.report.versions.append(version)
        log.info("store version %d: %d videos added", version, len(added))
        if self.on_publish is not None:
            self.on_publish(version, self.report)
