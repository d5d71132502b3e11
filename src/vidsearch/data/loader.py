"""Training and evaluation batches from the keyframe cache and the data manifest.

Frame positions (the thesis §3.3): a video's cached keyframes are in time order. Training takes T of them at random
positions, kept in time order; evaluation takes T evenly spaced ones. A video with fewer than T keyframes is padded
by repeating its last frame (AIM's temporal attention has no mask, so padding must look like video, not zeros) and
the mask marks the real frames, a prefix, for mean pooling.

Samples (CLIP4Clip): in training every caption is a sample. An epoch is a series of rounds; each round is a shuffled
pass over the videos that still have captions left, one caption each. So a batch holds two captions of one video only
where a round ends (and those are swapped apart), never as a rule. With `twins_in_batch` the unit of shuffling is a
twin pair, so each video's time-reversed twin sits in the same batch as a hard negative.

Where frames come from, fastest first:
- `PackedFrames`: one uint8 array [frames, S, S, 3] at the model's resolution, memory-mapped (`RUN/frames-S.npy`
  plus `frames-S.json`), packed once from the cache with a progress bar and reused; a batch is one fancy-indexing
  copy, so worker processes (or the main one) keep a GPU fed.
- `NvJpegFrames`: the cache's JPEGs decoded in batches by nvJPEG (`torchvision.io.decode_jpeg(device="cuda")`).
- `JpegFrames`: the cache's JPEGs decoded by PIL, in `DataLoader` worker processes (evaluation, CPU training).

Every random choice is derived from (seed, epoch, batch index), so a resumed run sees exactly the batches an
uninterrupted one would, whichever worker builds them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from vidsearch.data.manifest import VideoRecord
from vidsearch.data.sampling import frame_positions
from vidsearch.fsutil import atomic_write_text

log = logging.getLogger(__name__)

PACKED_FORMAT = "vidsearch.packed-frames"


# --- which videos, which frames ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoaderVideo:
    """A manifest record joined to its cache entry: which of the entry's keyframes belong to it (a moment's)."""

    video_id: str
    cache_id: str
    frames: tuple[int, ...]
    captions: tuple[str, ...]
    twin: str | None = None


def match_videos(records: Sequence[VideoRecord], cache, *, split: str | None,
                 manifest_dir: str | Path = ".") -> list[LoaderVideo]:
    """Records of `split` (all if None) with frames in `cache` (a FrameCache), by video id or else by source file.

    A record with start/end takes the keyframes whose timestamps fall in [start, end). Records without frames
    (missing or failed in the cache) are left out with a warning naming how many.
    """
    by_source = {os.path.realpath(entry.source): entry for entry in cache.ok()}
    videos, missing = [], []
    for record in records:
        if split is not None and record.split != split:
            continue
        entry = cache.entries.get(record.video_id)
        if entry is None or entry.status != "ok":
            entry = by_source.get(os.path.realpath(record.source_path(manifest_dir)))
        frames = _frames_of(record, entry) if entry is not None else ()
        if frames:
            videos.append(LoaderVideo(record.video_id, entry.id, frames, record.captions, record.twin))
        else:
            missing.append(record.video_id)
    if missing:
        log.warning("%d video(s) of split %s have no keyframes in %s and are left out (first: %s)",
                    len(missing), split, cache.root, missing[0])
    return videos


def _frames_of(record: VideoRecord, entry) -> tuple[int, ...]:
    if record.start is None:
        return tuple(range(len(entry.frames)))
    return tuple(i for i, t in enumerate(entry.timestamps) if record.start <= t < record.end)


# --- epochs of caption samples -------------------------------------------------------------------------------------


def shuffle_units(videos: Sequence[LoaderVideo], *, twins_in_batch: bool) -> list[tuple[int, ...]]:
    """The units an epoch shuffles: single videos, or twin pairs (both in this list of videos) with twins_in_batch."""
    index = {video.video_id: i for i, video in enumerate(videos)}
    units, seen = [], set()
    for i, video in enumerate(videos):
        if i in seen:
            continue
        twin = index.get(video.twin) if twins_in_batch and video.twin else None
        unit = (i,) if twin is None or twin in seen else (i, twin)
        seen.update(unit)
        units.append(unit)
    return units


def epoch_plan(videos: Sequence[LoaderVideo], *, batch_size: int, seed: int, epoch: int,
               twins_in_batch: bool = False) -> list[list[tuple[int, int]]]:
    """The epoch's batches of (video index, caption index): every caption once, rounds of shuffled units.

    The last incomplete batch is dropped when there is at least one full one (a contrastive batch of 2 teaches
    little and distributed ranks need equal shares).
    """
    rng = np.random.default_rng([seed, epoch])
    caption_orders = [rng.permutation(len(video.captions)) for video in videos]
    units = shuffle_units(videos, twins_in_batch=twins_in_batch)
    for unit in units:  # twins take their captions in the same order: "…moves left" meets its own "…moves right"
        if len(unit) == 2 and len(videos[unit[0]].captions) == len(videos[unit[1]].captions):
            caption_orders[unit[1]] = caption_orders[unit[0]]
    samples: list[tuple[int, int]] = []
    for round_ in range(max((len(v.captions) for v in videos), default=0)):
        for u in rng.permutation(len(units)):
            samples += [(v, int(caption_orders[v][round_])) for v in units[u] if round_ < len(videos[v].captions)]
    batches = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    _separate_repeats(batches)
    return batches


def _separate_repeats(batches: list[list[tuple[int, int]]]) -> None:
    """Where a round boundary put one video twice into a batch, swap the repeat with a sample of the next batch."""
    for b in range(len(batches) - 1):
        batch, following = batches[b], batches[b + 1]
        seen: set[int] = set()
        for i, (video, _) in enumerate(batch):
            if video in seen:
                swap = next((j for j, (other, _) in enumerate(following) if other not in seen
                             and all(other != v for v, _ in batch)), None)
                if swap is not None:
                    batch[i], following[swap] = following[swap], batch[i]
            seen.add(batch[i][0])


# --- frame stores ---------------------------------------------------------------------------------------------------


class FrameStore(Protocol):
    size: int

    def read(self, video: LoaderVideo, positions: np.ndarray) -> np.ndarray:
        """uint8 [len(positions), size, size, 3]; positions index `video.frames`."""


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Short side to `size` (bicubic), centre crop: what the model's preprocessing does, once, in uint8."""
    height, width = frame.shape[:2]
    if (height, width) == (size, size):
        return frame
    scale = size / min(height, width)
    image = Image.fromarray(frame).resize((max(size, round(width * scale)), max(size, round(height * scale))),
                                          Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


class JpegFrames:
    """Keyframes decoded from the cache's JPEGs by PIL (picklable: fine in DataLoader workers)."""

    def __init__(self, cache, size: int):
        self.cache, self.size = cache, size

    def read(self, video: LoaderVideo, positions: np.ndarray) -> np.ndarray:
        indices = [video.frames[p] for p in positions]
        return np.stack([resize_square(f, self.size) for f in self.cache.read_frames(video.cache_id, indices)])


class NvJpegFrames:
    """Keyframes decoded in one batch per video by `torchvision.io.decode_jpeg` on `device` (nvJPEG on CUDA).

    Use it from the main process (no CUDA in forked workers); `read` returns a tensor on `device`.
    """

    def __init__(self, cache, size: int, device: str | torch.device = "cuda"):
        self.cache, self.size, self.device = cache, size, torch.device(device)

    def read(self, video: LoaderVideo, positions: np.ndarray) -> torch.Tensor:
        from torchvision.io import decode_jpeg, read_file
        from torchvision.transforms.v2.functional import center_crop, resize

        data = [read_file(str(self.cache.frame_path(video.cache_id, video.frames[p]))) for p in positions]
        images = torch.stack(decode_jpeg(data, device=self.device))  # [T, 3, H, W]
        if images.shape[-2:] != (self.size, self.size):
            images = center_crop(resize(images, [self.size], antialias=True), [self.size, self.size])
        return images.permute(0, 2, 3, 1)


class PackedFrames:
    """A uint8 [frames, S, S, 3] memory-mapped array and where each cache entry's frames start (see `pack_frames`)."""

    def __init__(self, array_path: Path, offsets: dict[str, tuple[int, int]], size: int):
        self.array_path, self.offsets, self.size = Path(array_path), offsets, size
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:  # opened lazily, so each DataLoader worker maps the file itself
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def read(self, video: LoaderVideo, positions: np.ndarray) -> np.ndarray:
        offset, _ = self.offsets[video.cache_id]
        return self.array[offset + np.asarray(video.frames)[positions]]


def pack_frames(cache, videos: Sequence[LoaderVideo], *, size: int, out_dir: str | Path) -> PackedFrames:
    """Pack the keyframes of `videos` at `size` into `out_dir/frames-<size>.npy` (+ `.json` index), or reuse them.

    Reused when the index names the same digest of the cache's settings and of these videos' entries (a video
    extracted again changes its entry), the same size, and at least these cache entries. The array is written under
    a temporary name and the index last, so an interrupted pack is simply redone.
    """
    out_dir = Path(out_dir)
    array_path, index_path = out_dir / f"frames-{size}.npy", out_dir / f"frames-{size}.json"
    wanted = sorted({video.cache_id for video in videos})
    cache_sha = _entries_digest(cache, wanted)
    reused = _reusable_pack(index_path, array_path, cache_sha=cache_sha, size=size, wanted=wanted)
    if reused is not None:
        log.info("reusing packed frames %s", array_path)
        return reused
    counts = [len(cache.entries[cache_id].frames) for cache_id in wanted]
    offsets = dict(zip(wanted, zip(np.cumsum([0] + counts[:-1]).tolist(), counts)))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_name(f".{array_path.name}.partial")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(sum(counts), size, size, 3))
    for cache_id in tqdm(wanted, desc=f"packing frames at {size} px", unit="video"):
        offset, count = offsets[cache_id]
        array[offset:offset + count] = [resize_square(f, size) for f in cache.read_frames(cache_id)]
    array.flush()
    del array
    os.replace(tmp, array_path)
    index = {"format": PACKED_FORMAT, "size": size, "cache_entries_sha256": cache_sha, "videos": offsets}
    atomic_write_text(index_path, json.dumps(index) + "\n")
    return PackedFrames(array_path, offsets, size)


