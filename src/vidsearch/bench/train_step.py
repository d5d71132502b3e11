"""Seconds per training step and the loader's frames per second (the speed anchors of benchmarks/RESULTS.md, "train-step").

Steps: batch 32 × 12 frames of ViT-B/32 with random weights (the same compute as pretrained ones), through the real
`vidsearch.train.loop.train_step` (AdamW, clipping, the loss): fp32 full fine-tune (the reference), bf16 full, `aim`
and `aim+text` (bf16 autocast). On a GPU each step is timed with CUDA events and peak memory is
`torch.cuda.max_memory_allocated`; on a CPU with the wall clock and the process's peak RSS (monotonic: a later
configuration inherits an earlier one's peak). `--quick` uses a small batch (4 × 4 frames).

Loader: a keyframe cache of generated moving-shapes videos at 224 px, read for a whole epoch as training does, by
PIL in worker processes (JPEG), from the packed memory-mapped array, and by nvJPEG when CUDA is available.

Summary ratio: the fp32 reference's seconds per step over `aim+text`'s (the training issue's target on an H100:
≥ 4.5×, with `aim` ≤ 0.05 s and `aim+text` ≤ 0.06 s per step).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidsearch.bench.common import emit, log, median, summary
from vidsearch.config import ModelConfig, TrainConfig
from vidsearch.data.loader import Batch, CacheBatches, JpegFrames, NvJpegFrames, match_videos, pack_frames
from vidsearch.model.videoclip import TRAINING_MODES
from vidsearch.train.loop import model_config_for, resolve_precision, train_step, wrap_forward
from vidsearch.train.optim import build_optimizer, build_scheduler

CONFIGS = (("fp32-full", "full", "fp32"), ("bf16-full", "full", "bf16"), ("bf16-aim", "aim", "bf16"),
           ("bf16-aim+text", "aim+text", "bf16"))
CAPTION = "a red circle slides slowly to the left over a dark textured background"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, help="videos per step (default 32; --quick 4)")
    parser.add_argument("--frames", type=int, help="frames per video (default 12; --quick 4)")
    parser.add_argument("--steps", type=int, help="timed steps per configuration (default 20; --quick 3)")
    parser.add_argument("--configs", default=",".join(c[0] for c in CONFIGS))
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--loader-videos", type=int, help="videos in the loader's cache (default 256; --quick 16)")


def random_batch(batch: int, frames: int, size: int) -> Batch:
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8))
    return Batch(pixels, torch.ones(batch, frames, dtype=torch.bool), [CAPTION] * batch, torch.arange(batch))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_step(step, device: torch.device) -> float:
    if device.type != "cuda":
        began = time.perf_counter()
        step()
        return time.perf_counter() - began
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    step()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1000


def measure_config(name: str, mode: str, precision: str, args: argparse.Namespace, device: torch.device) -> dict:
    from vidsearch.model.videoclip import create_model

    torch.manual_seed(0)
    model = create_model(model_config_for(mode, ModelConfig(args.model, num_frames=args.frames))).to(device).train()
    config = TrainConfig(mode=mode, precision=precision, compile=args.compile, grad_checkpointing=args.grad_checkpointing)
    model.set_trainable(TRAINING_MODES[mode])
    if config.grad_checkpointing:
        model.clip.set_grad_checkpointing(True)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, total_steps=10_000, warmup=0.01)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    forward = wrap_forward(model, config, device, world=1)
    batch = random_batch(args.batch_size, args.frames, model.image_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        train_step(forward, model, batch, optimizer, scheduler, scaler, config=config,
                   precision=resolve_precision(precision, device), device=device)

    for _ in range(2 if device.type == "cuda" else 1):  # warm-up: allocator, cuDNN/kernels, compilation
        step()
    times = [time_step(step, device) for _ in range(args.steps)]
    report = model.parameter_report()["all"]
    record = {"bench": "train-step", "config": name, "mode": mode, "precision": precision, "batch": args.batch_size,
              "frames": args.frames, "s_per_step": round(median(times), 4), "peak_memory_mb": round(peak_memory_mb(device)),
              "trainable_m": round(report["trainable"] / 1e6, 2), "device": device.type, "compile": args.compile}
    emit(record)
    del model, optimizer, forward
    return record


def build_loader_cache(root: Path, videos: int) -> tuple[Path, Path]:
    from vidsearch.config import FrameConfig
    from vidsearch.data.synthetic import generate_library
    from vidsearch.video.cache import build_cache

    manifest = generate_library(root / "lib", videos=videos, size=224, seconds=12.0, fps=2.0)
    build_cache([root / "lib" / "videos"], root / "cache", FrameConfig(frames=12, size=224))
    return manifest, root / "cache"


def measure_loader(args: argparse.Namespace, device: torch.device, root: Path) -> list[dict]:
    from vidsearch.data.manifest import load_manifest
    from vidsearch.video.cache import open_cache

    manifest, cache_dir = build_loader_cache(root, args.loader_videos)
    cache = open_cache(cache_dir)
    videos = match_videos(load_manifest(manifest), cache, split=None, manifest_dir=manifest.parent)
    began = time.perf_counter()
    stores = {"jpeg-pil-workers": JpegFrames(cache, 224)}
    packed = pack_frames(cache, videos, size=224, out_dir=root / "run")
    pack_seconds = time.perf_counter() - began
    stores["packed-memmap"] = packed
    if device.type == "cuda":
        stores["nvjpeg"] = NvJpegFrames(cache, 224, device)
    records = []
    for name, store in stores.items():
        source = CacheBatches(videos, store, batch_size=min(args.batch_size, len(videos)), num_frames=args.frames,
                              seed=0, workers=2)
        began, frames = time.perf_counter(), 0
        for batch in source.epoch(0):
            frames += batch.frames.shape[0] * batch.frames.shape[1]
        seconds = time.perf_counter() - began
        record = {"bench": "train-step", "loader": name, "videos": len(videos), "frames": frames,
                  "frames_per_s": round(frames / seconds, 1), "workers": 2 if name != "nvjpeg" else 0}
        if name == "packed-memmap":
            record["pack_seconds"] = round(pack_seconds, 1)
        emit(record)
        records.append(record)
    return records


def run(args: argparse.Namespace) -> None:
    args.batch_size = args.batch_size or (4 if args.quick else 32)
    args.frames = args.frames or (4 if args.quick else 12)
    args.steps = args.steps or (3 if args.quick else 20)
    args.loader_videos = args.loader_videos or (16 if args.quick else 256)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log(f"train-step: {args.model}, batch {args.batch_size} × {args.frames} frames, {args.steps} steps, on {device}")
    wanted = args.configs.split(",")
    steps = {name: measure_config(name, mode, precision, args, device)
             for name, mode, precision in CONFIGS if name in wanted}
    with tempfile.TemporaryDirectory(prefix="vidsearch-loader-") as scratch:
        loaders = measure_loader(args, device, Path(scratch))
    fastest = min(r["s_per_step"] for r in steps.values())
    consumed = args.batch_size * args.frames / fastest
    reference, target = steps.get("fp32-full"), steps.get("bf16-aim+text")
    ratio = reference["s_per_step"] / target["s_per_step"] if reference and target else float("nan")
    summary("train-step", ratio, device=device.type, batch=args.batch_size, frames=args.frames,
            s_per_step={n: r["s_per_step"] for n, r in steps.items()},
            loader_frames_per_s={r["loader"]: r["frames_per_s"] for r in loaders},
            frames_per_s_consumed_by_fastest_step=round(consumed, 1),
            best_loader_over_consumption=round(max(r["frames_per_s"] for r in loaders) / consumed, 2))
