"""Keyframe cache → model → feature store (`vidsearch index`), and the query encoder that searches it.

One row per moment for videos cut into moments, one row per video otherwise. Videos already in the store are
skipped, so an interrupted run resumes and a grown library is indexed incrementally; rows are published in chunks,
each chunk one atomic store version. A rebuild publishes once, at the end: until then readers keep the previous
version, and a rebuild that is interrupted leaves it as it was. Under torchrun (`index_cache_sharded`) the ranks share
the rows and rank 0 publishes them as one version when all have finished.

Several writers may add to one store at once (`vidsearch index` runs, a web server's uploads): each holds the store's
ingest lock (`ingest_lock`, an flock on `<store>/.ingest.lock`) while it checks which of its videos are still
missing and publishes those, so no video's rows are ever added twice. Encoding runs outside the lock, except in a
rebuild, which holds it from start to end (other writers wait, then add what the rebuilt store lacks).

The store records where its model came from and which cache its thumbnails live in, so `vidsearch search` and
`vidsearch serve` need only `--store`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from vidsearch.config import FrameConfig
from vidsearch.data.manifest import VideoRecord
from vidsearch.data.sampling import frame_positions
from vidsearch.data.synthetic import SYNTHETIC_LIBRARY, is_synthetic_id
from vidsearch.distributed import setup_distributed, shutdown_distributed
from vidsearch.model.source import ModelSource
from vidsearch.runtime.exported import ExportedModel, resize_crop
from vidsearch.store import store as feature_store
from vidsearch.store.store import RowMeta, Store, StoreNotFound, VideoInfo
from vidsearch.video.cache import FrameCache, VideoEntry, open_cache

if TYPE_CHECKING:  # torch only for PyTorch models: an exported model (ExportedModel) indexes and searches without it
    import torch

    from vidsearch.model.textquery import Precision
    from vidsearch.model.videoclip import VideoTextModel

    Model = VideoTextModel | ExportedModel

log = logging.getLogger(__name__)

FEATURE = "video_feature"
CHUNK_VIDEOS = 256
INGEST_LOCK = ".ingest.lock"


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
    warnings: list[str] = field(default_factory=list)  # one line each: `vidsearch index` prints them to stderr
    duplicates: dict[str, str] = field(default_factory=dict)  # cached videos not indexed → the same bytes' id


class ModelQueryEncoder:
    """The `QueryEncoder` of `vidsearch.store.search` for a VideoTextModel.

    Queries run through a `QueryTextTower` (equal to `encode_text` to float rounding; `precision="bf16"` is an opt-in
    approximation) when the model's text tower is a plain float32 one, else through `encode_text`. `threads` caps
    torch's intra-op threads while encoding (None: leave them): one query is ~100 small ops, and on a busy 2-core
    machine two threads waiting on each other at each op made a query 5-20× slower than one thread.
    """

    def __init__(self, model: VideoTextModel, *, precision: Precision = "fp32", threads: int | None = 1):
        from vidsearch.model.textquery import QueryTextTower, supports

        self.model = model
        self.fingerprint = model.fingerprint
        self.threads = threads
        self.tower = QueryTextTower(model.clip, precision=precision) if supports(model.clip) else None
        if self.tower is None and precision != "fp32":
            raise ValueError(f"precision {precision!r} needs a plain float32 open_clip text tower")

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        tokens = self.model.tokenize(texts)
        with torch.inference_mode(), intra_op_threads(self.threads):
            features = self.tower(tokens) if self.tower is not None else self.model.encode_text(tokens)
        return features.cpu().numpy().astype(np.float32, copy=False)


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block (unchanged for None), restored after it."""
    import torch

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
    model: Model,
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
    info = store_info(source, cache_dir)
    by_id = {record.video_id: record for record in records}
    model = _on_device(model, device)
    if rebuild:
        with ingest_lock(store_dir):
            report = _rebuild(model, cache, store_dir, by_id, info, batch_size=batch_size, device=device)
    else:
        report = _add_missing(model, cache, store_dir, by_id, info, batch_size=batch_size, device=device)
    report.version = describe_videos(store_dir, records) or report.version
    report.warnings += domain_warnings(source, cache)
    report.seconds = time.perf_counter() - started
    return report


