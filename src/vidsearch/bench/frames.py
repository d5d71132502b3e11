"""Keyframe extraction: `vidsearch frames` against the seed's way, and reading the cache against decoding video.

The seed's way (§3.3): OpenCV reads every frame of a video in order, keeps the first of each second, and resizes
and crops the kept frames in Python; here it also writes them as JPEG so that both sides produce the same cache.
Ours: a demux-only pass for timestamps, only the needed frames decoded (others skipped when nothing refers to them),
only the kept frames converted and scaled, one worker process per core. Both run in this process's run, on the same
cores, over the same generated H.264 clips. Also reported: the cache's size as a share of the sources (seed: 29.9%)
and frames/s of reading keyframes back from the cache vs getting them by decoding the sources (seed: 14.6× faster
training steps).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vidsearch.bench.common import emit, log, summary
from vidsearch.config import FrameConfig
from vidsearch.video.cache import build_cache, open_cache
from vidsearch.video.encode import write_video
from vidsearch.video.samplers import evenly_spaced

WIDTH, HEIGHT, FPS = 640, 360, 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, help="clips to generate (default 20, quick 4)")
    parser.add_argument("--seconds", type=float, help="length of each clip (default 15, quick 5)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes for ours")
    parser.add_argument("--rounds", type=int, help="alternating rounds of both ways; the fastest of each counts "
                                                   "(default 3, quick 1): other work on the machine only adds time")


def run(args: argparse.Namespace) -> None:
    count = args.videos or (4 if args.quick else 20)
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    config = FrameConfig()
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        root = Path(tmp)
        sources = make_clips(root / "videos", count=count, seconds=seconds)
        source_bytes = sum(path.stat().st_size for path in sources)
        rounds = [(time_seed_way(sources, root / f"seed{r}", config),
                   time_ours(sources, root / f"ours{r}", config, workers=args.workers))
                  for r in range(args.rounds or (1 if args.quick else 3))]
        (seed_s, seed_frames), (ours_s, ours_frames) = min(seed for seed, _ in rounds), min(ours for _, ours in rounds)
        cache_fps = time_cache_reads(root / "ours0")
        cache_bytes = sum(path.stat().st_size for path in (root / "ours0" / "frames").rglob("*.jpg"))
    emit({"measure": "cache_size", "source_bytes": source_bytes, "cache_bytes": cache_bytes,
          "share": round(cache_bytes / source_bytes, 4)})
    emit({"measure": "frames_per_second", "cache_read": round(cache_fps, 1),
          "decode_seed_way": round(seed_frames / seed_s, 1), "decode_ours": round(ours_frames / ours_s, 1),
          "cache_vs_seed_decode": round(cache_fps / (seed_frames / seed_s), 2)})
    summary("frames", ratio=seed_s / ours_s, videos=count, seconds_each=seconds, size=f"{WIDTH}x{HEIGHT}@{FPS}",
            ours_videos_per_s=round(count / ours_s, 3), seed_videos_per_s=round(count / seed_s, 3),
            cache_share=round(cache_bytes / source_bytes, 4), workers=args.workers, rounds=len(rounds))


def make_clips(folder: Path, *, count: int, seconds: float) -> list[Path]:
    """H.264 clips of a textured background panning under a moving block, a different one per clip."""
    folder.mkdir(parents=True)
    log(f"generating {count} clips of {seconds:g} s, {WIDTH}x{HEIGHT} at {FPS} fps")
    return [write_video(folder / f"clip{i:03d}.mp4", _clip_frames(i, round(seconds * FPS)), fps=FPS)
            for i in range(count)]


def _clip_frames(seed: int, frames: int):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([(xx * c1 + yy * c2) % 256 for c1, c2 in rng.integers(1, 4, (3, 2))], axis=-1)
    background = (background * 0.8 + rng.integers(0, 50, (HEIGHT, WIDTH, 3))).astype(np.uint8)
    colour = rng.integers(0, 256, 3)
    for t in range(frames):
        frame = np.roll(background, 2 * t, axis=1)
        top, left = (40 + 3 * t) % (HEIGHT - 80), (5 * t) % (WIDTH - 120)
        frame[top:top + 80, left:left + 120] = colour
        yield frame


def time_ours(sources: list[Path], out: Path, config: FrameConfig, *, workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    report = build_cache(sources, out, config, workers=workers)
    elapsed = time.perf_counter() - started
    emit({"measure": "ours", "seconds": round(elapsed, 3), "videos": len(report.extracted), "frames": report.frames,
          "failed": len(report.failed), "workers": workers})
    return elapsed, report.frames


def time_seed_way(sources: list[Path], out: Path, config: FrameConfig) -> tuple[float, int]:
    started = time.perf_counter()
    frames = sum(seed_way(source, out / source.stem, config) for source in sources)
    elapsed = time.perf_counter() - started
    emit({"measure": "seed_way", "seconds": round(elapsed, 3), "videos": len(sources), "frames": frames})
    return elapsed, frames


def seed_way(source: Path, out: Path, config: FrameConfig) -> int:
    """The seed's keyframe extraction: every frame read in order, the first of each second kept, then resized."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    kept, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % round(fps / config.fps) == 0:
            kept.append(frame)
        index += 1
    capture.release()
    out.mkdir(parents=True)
    chosen = evenly_spaced(np.arange(len(kept)), num_frames=config.frames)
    for k, i in enumerate(chosen):
        cv2.imwrite(str(out / f"{k:04d}.jpg"), _resize_crop(kept[i], config.size),
                    [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    return len(chosen)


def _resize_crop(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    height, width = frame.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC)
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return resized[top:top + size, left:left + size]


def time_cache_reads(root: Path) -> float:
    """Keyframes per second read back from the cache as uint8 batches, as the training loader does."""
    cache = open_cache(root)
    started, frames = time.perf_counter(), 0
    for _ in range(3):
        for entry in cache.ok():
            frames += len(cache.read_frames(entry.id))
    fps = frames / (time.perf_counter() - started)
    emit({"measure": "cache_read", "frames": frames, "frames_per_s": round(fps, 1)})
    return fps
