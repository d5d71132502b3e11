"""`vidsearch ingest` end to end: videos/s on this machine (a decoder process per core, the model in the driver)
against the same job on a local Ray instance given the same cores (Ray Data tasks for keyframes, an encoder actor).

Each run ingests generated clips into a fresh cache and store: decoding, keyframes, encoding and every published
version included. Ray's start (`ray.init`) is measured once, apart; each Ray job still starts its own encoder actor
(the model is loaded once per actor), as a job on a cluster does. Two library sizes (`--videos SMALL,LARGE`, the
small one a prefix of the large one) split each executor's time into a fixed cost per job and a marginal cost per
video: `(t_large - t_small) / (LARGE - SMALL)`. Medians of `--repeat` runs after one warm-up run of each.
`ratio`: Ray's videos/s over the one-machine pipeline's at the large size (below 1: Ray's overhead).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from vidsearch.bench.common import emit, log, median, summary
from vidsearch.config import FrameConfig
from vidsearch.data.synthetic import generate_library
from vidsearch.ingest.job import ingest
from vidsearch.model.source import ModelSource

EXECUTORS = ("local", "ray")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", default="32,96", help="SMALL,LARGE: clips per job (even)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--size", type=int, default=160, help="clip width and height in pixels")
    parser.add_argument("--backbone", default="vidsearch-tiny", help="model architecture (random weights)")
    parser.add_argument("--batch-videos", type=int, default=8, help="videos per published store version")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="decoders, and Ray's CPUs")


def run(args: argparse.Namespace) -> None:
    import ray

    small, large = (8, 16) if args.quick else map(int, args.videos.split(","))
    if args.quick:
        args.seconds, args.repeat = 4.0, 1
    source = ModelSource(backbone=args.backbone, num_frames=12)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_library(root / "lib", videos=large, seed=0, size=args.size, seconds=args.seconds, fps=25.0)
        clips = sorted((root / "lib" / "videos").iterdir())
        started = time.perf_counter()
        ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - started
        emit({"bench": "ingest", "what": "ray_init", "seconds": round(ray_init_s, 2)})
        times = {(executor, count): [] for executor in EXECUTORS for count in (small, large)}
        for attempt in range(args.repeat + 1):
            for executor, count in times:
                seconds = _ingest_once(root, clips[:count], source, executor, args)
                emit({"bench": "ingest", "executor": executor, "run": attempt, "videos": count,
                      "seconds": round(seconds, 2), "videos_per_s": round(count / seconds, 2),
                      "warmup": attempt == 0})
                if attempt:
                    times[executor, count].append(seconds)
        ray.shutdown()
    figures = {}
    for executor in EXECUTORS:
        t_small, t_large = median(times[executor, small]), median(times[executor, large])
        per_video = (t_large - t_small) / (large - small)
        figures[executor] = {"videos_per_s": round(large / t_large, 2), "s_per_video": round(per_video, 3),
                             "fixed_s": round(t_small - small * per_video, 2)}
        emit({"bench": "ingest", "executor": executor, "videos": [small, large], **figures[executor]})
    summary("ingest", figures["ray"]["videos_per_s"] / figures["local"]["videos_per_s"], videos=large,
            cores=args.cores, backbone=args.backbone, local_videos_per_s=figures["local"]["videos_per_s"],
            ray_videos_per_s=figures["ray"]["videos_per_s"],
            ray_overhead_s_per_video=round(figures["ray"]["s_per_video"] - figures["local"]["s_per_video"], 3),
            ray_overhead_s_per_job=round(figures["ray"]["fixed_s"] - figures["local"]["fixed_s"], 2),
            ray_init_s=round(ray_init_s, 1))


def _ingest_once(root: Path, clips: list[Path], source: ModelSource, executor: str, args: argparse.Namespace) -> float:
    work = root / executor
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    report = ingest(clips, store_dir=work / "store", cache_dir=work / "cache", source=source,
                    config=FrameConfig(frames=12, size=224), ray_address="auto" if executor == "ray" else None,
                    batch_videos=args.batch_videos, workers=args.cores)
    seconds = time.perf_counter() - started
    if report.videos_added != len(clips):
        raise RuntimeError(f"{executor}: {report.summary()}")
    log(f"{executor}: {report.summary()}")
    return seconds