def describe_videos(store_dir: str | Path, records: Sequence[VideoRecord]) -> int | None:
    """The captions and categories of `records` given to the videos already in the store (an index run with
    `--data` after the videos were indexed without it, or with other captions): the store's text mode and category
    filter then agree with the site's caption database. Returns the version published, None if nothing changed."""
    if not records:
        return None
    infos = {record.video_id: VideoInfo(record.category, tuple(record.captions)) for record in records}
    try:
        before = feature_store.read_manifest(Path(store_dir))["version"]
    except StoreNotFound:
        return None
    version = feature_store.set_videos(store_dir, infos)
    return version if version != before else None


@contextmanager
def ingest_lock(store_dir: str | Path) -> Iterator[None]:
    """Held by whoever decides which videos a store lacks and adds their rows (see the module docstring)."""
    directory = Path(store_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / INGEST_LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _add_missing(model: VideoTextModel, cache: FrameCache, store_dir: str | Path, by_id: dict[str, VideoRecord],
                 info: dict, *, batch_size: int, device: str) -> IndexReport:
    """Encode the videos the store lacked when we looked, chunk by chunk; each chunk adds those still missing."""
    todo, report = _plan(cache, store_dir, model.fingerprint, rebuild=False)
    with tqdm(total=len(todo), desc="index", unit="video", disable=not todo) as progress:
        for chunk in _chunks(todo, CHUNK_VIDEOS):
            features, rows = _encode_chunk(model, cache, chunk, by_id, batch_size, device, progress)
            version, added = add_missing_rows(store_dir, features, rows, fingerprint=model.fingerprint, info=info)
            report.version = version or report.version
            report.videos_added += len(added)
            report.videos_skipped += len(chunk) - len(added)
            report.rows_added += sum(row.video_id in added for row in rows)
    return report


def add_missing_rows(store_dir: str | Path, features: np.ndarray, rows: Sequence[RowMeta], *, fingerprint: str,
                     info: dict) -> tuple[int | None, set[str]]:
    """Under the ingest lock, add the rows of the videos the store does not hold (another writer may have added some
    since they were planned); returns the published version (None: nothing was new) and the videos added."""
    with ingest_lock(store_dir):
        present = videos_in_store(store_dir, fingerprint)
        keep = np.array([row.video_id not in present for row in rows], dtype=bool)
        if not keep.any():
            return None, set()
        kept = [row for row, new in zip(rows, keep) if new]
        version = feature_store.add(store_dir, {FEATURE: features[keep]}, fingerprint=fingerprint, rows=kept,
                                    info=info)
    return version, {row.video_id for row in kept}


def _rebuild(model: VideoTextModel, cache: FrameCache, store_dir: str | Path, by_id: dict[str, VideoRecord],
             info: dict, *, batch_size: int, device: str) -> IndexReport:
    """Every cached video encoded into an unnamed temporary file beside the store, then published as one version.

    The features go to disk, not memory, chunk by chunk; the file has no name, so a killed rebuild leaves nothing."""
    todo, report = _plan(cache, store_dir, model.fingerprint, rebuild=True)
    total = sum(len(rows_of(entry)) for entry in todo)
    if not total:
        return report
    rows: list[RowMeta] = []
    with tempfile.TemporaryFile(dir=store_dir) as handle:
        os.posix_fallocate(handle.fileno(), 0, total * model.embed_dim * 4)  # no space: ENOSPC now, not SIGBUS later
        features = np.memmap(handle, dtype=np.float32, mode="w+", shape=(total, model.embed_dim))
        with tqdm(total=len(todo), desc="index (rebuild)", unit="video") as progress:
            for chunk in _chunks(todo, CHUNK_VIDEOS):
                chunk_features, chunk_rows = _encode_chunk(model, cache, chunk, by_id, batch_size, device, progress)
                features[len(rows):len(rows) + len(chunk_rows)] = chunk_features
                rows += chunk_rows
        report.version = feature_store.write(store_dir, {FEATURE: features}, fingerprint=model.fingerprint, rows=rows,
                                             info=info)
        del features
    report.videos_added, report.rows_added = len(todo), len(rows)
    return report


def _plan(cache: FrameCache, store_dir: str | Path, fingerprint: str, *,
          rebuild: bool) -> tuple[list[VideoEntry], IndexReport]:
    """The cached videos to encode (those not in the store yet, or all for a rebuild) and a report counting the rest."""
    report = IndexReport(videos_failed_in_cache=cache.count() - cache.count("ok"))
    present = set() if rebuild else videos_in_store(store_dir, fingerprint)
    todo, skipped = [], 0
    for entry in cache.ok():
        if entry.duplicate_of is not None:
            report.duplicates[entry.id] = entry.duplicate_of
        elif entry.id in present:
            skipped += 1
        else:
            todo.append(entry)
    report.videos_skipped = skipped
    return todo, report


def domain_warnings(source: ModelSource, cache: FrameCache) -> list[str]:
    """A model that learnt from the synthetic library only, indexing other footage: its results there mean nothing."""
    if source.checkpoint is None:
        return []
    from vidsearch.model.checkpoint import read_checkpoint_config  # a checkpoint is a PyTorch model: torch is there

    extra = read_checkpoint_config(source.checkpoint).get("extra") or {}
    if extra.get("training_library") != SYNTHETIC_LIBRARY:
        return []
    foreign = [entry.id for entry in cache.ok() if not is_synthetic_id(entry.id)]
    if not foreign:
        return []
    examples = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    return [f"the model {source.checkpoint} was trained on the synthetic moving-shapes library only, but the cache "
            f"has {len(foreign)} other video(s) ({examples}): search results for them will be meaningless; index "
            f"them with CLIP weights (--weights, --pretrained) or a checkpoint trained on footage like them"]


def store_info(source: ModelSource, cache_dir: str | Path) -> dict:
    return {"model": source.absolute().to_dict(), "frames": str(Path(cache_dir).resolve())}


def videos_in_store(store_dir: str | Path, fingerprint: str) -> set[str]:
    """The videos the store holds (none if there is no store yet); refuses a store built with another model."""
    try:
        store = Store.open(store_dir)
    except StoreNotFound:
        return set()
    store.check_fingerprint(fingerprint)
    return set(store.videos())


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _encode_chunk(model: Model, cache: FrameCache, entries: list[VideoEntry], by_id: dict[str, VideoRecord],
                  batch_size: int, device: str, progress: tqdm) -> tuple[np.ndarray, list[RowMeta]]:
    specs = [spec for entry in entries for spec in rows_of(entry)]
    features = [encode_rows(model, cache, specs[i:i + batch_size], device) for i in range(0, len(specs), batch_size)]
    progress.update(len(entries))
    rows = [row_meta(spec, cache.entry(spec.video_id), by_id.get(spec.video_id)) for spec in specs]
    return np.concatenate(features).astype(np.float32), rows


def index_cache_sharded(
    *,
    model: Model,
    source: ModelSource,
    cache_dir: str | Path,
    store_dir: str | Path,
    records: Sequence[VideoRecord] = (),
    rebuild: bool = False,
    batch_size: int = 16,
    device: str = "cpu",
) -> IndexReport:
    """`index_cache` under torchrun: the ranks split the rows, rank 0 publishes them all as one store version.

    Every rank plans the same rows (checked), encodes a contiguous share of each chunk of them, and sends its
    features to rank 0 over the process group (`device` "cuda…": each rank on its local GPU with nccl; else gloo).
    Nothing touches the store before every rank has sent its last features, so a rank that dies (torchrun then
    stops the others) leaves the previous version as it was. Rank 0 holds all new features in memory until then;
    it publishes under the ingest lock (a rebuild holds it throughout), adding only the videos still missing then.
    Only rank 0's report has a `version`. Alone (no torchrun) it runs as one rank and still publishes one version.
    """
    started = time.perf_counter()
    rank, world, torch_device = setup_distributed(cuda=device.startswith("cuda"))
    cache = open_cache(cache_dir)
    with ingest_lock(store_dir) if rebuild and rank == 0 else nullcontext():
        todo, report = _plan(cache, store_dir, model.fingerprint, rebuild=rebuild)
        specs = [spec for entry in todo for spec in rows_of(entry)]
        _check_same_rows(specs, torch_device, world=world)
        model = _on_device(model, torch_device)
        features = _encode_across_ranks(model, cache, specs, batch_size=batch_size, device=torch_device, rank=rank,
                                        world=world)
        report.videos_added, report.rows_added = len(todo), len(specs)
        if rank == 0 and specs:
            _publish_ranks(report, features, _rows_of_specs(cache, specs, records), store_dir, rebuild=rebuild,
                           fingerprint=model.fingerprint, info=store_info(source, cache_dir))
        if rank == 0:
            report.warnings += domain_warnings(source, cache)
    shutdown_distributed()
    report.seconds = time.perf_counter() - started
    return report


def _rows_of_specs(cache: FrameCache, specs: list[RowSpec], records: Sequence[VideoRecord]) -> list[RowMeta]:
    by_id = {record.video_id: record for record in records}
    return [row_meta(spec, cache.entries[spec.video_id], by_id.get(spec.video_id)) for spec in specs]


def _publish_ranks(report: IndexReport, features: np.ndarray, rows: list[RowMeta], store_dir: str | Path, *,
                   rebuild: bool, fingerprint: str, info: dict) -> None:
    """Rank 0: a rebuild (ingest lock already held) replaces the store; else the videos still missing are added."""
    if rebuild:
        report.version = feature_store.write(store_dir, {FEATURE: features}, fingerprint=fingerprint, rows=rows,
                                             info=info)
        return
    planned = report.videos_added
    report.version, added = add_missing_rows(store_dir, features, rows, fingerprint=fingerprint, info=info)
    report.videos_added, report.rows_added = len(added), sum(row.video_id in added for row in rows)
    report.videos_skipped += planned - len(added)


def _check_same_rows(specs: list[RowSpec], device: torch.device, *, world: int) -> None:
    """All ranks must plan the same rows (a writer publishing between their reads of the store would break that)."""
    if world == 1:
        return
    import torch
    import torch.distributed as dist

    text = json.dumps([[s.video_id, s.start, s.end, list(s.frames)] for s in specs])
    digest = torch.tensor([int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")], device=device)
    digests = [torch.empty_like(digest) for _ in range(world)]
    dist.all_gather(digests, digest)
    if any(not torch.equal(other, digest) for other in digests):
        raise RuntimeError("the ranks read different versions of the store: run the sharded index again")


def _encode_across_ranks(model: Model, cache: FrameCache, specs: list[RowSpec], *, batch_size: int,
                         device: torch.device, rank: int, world: int) -> np.ndarray | None:
    """Features [len(specs), D] of all rows on rank 0 (None on the others), chunk by chunk to bound memory."""
    parts = []
    progress = tqdm(total=len(specs), desc=f"index ({world} ranks)", unit="row", disable=rank != 0)
    for chunk in _chunks(specs, CHUNK_VIDEOS * world):  # rows, here: about a video each
        bounds = [len(chunk) * r // world for r in range(world + 1)]
        share = chunk[bounds[rank]:bounds[rank + 1]]
        mine = [encode_rows(model, cache, share[i:i + batch_size], str(device))
                for i in range(0, len(share), batch_size)]
        received = _gather_rows(np.concatenate(mine) if mine else np.zeros((0, model.embed_dim), np.float32),
                                counts=np.diff(bounds).tolist(), device=device, rank=rank)
        parts += received
        progress.update(len(chunk))
    progress.close()
    return np.concatenate(parts).astype(np.float32) if rank == 0 and parts else None


def _gather_rows(features: np.ndarray, *, counts: list[int], device: torch.device, rank: int) -> list[np.ndarray]:
    """Every rank's features (rank r has counts[r] rows) on rank 0, in rank order; [] on the others.

    `gather` needs equal shapes: each rank pads its rows to the largest share, rank 0 cuts the padding off.
    """
    if len(counts) == 1:
        return [features]
    import torch
    import torch.distributed as dist

    padded = torch.zeros((max(counts), features.shape[1]), dtype=torch.float32, device=device)
    padded[:len(features)] = torch.from_numpy(features.astype(np.float32, copy=False))
    received = [torch.empty_like(padded) for _ in counts] if rank == 0 else None
    dist.gather(padded, received, dst=0)
    return [part[:count].cpu().numpy() for part, count in zip(received, counts)] if rank == 0 else []


def encode_rows(model: Model, cache: FrameCache, specs: Sequence[RowSpec], device: str = "cpu") -> np.ndarray:
    """Video features [len(specs), D] for rows, each from its keyframes evenly spaced and padded to T."""
    frames, masks = [], []
    for spec in specs:
        positions, mask = frame_positions(len(spec.frames), model_frames(model), rng=None)
        frames.append(cache.read_frames(spec.video_id, [spec.frames[p] for p in positions]))
        masks.append(mask)
    return encode_clips(model, np.stack(frames), np.stack(masks), device)


def model_frames(model: Model) -> int:
    """T, the frames the model's video tower takes (either runtime)."""
    return model.num_frames if isinstance(model, ExportedModel) else model.config.num_frames


def encode_clips(model: Model, frames: np.ndarray, masks: np.ndarray, device: str = "cpu") -> np.ndarray:
    """uint8 frames [B, T, H, W, 3] and masks [B, T] (True: a real frame) → video features [B, D] (either runtime)."""
    if isinstance(model, ExportedModel):
        return model.encode_videos(frames, masks)
    import torch

    with torch.no_grad():
        pixels = model.preprocess_frames(torch.from_numpy(frames)).to(device)
        return model.encode_video(pixels, torch.from_numpy(masks).to(device)).cpu().numpy()


IMAGE_VIEW_SHIFTS = (-1 / 3, 0.0, 1 / 3)  # of a patch, on each axis: an image query is seen 3 × 3 = 9 times
EXAMPLE_VIEWS = (1, 9)  # how many views an example may be seen in: as it is, or shifted by IMAGE_VIEW_SHIFTS


def _view_shifts(views: int) -> tuple[float, ...]:
    if views not in EXAMPLE_VIEWS:
        raise ValueError(f"an example is seen in 1 or 9 views, not {views}")
    return IMAGE_VIEW_SHIFTS if views == 9 else (0.0,)


def encode_image(model: Model, image: np.ndarray, frames: FrameConfig | None = None, *, views: int = 9) -> np.ndarray:
    """An RGB uint8 image [H, W, 3] → its vector [D] in the video space: made a keyframe as the library's were
    (`frames`, the store's keyframe settings, `vidsearch.video.clips.query_frame_config`; default: the model's size
    and the default JPEG quality), then the video tower on one-frame videos (T = 1, adapters and temporal head
    included) of `image_views`, their mean, normalised.

    Why a keyframe first: the model learnt, and the library was indexed, on frames that went through a video's
    YUV 4:2:0, swscale and JPEG; a PNG scaled by Pillow is a slightly different picture. On the demo that alone moved
    fresh frames from 89% to 92% with the same model (9 views; 190 frames, docs/contracts.md).

    Why several views: a ViT cuts the frame into patches, and where a small object falls on that grid moves its
    features; a library video averages that over its frames (the object moves), a single still does not. On the
    demo, one view found a fresh frame's colour and shape 56% of the time, the 9 views 89% (docs/contracts.md)."""
    from vidsearch.video.clips import still_as_stored

    image = still_as_stored(image, frames or FrameConfig(size=int(model.image_size)))
    size = image.shape[0]  # the keyframe size: the tower's preprocessing scales it as it scales a library row's
    shifted = image_views(image, size=size, patch=_patch_size(model) * size / int(model.image_size),
                          shifts=_view_shifts(views))
    mean = encode_clips(model, shifted[:, None], np.ones((len(shifted), 1), dtype=bool)).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)  # a norm of 0.999 is renormalised too


def image_views(image: np.ndarray, *, size: int, patch: float,
                shifts: tuple[float, ...] = IMAGE_VIEW_SHIFTS) -> np.ndarray:
    """uint8 [V, size, size, 3]: the image as the tower sees it (short side to `size`, bicubic, centre crop), shifted
    by `shifts` of a patch on each axis, the uncovered edge repeating the border's pixels."""
    square = image if image.shape[:2] == (size, size) else resize_crop(np.ascontiguousarray(image), size)
    offsets = sorted({int(round(shift * patch)) for shift in shifts})
    margin = max(abs(offset) for offset in offsets)
    padded = np.pad(square, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    return np.stack([padded[margin - dy:margin - dy + size, margin - dx:margin - dx + size]
                     for dy in offsets for dx in offsets])


def _patch_size(model: Model) -> int:
    if isinstance(model, ExportedModel):
        return int(model.config["clip_config"]["vision_cfg"]["patch_size"])
    patch = model.clip.visual.patch_size
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def encode_clip(model: Model, frames: np.ndarray, *, views: int = 9) -> np.ndarray:
    """A query clip's keyframes, uint8 [N, S, S, 3] in time order (`vidsearch.video.clips.decode_clip`) → its vector
    [D] in the video space: T of them evenly spaced, or all padded to T, as a library row's (`encode_rows`), seen as
    the 9 shifted views of an image query (`image_views`, the same shift for every frame of a view), the mean of the
    9 clip vectors, normalised. On the demo the views took fresh clips' top hit with the right colour, shape and
    direction from 92% to 97% (154 clips, docs/contracts.md): the shape is as small as in a still. They cost 9
    passes of the tower (ViT-B/32, 12 frames, 2 CPU cores: 5.5 s instead of 0.57; `bench views`); `views=1` is the
    clip as it is, exactly as its library row would be encoded."""
    positions, mask = frame_positions(len(frames), model_frames(model), rng=None)
    size = frames.shape[1]  # the keyframes' own size: the tower's preprocessing scales them as it scales a row's
    patch, shifts = _patch_size(model) * size / int(model.image_size), _view_shifts(views)
    shifted = np.stack([image_views(frame, size=size, patch=patch, shifts=shifts) for frame in frames[positions]],
                       axis=1)
    mean = encode_clips(model, shifted, np.repeat(mask[None], len(shifted), axis=0)).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def _on_device(model: Model, device: str | torch.device) -> Model:
    """A PyTorch model moved to `device` in eval mode; an exported model runs where ONNX Runtime runs it."""
    return model if isinstance(model, ExportedModel) else model.to(device).eval()


def query_encoder(model: Model, *, precision: str = "fp32"):
    """The store's QueryEncoder for a model: an exported model is one already."""
    if isinstance(model, ExportedModel):
        if precision != "fp32":
            raise ValueError(f"precision {precision!r}: an exported model has its own ({model.precision})")
        return model
    return ModelQueryEncoder(model, precision=precision)


def row_meta(spec: RowSpec, entry: VideoEntry, record: VideoRecord | None) -> RowMeta:
    return RowMeta(
        video_id=spec.video_id,
        start=spec.start,
        end=spec.end,
        category=record.category if record else None,
        thumbnail=entry.frames[spec.frames[0]],
        captions=tuple(record.captions) if record else (),
    )


def open_searcher(store_dir: str | Path, *, precision: str = "fp32", model: str | Path | None = None):
    """A Searcher over the store with the model the store was built with (read from the store's info), or with the
    exported model directory `model` (refused unless it gives the store's vectors: its fingerprint)."""
    from vidsearch.store.search import Searcher

    store = Store.open(store_dir)
    source = ModelSource(exported=str(model)) if model is not None else ModelSource.from_dict(store.info["model"])
    return Searcher(store, query_encoder(source.load(precision=precision), precision=precision))


def index_into(task: dict) -> dict:
    """`run_isolated` target: add the store's keyframe cache's new videos with the store's own model, or with the
    exported model directory `task["model"]` the server runs (`serve --model DIR`: refused unless it has the store's
    fingerprint); the store keeps recording its own model either way.

    `task`: {"store": dir, "records": [VideoRecord JSON, ...], "model": dir (optional)}. Encoding in a child process
    keeps a web server's request threads free while an upload is ingested.
    """
    store_dir = task["store"]
    info = Store.open(store_dir).info
    source = ModelSource.from_dict(info["model"])
    encoder = ModelSource(exported=task["model"]) if task.get("model") else source
    records = [VideoRecord(**record) for record in task.get("records", [])]
    report = index_cache(model=_loaded(encoder), source=source, cache_dir=info["frames"], store_dir=store_dir,
                         records=records)
    for warning in report.warnings:
        log.warning("%s", warning)
    return {"videos_added": report.videos_added, "version": report.version}


_models: dict[str, Model] = {}


def _loaded(source: ModelSource) -> Model:
    """The model of `source`, loaded once per process (a long-lived ingest worker encodes upload after upload)."""
    key = json.dumps(source.to_dict(), sort_keys=True)
    if key not in _models:
        _models.clear()
        _models[key] = source.load()
    return _models[key]
