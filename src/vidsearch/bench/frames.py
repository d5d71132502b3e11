"""Keyframe extraction per core: `vidsearch frames` against the thesis' OpenCV loop.

The thesis' way (§3.3): OpenCV reads every frame of a video in order, keeps the first of each second, and resizes and
crops the kept frames in Python; here it also writes them as JPEG so that both sides produce the same cache. Ours
(`build_cache`): a demux-only pass for timestamps, then only what the sampled frames depend on is decoded (groups of
pictures without one are skipped, frames nobody refers to are dropped), and only the kept frames are converted and
scaled; each file in a child process with a time limit.

Headline `ratio`, per core: the CPU time (user + system, this process and its children) the thesis' loop in one
process takes over ours with one worker, both pinned to the same single core, in alternating rounds (the least of each
counts); CPU time, unlike wall time, does not grow with other work on a shared machine. `ratio_wall` is the same
comparison in wall time. Beside it, per core and against the same loop: `--keyframes-only` (intra frames only, fewer
keyframes where they are far apart) and the maxdiff sampler (which decodes every frame to score it); and
`ratio_workers`: ours with `--workers` processes on all cores against the loop in one process on all cores, in wall
time. Also reported: the cache's size as a share of the sources (thesis: 29.9%). The clips are H.264 from libx264
with its default keyframe interval (250 frames) unless `--keyint` says otherwise; `frames` in each line says how many
keyframes each side kept.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from vidsearch.bench.common import emit, log, summary
from vidsearch.config import FrameConfig
from vidsearch.video.cache import build_cache
from vidsearch.video.encode import write_video
from vidsearch.video.samplers import evenly_spaced

WIDTH, HEIGHT, FPS = 640, 360, 30
MODES = {"uniform": FrameConfig(), "keyframes_only": FrameConfig(keyframes_only=True),
         "maxdiff": FrameConfig(sampler="maxdiff")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, help="clips to generate (default 20, quick 4)")
    parser.add_argument("--seconds", type=float, help="length of each clip (default 15, quick 5)")
    parser.add_argument("--keyint", type=int, help="frames between intra frames in the clips (default: libx264's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes for ours on all cores (ratio_workers)")
    parser.add_argument("--rounds", type=int, help="alternating rounds of every side; the fastest of each counts "
                                                   "(default 3, quick 1)")


def run(args: argparse.Namespace) -> None:
    import cv2  # noqa: F401 (loaded before timing: the thesis' loop is timed warm, ours with its worker's start)

    count = args.videos or (4 if args.quick else 20)
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        root = Path(tmp)
        sources = make_clips(root / "videos", count=count, seconds=seconds, keyint=args.keyint)
        source_bytes = sum(path.stat().st_size for path in sources)
        best: dict[str, Timing] = {}
        for r in range(rounds):
            for side, timing in one_round(sources, root / f"round{r}", workers=args.workers):
                best[side] = Timing(*(min(a, b) for a, b in zip(best.get(side, timing), timing)))
        cache_bytes = sum(path.stat().st_size for path in (root / "round0" / "uniform" / "frames").rglob("*.jpg"))
    emit({"measure": "cache_size", "source_bytes": source_bytes, "cache_bytes": cache_bytes,
          "share": round(cache_bytes / source_bytes, 4)})
    seed = best["seed"]
    summary("frames", ratio=seed.cpu / best["uniform"].cpu,
            ratio_keyframes_only=round(seed.cpu / best["keyframes_only"].cpu, 3),
            ratio_maxdiff=round(seed.cpu / best["maxdiff"].cpu, 3),
            ratio_wall=round(seed.wall / best["uniform"].wall, 3),
            ratio_workers=round(best["seed_all_cores"].wall / best["workers"].wall, 3),
            videos_per_cpu_s={side: round(count / best[side].cpu, 3) for side in ("seed", *MODES)},
            keyframes_per_video={side: round(best[side].frames / count, 2) for side in ("seed", *MODES)},
            videos=count, seconds_each=seconds, size=f"{WIDTH}x{HEIGHT}@{FPS}", keyint=args.keyint or "libx264",
            cache_share=round(cache_bytes / source_bytes, 4), workers=args.workers, rounds=rounds)


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # user + system seconds of this process and the children it waited for
    frames: int  # keyframes written


@contextmanager
def timed() -> Iterator[list[float]]:
    """[wall seconds, CPU seconds] of the block, filled in when it ends."""
    def cpu() -> float:
        return sum(usage.ru_utime + usage.ru_stime for usage in (resource.getrusage(resource.RUSAGE_SELF),
                                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
    result, wall, start = [], time.perf_counter(), cpu()
    yield result
    result.extend([time.perf_counter() - wall, cpu() - start])


def one_round(sources: list[Path], out: Path, *, workers: int) -> Iterator[tuple[str, Timing]]:
    """(side, its timing) of every side once: per core first, then all cores."""
    with one_core() as core:
        yield "seed", time_seed_way(sources, out / "seed", core=core)
        for mode, config in MODES.items():
            yield mode, time_ours(sources, out / mode, config, workers=1, mode=mode, core=core)
    yield "seed_all_cores", time_seed_way(sources, out / "seed_all_cores", core=None)
    yield "workers", time_ours(sources, out / "workers", MODES["uniform"], workers=workers, mode="uniform", core=None)


@contextmanager
def one_core() -> Iterator[int]:
    """This process and the children it starts meanwhile run on one core only (the first one allowed)."""
    allowed = os.sched_getaffinity(0)
    core = min(allowed)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, allowed)


def make_clips(folder: Path, *, count: int, seconds: float, keyint: int | None = None) -> list[Path]:
    """H.264 clips of a textured background panning under a moving block, a different one per clip."""
    folder.mkdir(parents=True)
    log(f"generating {count} clips of {seconds:g} s, {WIDTH}x{HEIGHT} at {FPS} fps, keyint {keyint or 'libx264'}")
    options = {"g": str(keyint)} if keyint else None
    return [write_video(folder / f"clip{i:03d}.mp4", _clip_frames(i, round(seconds * FPS)), fps=FPS, options=options)
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


def time_ours(sources: list[Path], out: Path, config: FrameConfig, *, workers: int, mode: str,
              core: int | None) -> Timing:
    with timed() as clock:
        report = build_cache(sources, out, config, workers=workers)
    elapsed, cpu = clock
    emit({"measure": "ours", "mode": mode, "core": core, "workers": workers, "seconds": round(elapsed, 3),
          "cpu_seconds": round(cpu, 3), "videos": len(report.extracted), "frames": report.frames,
          "failed": len(report.failed)})
    return Timing(elapsed, cpu, report.frames)


def time_seed_way(sources: list[Path], out: Path, *, core: int | None) -> Timing:
    with timed() as clock:
        frames = sum(seed_way(source, out / source.stem, MODES["uniform"]) for source in sources)
    elapsed, cpu = clock
    emit({"measure": "seed_way", "core": core, "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
          "videos": len(sources), "frames": frames})
    return Timing(elapsed, cpu, frames)


def seed_way(source: Path, out: Path, config: FrameConfig) -> int:
    """The thesis' keyframe extraction: every frame read in order, the first of each second kept, then resized."""
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