def _entries_digest(cache, video_ids: list[str]) -> str:
    """sha256 of the cache's settings and of the entries of `video_ids` (sources, stamps, frame files, times)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cache.settings), sort_keys=True).encode())
    for video_id in video_ids:
        digest.update(json.dumps(dataclasses.asdict(cache.entries[video_id]), sort_keys=True).encode())
    return digest.hexdigest()


def _reusable_pack(index_path: Path, array_path: Path, *, cache_sha: str, size: int,
                   wanted: list[str]) -> PackedFrames | None:
    if not (index_path.is_file() and array_path.is_file()):
        return None
    index = json.loads(index_path.read_text())
    offsets = {key: tuple(value) for key, value in index.get("videos", {}).items()}
    same = (index.get("format") == PACKED_FORMAT and index.get("size") == size
            and index.get("cache_entries_sha256") == cache_sha and all(key in offsets for key in wanted))
    return PackedFrames(array_path, offsets, size) if same else None


# --- batches ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Batch:
    """frames uint8 [B, T, S, S, 3]; mask bool [B, T] (True = real frame); one caption per video; video indices;
    footage ids (a video's and its time-reversed twin's are equal: the same frames; None: every video its own)."""

    frames: torch.Tensor
    mask: torch.Tensor
    captions: list[str]
    videos: torch.Tensor
    footage_ids: torch.Tensor | None = None

    @property
    def footage(self) -> torch.Tensor:
        return self.videos if self.footage_ids is None else self.footage_ids

    def pin_memory(self) -> Batch:
        return dataclasses.replace(self, frames=self.frames.pin_memory(), mask=self.mask.pin_memory())


def seeded_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in key])


class TrainBatches(torch.utils.data.Dataset):
    """Item i is batch `start + i` of an epoch plan, its frame positions drawn from (seed, epoch, batch)."""

    def __init__(self, videos: Sequence[LoaderVideo], plan: list[list[tuple[int, int]]], store: FrameStore, *,
                 num_frames: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world: int = 1):
        self.videos, self.plan, self.store = videos, plan, store
        self.num_frames, self.seed, self.epoch, self.start = num_frames, seed, epoch, start
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __getitem__(self, i: int) -> Batch:
        index = self.start + i
        rng = seeded_rng(self.seed, self.epoch, index)
        drawn = [frame_positions(len(self.videos[v].frames), self.num_frames, rng=rng) for v, _ in self.plan[index]]
        share = slice(*_rank_share(len(self.plan[index]), self.rank, self.world))
        samples, drawn = self.plan[index][share], drawn[share]
        batch = _assemble([self.videos[v] for v, _ in samples], [p for p, _ in drawn], [m for _, m in drawn],
                          [self.videos[v].captions[c] for v, c in samples], [v for v, _ in samples], self.store)
        return dataclasses.replace(batch, footage_ids=torch.tensor([self.footage[v] for v, _ in samples]))

    @functools.cached_property
    def footage(self) -> list[int]:
        """Per video: the smaller of its own index and its twin's (when the twin is among these videos)."""
        index = {video.video_id: i for i, video in enumerate(self.videos)}
        return [min(i, index.get(video.twin, i)) if video.twin else i for i, video in enumerate(self.videos)]


