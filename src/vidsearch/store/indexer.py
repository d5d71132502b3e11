"""Keyframe cache → model → feature store (`vidsearch index`), and the query encoder that searches it.

One row per moment for videos cut into moments, one row per video otherwise. Videos already in the store are
skipped, so an interrupted run resumes and a grown library is indexed incrementally; rows are published in chunks,
each chunk one atomic store version. The store records where its model came from and which cache its thumbnails
live in, so `vidsearch search` and `vidsearch serve` need only `--store`.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from vidsearch.data.loader import frame_positions
from vidsearch.data.manifest import VideoRecord
from vidsearch.model.source import ModelSource
from vidsearch.model.textquery import Precision, QueryTextTower, supports
from vidsearch.model.videoclip import VideoTextModel
from vidsearch.store import store as feature_store
from vidsearch.store.store import RowMeta, Store, StoreNotFound
from vidsearch.video.cache import FrameCache, VideoEntry, open_cache

log = logging.getLogger(__name__)

FEATURE = "video_feature"
CHUNK_VIDEOS = 256


@dataclass(frozen=True)
class RowSpec:
    """One row to encode: a whole video or one of its moments, and which keyframes it owns."""

    video_id: str
    start: float | None
    end: float | None
    frames: tuple[int, ...]


@dataclass
class IndexReport:
    videos_added: int = 0
    rows_added: int = 0
    videos_skipped: int = 0
    videos_failed_in_cache: int = 0
    version: int | None = None
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)


class ModelQueryEncoder:
    """The `QueryEncoder` of `vidsearch.store.search` for a VideoTextModel.

    Queries run through a `QueryTextTower` (equal to `encode_text` to float rounding; `precision="bf16"` is an opt-in
    approximation) when the model's text tower is a plain float32 one, else through `encode_text`. `threads` caps
    torch's intra-op threads while encoding (None: leave them): one query is ~100 small ops, and on a busy 2-core
    machine two threads waiting on each other at each op made a query 5-20× slower than one thread.
    """

    def __init__(self, model: VideoTextModel, *, precision: Precision = "fp32", threads: int | None = 1):
        self.model = model
        self.fingerprint = model.fingerprint
        self.threads = threads
        self.tower = QueryTextTower(model.clip, precision=precision) if supports(model.clip) else None
        if self.tower is None and precision != "fp32":
            raise ValueError(f"precision {precision!r} needs a plain float32 open_clip text tower")

    def encode(self, texts: list[str]) -> np.ndarray:
        tokens = self.model.tokenize(texts)
        with torch.inference_mode(), intra_op_threads(self.threads):
            features = self.tower(tokens) if self.tower is not None else self.model.encode_text(tokens)
        return features.cpu().numpy().astype(np.float32, copy=False)


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block (unchanged for None), restored after it."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def rows_of(entry: VideoEntry) -> list[RowSpec]:
    """Moments when the cache has them, else the whole video."""
    if entry.moments:
        return [RowSpec(entry.id, m.start, m.end, tuple(m.frames)) for m in entry.moments if m.frames]
    return [RowSpec(entry.id, None, None, tuple(range(len(entry.frames))))]


def index_cache(
    *,
    model: VideoTextModel,
    source: ModelSource,
    cache_dir: str | Path,
    store_dir: str | Path,
    records: Sequence[VideoRecord] = (),
    rebuild: bool = False,
    batch_size: int = 16,
    device: str = "cpu",
) -> IndexReport:
    """Encode every cached video not yet in the store and add it; `rebuild` starts the store afresh."""
    started = time.perf_counter()
    cache = open_cache(cache_dir)
    report = IndexReport(videos_failed_in_cache=sum(e.status != "ok" for e in cache.entries.values()))
    present = set() if rebuild else _videos_in_store(store_dir, model.fingerprint)
    todo = [entry for entry in cache.ok() if entry.id not in present]
    report.videos_skipped = len(cache.ok()) - len(todo)
    info = {"model": source.absolute().to_dict(), "frames": str(Path(cache_dir).resolve())}
    by_id = {record.video_id: record for record in records}
    model = model.to(device).eval()
    progress = tqdm(total=len(todo), desc="index", unit="video")
    for number, chunk in enumerate(_chunks(todo, CHUNK_VIDEOS)):
        features, rows = _encode_chunk(model, cache, chunk, by_id, batch_size, device, progress)
        publish = feature_store.write if rebuild and number == 0 else feature_store.add
        report.version = publish(store_dir, {FEATURE: features}, fingerprint=model.fingerprint, rows=rows, info=info)
        report.videos_added += len(chunk)
        report.rows_added += len(rows)
    progress.close()
    report.seconds = time.perf_counter() - started
    return report


def _videos_in_store(store_dir: str | Path, fingerprint: str) -> set[str]:
    try:
        store = Store.open(store_dir)
    except StoreNotFound:
        return set()
    store.check_fingerprint(fingerprint)
    return set(store.videos())


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _encode_chunk(model: VideoTextModel, cache: FrameCache, entries: list[VideoEntry], by_id: dict[str, VideoRecord],
                  batch_size: int, device: str, progress: tqdm) -> tuple[np.ndarray, list[RowMeta]]:
    specs = [spec for entry in entries for spec in rows_of(entry)]
    features = [encode_rows(model, cache, specs[i:i + batch_size], device) for i in range(0, len(specs), batch_size)]
    progress.update(len(entries))
    rows = [_row_meta(spec, cache.entries[spec.video_id], by_id.get(spec.video_id)) for spec in specs]
    return np.concatenate(features).astype(np.float32), rows


@torch.no_grad()
def encode_rows(model: VideoTextModel, cache: FrameCache, specs: Sequence[RowSpec], device: str = "cpu") -> np.ndarray:
    """Video features [len(specs), D] for rows, each from its keyframes evenly spaced and padded to T."""
    frames, masks = [], []
    for spec in specs:
        positions, mask = frame_positions(len(spec.frames), model.config.num_frames, rng=None)
        chosen = [spec.frames[p] for p in positions]
        frames.append(torch.from_numpy(cache.read_frames(spec.video_id, chosen)))
        masks.append(torch.from_numpy(mask))
    pixels = model.preprocess_frames(torch.stack(frames)).to(device)
    return model.encode_video(pixels, torch.stack(masks).to(device)).cpu().numpy()


def _row_meta(spec: RowSpec, entry: VideoEntry, record: VideoRecord | None) -> RowMeta:
    return RowMeta(
        video_id=spec.video_id,
        start=spec.start,
        end=spec.end,
        category=record.category if record else None,
        thumbnail=entry.frames[spec.frames[0]],
        captions=tuple(record.captions) if record else (),
    )


def open_searcher(store_dir: str | Path, *, precision: str = "fp32"):
    """A Searcher over the store with the model the store was built with (read from the store's info)."""
    from vidsearch.store.search import Searcher

    store = Store.open(store_dir)
    source = ModelSource.from_dict(store.info["model"])
    return Searcher(store, ModelQueryEncoder(source.load(precision=precision)))
