"""`vidsearch ingest` end to end: videos/s on this machine (a decoder process per core, the model in the driver)
against the same job on a local Ray instance given the same cores (Ray Data tasks for keyframes, an encoder actor).

Each run ingests the same generated clips into a fresh cache and store: decoding, keyframes, encoding and every
published version included. Ray's start (`ray.init`) is measured once, apart; each Ray run still starts its own
encoder actor (the model is loaded once per actor), as a job on a cluster does. Medians of `--repeat` runs after one
warm-up run of each. `ratio`: Ray's videos/s over the one-machine pipeline's (below 1: Ray's overhead).
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=32, help="clips in the library (even)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--size", type=int, default=160, help="clip width and height in pixels")
    parser.add_argument("--backbone", default="vidsearch-tiny", help="model architecture (random weights)")
    parser.add_argument("--batch-videos", type=int, default=8, help="videos per published store version")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="decoders, and Ray's CPUs")


def run(args: argparse.Namespace) -> None:
    import ray

    if args.quick:
        args.videos, args.seconds, args.repeat = 8, 4.0, 1
    source = ModelSource(backbone=args.backbone, num_frames=12)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_library(root / "lib", videos=args.videos, seed=0, size=args.size, seconds=args.seconds, fps=25.0)
        started = time.perf_counter()
        ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - started
        emit({"bench": "ingest", "what": "ray_init", "seconds": round(ray_start_s, 2)})
        times = {"local": [], "ray": []}
        for attempt in range(args.repeat + 1):
            for executor in times:
                seconds = _ingest_once(root, source, executor, args)
                emit({"bench": "ingest", "executor": executor, "run": attempt, "videos": args.videos,
                      "seconds": round(seconds, 2), "videos_per_s": round(args.videos / seconds, 2),
                      "warmup": attempt == 0})
                if attempt:
                    times[executor].append(seconds)
        ray.shutdown()
    local_s, ray_s = median(times["local"]), median(times["ray"])
    summary("ingest", local_s / ray_s, videos=args.videos, cores=args.cores, backbone=args.backbone,
            local_videos_per_s=round(args.videos / local_s, 2), ray_videos_per_s=round(args.videos / ray_s, 2),
            ray_overhead_s_per_video=round((ray_s - local_s) / args.videos, 3), ray_init_s=round(ray_start_s, 1))


def _ingest_once(root: Path, source: ModelSource, executor: str, args: argparse.Namespace) -> float:
    work = root / executor
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    report = ingest([root / "lib" / "videos"], store_dir=work / "store", cache_dir=work / "cache", source=source,
                    config=FrameConfig(frames=12, size=224), ray_address="auto" if executor == "ray" else None,
                    batch_videos=args.batch_videos, workers=args.cores)
    seconds = time.perf_counter() - started
    if report.videos_added != args.videos:
        raise RuntimeError(f"{executor}: {report.summary()}")
    log(f"{executor}: {report.summary()}")
    return seconds
