"""The stages of `vidsearch ingest` (see the package docstring); the executors only decide where each one runs.

What flows between the stages is plain JSON values, so any executor can move them between processes or machines:

    item     {"id", "source", "cache", "task"}    a file to ingest; "task": the `extract_video` task, or None when
                                                  the cache already holds its keyframes
    video    {"id", "source", "status", "error"}  after keyframes: "ok", or "failed" with {"code", "message"}
    encoded  video + {"rows": [RowMeta fields], "features": [[float, ...], ...]}  after encoding ("ok" videos)

The cache and the store are directories every stage can reach (one machine, or a shared filesystem).
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
from vidsearch.video.cache import DATABASE, CacheDatabase, FrameCache, extract_video, open_cache, plan_extraction, \
    record_outcome
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
    return IngestPlan(sorted(items, key=lambda item: item["id"]), report)


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

    def encode_videos(self, cache: FrameCache, entries: Sequence[Any]) -> tuple[np.ndarray, list[RowMeta]]:
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
        features, rows = encoder.encode_videos(cache, entries)
        for entry in entries:
            mine = [i for i, row in enumerate(rows) if row.video_id == entry.id]
            encoded[entry.id] = {"rows": [asdict(rows[i]) for i in mine], "features": features[mine].tolist()}
    return [{**video, **encoded[video["id"]]} if video["id"] in encoded else video for video in videos]


# --- publish (driver: the single store writer) -------------------------------------------------------------------


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
