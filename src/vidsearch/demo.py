"""`vidsearch demo`: the whole pipeline on a fresh machine with embedded defaults.

    synth (moving shapes) → frames (keyframe cache) → checkpoint (shipped, or --retrain) → index (+ caption DB) → serve

Everything lives under one work directory, and every stage reuses what an earlier run left there, so a second
`vidsearch demo` serves within seconds. The shipped checkpoint (`assets/demo-checkpoint/`) is a tiny CLIP trained on
another moving-shapes library by TRAINING_RECIPE below — the exact commands `--retrain` runs, also written out with the
checkpoint's training log and metrics in that directory's RECIPE.md.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = Path(__file__).parent / "assets" / "demo-checkpoint"
# The same model exported for ONNX Runtime (`vidsearch export`, fp32: the checkpoint's vectors and fingerprint): the
# demo indexes and serves with it, so the core install (no PyTorch) runs the demo.
SHIPPED_EXPORTED = Path(__file__).parent / "assets" / "demo-onnx"
DEMO_VIDEOS = 300
DEMO_SEED = 0
FRAMES = 8
FRAME_SIZE = 48

# The shipped checkpoint's recipe, as `vidsearch` command lines relative to a training directory: a moving-shapes
# library of another seed and its keyframe cache; a CLIP4Clip stage (meanP, everything trained) from random weights;
# AIM adapters with the text tower frozen, then with it; then AIM + text again on a five times larger library.
# Twins share a batch with parallel captions ("…moves left" against its own "…moves right"): the hard negatives that
# only temporal modelling tells apart. Direction is learned late: mean pooling cannot see it and, after the CLIP4Clip
# stage, neither tower separates the twins, so each gives the other almost no signal; about 1 500 AIM + text steps in,
# the two begin to move together, and the larger library then takes it to the figures in RECIPE.md. Four more runs on
# the larger library teach search by example (RECIPE.md, "Search by example").
_COMMON = ["--batch-size", "64", "--lr", "5e-4", "--coef-lr", "1", "--warmup", "0.05", "--weight-decay", "0.05",
           "--twins-in-batch", "--seed", "0", "--workers", "1"]
_LARGE = ["--data", "library-large/manifest.jsonl", "--frames", "cache-large", "--mode", "aim+text"]
TRAINING_RECIPE: list[list[str]] = [
    ["synth", "--out", "library", "--videos", "2000", "--seed", "1"],
    ["frames", "library/videos", "--out", "cache", "--size", str(FRAME_SIZE), "--frames", str(FRAMES)],
    ["train", "--data", "library/manifest.jsonl", "--frames", "cache", "--out", "clip4clip", "--mode", "full",
     "--head", "meanP", "--model", "vidsearch-demo", "--frames-per-video", str(FRAMES), "--epochs", "15", *_COMMON],
    ["train", "--data", "library/manifest.jsonl", "--frames", "cache", "--out", "aim", "--mode", "aim",
     "--init", "clip4clip/best", "--epochs", "18", *_COMMON],
    ["train", "--data", "library/manifest.jsonl", "--frames", "cache", "--out", "aim-text", "--mode", "aim+text",
     "--init", "aim/best", "--epochs", "18", *_COMMON],
    ["synth", "--out", "library-large", "--videos", "10000", "--seed", "1"],
    ["frames", "library-large/videos", "--out", "cache-large", "--size", str(FRAME_SIZE), "--frames", str(FRAMES)],
    ["train", "--data", "library-large/manifest.jsonl", "--frames", "cache-large", "--out", "aim-text-large",
     "--mode", "aim+text", "--init", "aim-text/epoch-18", "--epochs", "6", *_COMMON],
    # Search by example: the same data with `--example-weight`, so that video↔video and frame↔video neighbours follow
    # the captions' (train/loss.py `example_loss`), in runs of rising weight, the last at a lower scale (the term
    # taught the video features shape slowly: a linear probe read it from 34 % of test videos before, 87 % after the
    # second run).
    ["train", *_LARGE, "--out", "examples", "--init", "aim-text-large/best", "--epochs", "3", *_COMMON,
     "--example-weight", "1", "--lr", "2e-4"],
    ["train", *_LARGE, "--out", "examples2", "--init", "examples/epoch-3", "--epochs", "8", *_COMMON,
     "--example-weight", "2", "--seed", "1"],
    ["train", *_LARGE, "--out", "examples3", "--init", "examples2/epoch-8", "--epochs", "10", *_COMMON,
     "--example-weight", "4", "--seed", "2"],
    ["train", *_LARGE, "--out", "examples4", "--init", "examples3/epoch-10", "--epochs", "5", *_COMMON,
     "--example-weight", "4", "--example-scale", "10", "--seed", "3"],
    # Then `--example-motion`: a footage's captions averaged with its time-reversed twin's say what it shows, so
    # videos of the same thing moving another way count as alike ("more like this" looks for those); 0.3, then 0
    # (stopped after one of four epochs: `--steps`), then 0 again with twice the batch at a lower rate.
    ["train", *_LARGE, "--out", "motion1", "--init", "examples4/epoch-5", "--epochs", "3", *_COMMON,
     "--example-weight", "4", "--example-scale", "10", "--example-motion", "0.3", "--seed", "4"],
    ["train", *_LARGE, "--out", "motion2", "--init", "motion1/epoch-3", "--epochs", "4", "--steps", "546", *_COMMON,
     "--example-weight", "4", "--example-scale", "10", "--example-motion", "0", "--seed", "5"],
    ["train", *_LARGE, "--out", "motion6", "--init", "motion2/epoch-1", "--epochs", "3", *_COMMON,
     "--batch-size", "128", "--lr", "3e-4", "--example-weight", "4", "--example-scale", "10", "--example-motion", "0",
     "--seed", "9"],
    ["evaluate", "--checkpoint", "motion6/epoch-3", "--data", "library-large/manifest.jsonl", "--frames",
     "cache-large", "--dsl"],
]
TRAINED_CHECKPOINT = "motion6/epoch-3"

EXAMPLE_QUERIES = ["a red circle moves to the left", "a blue square slides upwards", "a green triangle moving down",
                   "a yellow star drifts towards the right edge"]


@dataclass
class DemoPaths:
    workdir: Path

    @property
    def library(self) -> Path:
        return self.workdir / "library"

    @property
    def manifest(self) -> Path:
        return self.library / "manifest.jsonl"

    @property
    def cache(self) -> Path:
        return self.workdir / "cache"

    @property
    def store(self) -> Path:
        return self.workdir / "store"

    @property
    def training(self) -> Path:
        return self.workdir / "training"


@dataclass
class DemoReport:
    paths: DemoPaths
    checkpoint: Path
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_demo(*, workdir: str | Path, retrain: bool = False, videos: int = DEMO_VIDEOS) -> DemoReport:
    """Run every stage that has not run yet; return where things are and how long each stage took."""
    paths = DemoPaths(Path(workdir).resolve())
    paths.workdir.mkdir(parents=True, exist_ok=True)
    report = DemoReport(paths, SHIPPED_CHECKPOINT)
    _timed(report, "synth", lambda: _synthesise(paths, videos))
    _timed(report, "frames", lambda: _extract(paths))
    if retrain:
        report.checkpoint = _timed(report, "train", lambda: _retrain(paths))
    _timed(report, "index", lambda: _index(paths, report.checkpoint))
    return report


def _timed(report: DemoReport, stage: str, fn):
    started = time.perf_counter()
    result = fn()
    report.seconds[stage] = round(time.perf_counter() - started, 1)
    print(f"demo: {stage} done in {report.seconds[stage]:.1f} s", flush=True)
    return result


def _synthesise(paths: DemoPaths, videos: int) -> None:
    from vidsearch.data.synthetic import generate_library

    if not paths.manifest.is_file():
        generate_library(paths.library, videos=videos, seed=DEMO_SEED)


def _extract(paths: DemoPaths) -> None:
    from vidsearch.config import FrameConfig
    from vidsearch.video.cache import build_cache

    report = build_cache([paths.library / "videos"], paths.cache, FrameConfig(frames=FRAMES, size=FRAME_SIZE))
    if report.failed:
        first = report.failed[0]
        raise RuntimeError(f"{len(report.failed)} demo video(s) failed keyframe extraction, e.g. {first.id}: "
                           f"{first.error['code']}: {first.error['message']}")


def _retrain(paths: DemoPaths) -> Path:
    """Run TRAINING_RECIPE in the work directory (each command resumable or skipped when done)."""
    import contextlib
    import os

    from vidsearch.cli import main as cli

    paths.training.mkdir(exist_ok=True)
    with contextlib.chdir(paths.training):
        for argv in TRAINING_RECIPE:
            if _already_done(argv):
                continue
            print("demo: vidsearch " + " ".join(argv), flush=True)
            if cli(argv) not in (0, None):
                raise RuntimeError(f"demo training step failed: vidsearch {' '.join(argv)}")
        return Path(os.getcwd()) / TRAINED_CHECKPOINT


def _already_done(argv: list[str]) -> bool:
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
    if argv[0] == "synth":
        return (out / "manifest.jsonl").is_file()
    if argv[0] == "train":
        return (out / "best" / "config.json").is_file()
    return False


def _index(paths: DemoPaths, checkpoint: Path) -> None:
    from vidsearch.data.manifest import load_manifest
    from vidsearch.model.source import ModelSource
    from vidsearch.store.indexer import index_cache
    from vidsearch.store.store import Store, StoreNotFound
    from vidsearch.web.setup import load_caption_database

    shipped = checkpoint == SHIPPED_CHECKPOINT
    source = ModelSource(exported=str(SHIPPED_EXPORTED)) if shipped else ModelSource(checkpoint=str(checkpoint))
    model = source.load()
    try:
        rebuild = Store.open(paths.store).fingerprint != model.fingerprint
    except StoreNotFound:
        rebuild = True
    if rebuild and paths.store.exists():
        shutil.rmtree(paths.store)
    records = load_manifest(paths.manifest)
    report = index_cache(model=model, source=source, cache_dir=paths.cache, store_dir=paths.store, records=records)
    if report.videos_added:
        load_caption_database(store_dir=paths.store, manifest=paths.manifest)


def held_out_captions(paths: DemoPaths) -> list[tuple[str, str]]:
    """(caption, video id) for every caption of the demo library's test split."""
    from vidsearch.data.manifest import load_manifest

    return [(caption, r.video_id) for r in load_manifest(paths.manifest) if r.split == "test" for caption in r.captions]