def _rank_share(batch: int, rank: int, world: int) -> tuple[int, int]:
    """A contiguous slice per rank, so gathering the ranks' features in rank order rebuilds the global batch."""
    if batch % world:
        raise ValueError(f"batch of {batch} does not split evenly over {world} ranks")
    step = batch // world
    return rank * step, (rank + 1) * step


def _assemble(videos: list[LoaderVideo], positions: list[np.ndarray], masks: list[np.ndarray], captions: list[str],
              indices: list[int], store: FrameStore) -> Batch:
    frames = [store.read(video, p) for video, p in zip(videos, positions)]
    stacked = torch.stack(frames) if isinstance(frames[0], torch.Tensor) else torch.from_numpy(np.stack(frames))
    return Batch(stacked, torch.from_numpy(np.stack(masks)), captions, torch.tensor(indices))


class EvalVideos(torch.utils.data.Dataset):
    """Item i: (frames uint8 [T, S, S, 3], mask [T]) of video i at evenly spaced positions."""

    def __init__(self, videos: Sequence[LoaderVideo], store: FrameStore, *, num_frames: int):
        self.videos, self.store, self.num_frames = videos, store, num_frames

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions, mask = frame_positions(len(self.videos[i].frames), self.num_frames, rng=None)
        frames = self.store.read(self.videos[i], positions)
        return torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames, torch.from_numpy(mask)


