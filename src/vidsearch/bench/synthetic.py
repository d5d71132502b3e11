"""Synthetic temporal probe: can each fine-tuning mode tell a moving-shapes clip from its time-reversed twin?

From a tiny random CLIP (`vidsearch-tiny`: 64 px, 8 frames), stage 0 trains CLIP4Clip-meanP from scratch on
freshly rendered clips; stages (a) meanP, (b) `aim` (text frozen), (c) `aim+text`, (d) seqTransf (all weights)
each continue from stage 0's checkpoint. Every training batch holds clips with their time-reversed twins (hard
negatives); clips are rendered at the model's resolution straight into the batch (docs/architecture.md, "The synthetic library"; the "Synthetic temporal
probe": AdamW lr 5e-4, warm-up, cosine). A fixed test set of other clips (one caption each) gives text→video R@1/R@5,
the colour+shape accuracy of the top hit (+direction), and the reversed-twin accuracy: the share of test captions
scoring their own video above its twin (a tie, within float rounding, counts as wrong: mean pooling scores 0).

One JSON line per stage (steps, seconds, metrics); the summary's ratio is the best temporal stage's R@1 over stage
(a)'s: what seeing time adds, measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from vidsearch.bench.common import emit, log, summary
from vidsearch.config import ModelConfig, TrainConfig
from vidsearch.data.loader import Batch, LoaderVideo, seeded_rng
from vidsearch.data.synthetic import ClipSpec, captions_for, parse_caption, random_spec, render_clip
from vidsearch.eval.evaluate import similarity
from vidsearch.eval.metrics import metrics_from_ranks, text_to_video_ranks
from vidsearch.model.backbone import clip_config_for
from vidsearch.train.loop import build_model, train

ARCHITECTURE = "vidsearch-tiny"
FRAMES = 8
TIE = 1e-5  # twins' mean-pooled features differ only by float summation order: closer than this is a tie
STAGES = {  # name: (mode, head); every stage but the first continues from the first's checkpoint
    "0-meanP-scratch": ("full", "meanP"),
    "a-meanP": ("full", "meanP"),
    "b-aim": ("aim", "meanP"),
    "c-aim+text": ("aim+text", "meanP"),
    "d-seqTransf": ("full", "seqTransf"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, help="steps per stage (default 2000; --quick 60)")
    parser.add_argument("--batch-size", type=int, help="clips per batch, twins included (default 64; --quick 16)")
    parser.add_argument("--test-videos", type=int, help="test clips, twin pairs (default 400; --quick 40)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ", ".join(STAGES))
    parser.add_argument("--workdir", type=Path, help="where stage checkpoints go (default: a temp dir)")


class StreamingShapes:
    """Fresh clips for every batch, half of them the other half's twins; batch i of an epoch is a function of
    (seed, epoch, i), like the cache loader's, so a run is reproducible and resumable."""

    def __init__(self, *, batch_size: int, steps: int, size: int, seed: int = 1):
        if batch_size % 2:
            raise ValueError("the batch holds twin pairs: batch size must be even")
        self.batch_size, self.steps_per_epoch, self.size, self.seed = batch_size, steps, size, seed

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[Batch]:
        for index in range(start, self.steps_per_epoch):
            yield self.batch(seeded_rng(self.seed, epoch, index))

    def batch(self, rng: np.random.Generator) -> Batch:
        clips, captions = [], []
        for _ in range(self.batch_size // 2):
            spec, caption_seed = random_spec(rng), int(rng.integers(2**31))
            clip = render_clip(spec, frames=FRAMES, size=self.size)
            clips += [clip, clip[::-1]]
            captions += [captions_for(s, np.random.default_rng(caption_seed), count=1)[0] for s in (spec, spec.twin())]
        frames = torch.from_numpy(np.ascontiguousarray(np.stack(clips)))
        return Batch(frames, torch.ones(frames.shape[:2], dtype=torch.bool), captions, torch.arange(len(clips)))


class ArrayFrames:
    """An in-memory FrameStore: video i's frames are row i of a uint8 [V, T, S, S, 3] array."""

    def __init__(self, frames: np.ndarray):
        self.frames, self.size = frames, frames.shape[2]

    def read(self, video: LoaderVideo, positions: np.ndarray) -> np.ndarray:
        return self.frames[int(video.cache_id)][positions]


@dataclasses.dataclass
class TestSet:
    specs: list[ClipSpec]
    videos: list[LoaderVideo]
    store: ArrayFrames


def make_test_set(pairs: int, *, size: int, seed: int = 12345) -> TestSet:
    """`pairs` clips and their twins (video 2k+1 is 2k's twin), one caption each, from a seed training never uses."""
    rng = np.random.default_rng(seed)
    specs, clips, videos = [], [], []
    for k in range(pairs):
        spec, caption_seed = random_spec(rng), int(rng.integers(2**31))
        for j, variant in enumerate((spec, spec.twin())):
            specs.append(variant)
            clips.append(render_clip(variant, frames=FRAMES, size=size))
            caption = captions_for(variant, np.random.default_rng(caption_seed), count=1)[0]
            videos.append(LoaderVideo(f"test{k}{'ab'[j]}", str(2 * k + j), tuple(range(FRAMES)), (caption,)))
    return TestSet(specs, videos, ArrayFrames(np.stack(clips)))


def score(model, test: TestSet, *, device: torch.device) -> dict[str, float]:
    """t→v R@1/R@5, colour+shape (+direction) accuracy of the top hit, reversed-twin accuracy, all in %."""
    sim, caption_video = similarity(model, test.videos, test.store, device=device)
    t2v = metrics_from_ranks(text_to_video_ranks(sim, caption_video))
    top = sim.argmax(axis=1)
    asked = [parse_caption(video.captions[0]) for video in test.videos]
    found = [(test.specs[v].colour, test.specs[v].shape, test.specs[v].direction) for v in top]
    twin = caption_video ^ 1  # videos 2k and 2k+1 are twins
    own, other = sim[np.arange(len(sim)), caption_video], sim[np.arange(len(sim)), twin]
    return {"t2v_R@1": t2v.r1, "t2v_R@5": t2v.r5,
            "colour_shape": 100.0 * np.mean([a[:2] == f[:2] for a, f in zip(asked, found)]),
            "colour_shape_direction": 100.0 * np.mean([a == f for a, f in zip(asked, found)]),
            "twins": 100.0 * float(np.mean(own > other + TIE))}


def run_stage(name: str, *, init: Path | None, out: Path, args: argparse.Namespace, test: TestSet,
              device: torch.device) -> dict:
    mode, head = STAGES[name]
    model = build_model(ModelConfig(backbone=ARCHITECTURE, head=head, num_frames=FRAMES), mode=mode, init=init)
    torch.manual_seed(0)
    source = StreamingShapes(batch_size=args.batch_size, steps=args.steps, size=model.image_size)
    config = TrainConfig(mode=mode, epochs=1, batch_size=args.batch_size, lr=args.lr, coef_lr=1.0,
                         warmup=min(0.5, args.warmup_steps / args.steps), workers=0, val_split="none",
                         max_words=model.clip.context_length, log_every=max(1, args.steps // 20))
    result = train(model, source, config, out / name, device=device)
    record = {"stage": name, "mode": mode, "head": head, "init": str(init.parent.name) if init else None,
              "steps": args.steps, "batch": args.batch_size, "seconds": round(result.seconds, 1),
              "s_per_step": round(result.seconds / args.steps, 4), "device": device.type,
              **{k: round(v, 2) for k, v in score(model, test, device=device).items()}}
    emit({"bench": "synthetic", **record})
    return record | {"checkpoint": result.last}


def run(args: argparse.Namespace) -> None:
    args.steps = args.steps or (60 if args.quick else 2000)
    args.batch_size = args.batch_size or (16 if args.quick else 64)
    pairs = (args.test_videos or (40 if args.quick else 400)) // 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stages = [s.strip() for s in args.stages.split(",")]
    unknown = set(stages) - set(STAGES)
    if unknown or stages[0] != "0-meanP-scratch":
        raise SystemExit(f"stages must start with 0-meanP-scratch and come from {', '.join(STAGES)}")
    with tempfile.TemporaryDirectory(prefix="vidsearch-synthetic-") as scratch:
        out = args.workdir or Path(scratch)
        test = make_test_set(pairs, size=clip_config_for(ARCHITECTURE)["vision_cfg"]["image_size"])
        log(f"synthetic: {args.steps} steps/stage, batch {args.batch_size}, {2 * pairs} test clips, on {device}")
        results = {}
        for name in stages:
            init = results["0-meanP-scratch"]["checkpoint"] if name != "0-meanP-scratch" else None
            results[name] = run_stage(name, init=init, out=out, args=args, test=test, device=device)
    baseline = results.get("a-meanP", results["0-meanP-scratch"])
    best = max((results[n] for n in ("b-aim", "c-aim+text", "d-seqTransf") if n in results),
               key=lambda r: r["t2v_R@1"], default=baseline)
    summary("synthetic", best["t2v_R@1"] / max(baseline["t2v_R@1"], 1e-9),
            best_temporal_stage=best["stage"], best_t2v_R1=best["t2v_R@1"], meanP_t2v_R1=baseline["t2v_R@1"],
            twins={n: r["twins"] for n, r in results.items()},
            seconds={n: r["seconds"] for n, r in results.items()}, steps_per_stage=args.steps)