def _unwrap(items: list[Batch]) -> Batch:
    return items[0]


class CacheBatches:
    """A training batch source over the cache: `steps_per_epoch`, and `epoch(e, start=k)` yielding Batches.

    Batches are built in `workers` processes (0: in this one), pinned when CUDA is available.

    `batch_size` is the global batch. Under torchrun every rank builds the same epoch plan and takes its contiguous
    share of each batch: DistributedSampler's per-epoch shuffle (`set_epoch`) without its dependence on the number of
    ranks, so a run resumed on another number of ranks sees the very batches an uninterrupted one would.
    """

    def __init__(self, videos: Sequence[LoaderVideo], store: FrameStore, *, batch_size: int, num_frames: int,
                 seed: int, workers: int, twins_in_batch: bool = False, rank: int = 0, world: int = 1):
        self.videos, self.store = list(videos), store
        self.batch_size, self.num_frames, self.seed, self.workers = batch_size, num_frames, seed, workers
        self.twins_in_batch, self.rank, self.world = twins_in_batch, rank, world
        if batch_size % world:
            raise ValueError(f"the global batch of {batch_size} does not split evenly over {world} ranks")
        self.steps_per_epoch = len(self.plan(0))

    def plan(self, epoch: int) -> list[list[tuple[int, int]]]:
        return epoch_plan(self.videos, batch_size=self.batch_size, seed=self.seed, epoch=epoch,
                          twins_in_batch=self.twins_in_batch)

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[Batch]:
        dataset = TrainBatches(self.videos, self.plan(epoch), self.store, num_frames=self.num_frames, seed=self.seed,
                               epoch=epoch, start=start, rank=self.rank, world=self.world)
        workers = self.workers if not isinstance(self.store, NvJpegFrames) else 0
        return iter(torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers,
                                                collate_fn=_unwrap, pin_memory=torch.cuda.is_available(),
                                                prefetch_factor=4 if workers else None))


def caption_table(videos: Sequence[LoaderVideo]) -> tuple[list[str], np.ndarray]:
    """All captions of `videos` in order, and the index of each caption's video (for `retrieval_metrics`)."""
    captions = [text for video in videos for text in video.captions]
    owner = np.array([i for i, video in enumerate(videos) for _ in video.captions], dtype=np.int64)
    return captions, owner
