"""`vidsearch train`: join the manifest to the keyframe cache, build the model and the batches, and call the loop.

Validation picks the best checkpoint on the `val` split by default. A manifest without one is an error unless the
run says what to do instead: `val_split="test"` (selection on the test split, logged as such: its test figures are
then optimistic) or `val_split="none"` (no selection, every epoch's checkpoint kept).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from vidsearch.config import ModelConfig, TrainConfig, to_dict
from vidsearch.data.loader import CacheBatches, LoaderVideo, match_videos, pack_frames
from vidsearch.data.manifest import load_manifest
from vidsearch.data.synthetic import SYNTHETIC_LIBRARY, is_synthetic_library
from vidsearch.eval.evaluate import evaluate_model
from vidsearch.fsutil import atomic_write_text
from vidsearch.distributed import barrier, setup_distributed, shutdown_distributed
from vidsearch.train.loop import VAL_SPLITS, TrainResult, build_model, model_config_for, resolve_precision, train

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunRequest:
    """Everything `vidsearch train` was asked; saved as RUN/run.json, and a resumed run must ask the same."""

    data: str
    frames: str
    model: ModelConfig
    train: TrainConfig
    weights: str | None = None
    pretrained: str | None = None
    init: str | None = None

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "model": to_dict(self.model), "train": to_dict(self.train)}


def validation_videos(records, cache, *, split: str, manifest_dir: Path) -> list[LoaderVideo] | None:
    """The videos that pick the best checkpoint, or None for `none`; refuses to fall back to test silently."""
    if split not in VAL_SPLITS:
        raise ValueError(f"validation split must be one of {', '.join(VAL_SPLITS)}, not {split!r}")
    if split == "none":
        return None
    videos = match_videos(records, cache, split=split, manifest_dir=manifest_dir)
    if not videos and split == "val":
        raise ValueError("the manifest has no 'val' split to pick the best checkpoint on: pass --val-split test to "
                         "select on the test split (its test figures are then optimistic), or --val-split none")
    if split == "test":
        log.warning("selecting the best checkpoint on the TEST split, as asked: report its test figures as such")
    return videos


def check_resumable(out: Path, request: RunRequest) -> None:
    saved = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else None
    if saved is None or not (out / "state" / "trainer.json").is_file():
        raise ValueError(f"{out}: nothing to resume (no run.json and state/)")
    asked = json.loads(json.dumps(request.as_dict()))
    changed = sorted(k for k in asked if asked[k] != saved.get(k))
    if changed:
        raise ValueError(f"--resume must repeat the interrupted run's settings; these differ: {', '.join(changed)}")


def run_training(request: RunRequest, out: str | Path, *, resume: bool = False,
                 max_steps: int | None = None) -> TrainResult:
    """Load, pack, build, train. `max_steps` stops early (the schedule still spans all epochs), state saved.

    Under torchrun each rank runs this; `request.train.batch_size` is the global batch, split evenly over the ranks.
    """
    out = Path(out)
    if resume:
        check_resumable(out, request)
    rank, world, device = setup_distributed()
    result = _run(request, out, resume=resume, max_steps=max_steps, rank=rank, world=world, device=device)
    # Not in a `finally`: a rank that failed must exit (torchrun then stops the others), not wait at a barrier.
    shutdown_distributed()
    return result


def _run(request: RunRequest, out: Path, *, resume: bool, max_steps: int | None, rank: int, world: int,
         device) -> TrainResult:
    from vidsearch.model.checkpoint import load_checkpoint
    from vidsearch.video.cache import open_cache

    records, cache = load_manifest(request.data), open_cache(request.frames)
    manifest_dir = Path(request.data).parent
    train_videos = match_videos(records, cache, split="train", manifest_dir=manifest_dir)
    if not train_videos:
        raise ValueError(f"{request.data}: no training videos with keyframes in {request.frames}")
    val_videos = validation_videos(records, cache, split=request.train.val_split, manifest_dir=manifest_dir)
    config = model_config_for(request.train.mode, request.model)
    # The seed decides everything random in a run: fresh layers (adapters, heads, random weights) here, the batches
    # in the loader. A resumed run then restores the saved generator state.
    torch.manual_seed(request.train.seed)
    model = (load_checkpoint(out / "state", precision=config.precision) if resume else
             build_model(config, mode=request.train.mode, init=request.init, weights=request.weights,
                         pretrained=request.pretrained))
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        atomic_write_text(out / "run.json", json.dumps(request.as_dict(), indent=2) + "\n")
    else:
        barrier()  # wait for rank 0's pack, then reuse it
    store = pack_frames(cache, train_videos + (val_videos or []), size=model.image_size, out_dir=out)
    if rank == 0:
        barrier()
    source = CacheBatches(train_videos, store, batch_size=request.train.batch_size, num_frames=config.num_frames,
                          seed=request.train.seed, workers=request.train.workers,
                          twins_in_batch=request.train.twins_in_batch, rank=rank, world=world)
    precision = resolve_precision(request.train.precision, device)

    def validate(trained):
        return evaluate_model(trained, val_videos, store, split=request.train.val_split, device=device,
                              precision=precision, max_words=request.train.max_words)

    log.info("%d training videos (%d steps per epoch), %s validation videos", len(train_videos),
             source.steps_per_epoch, len(val_videos) if val_videos is not None else "no")
    return train(model, source, request.train, out, validate=validate if val_videos else None, max_steps=max_steps,
                 resume=resume, device=device, rank=rank, world=world,
                 extra={"init": relative_to_run(request.init, out), "data": relative_to_run(request.data, out),
                        **_training_library(records)})


def relative_to_run(path: str | None, run_dir: Path) -> str | None:
    """A path as seen from the run directory: a checkpoint then names no directory of the machine it was made on."""
    return None if path is None else os.path.relpath(Path(path).resolve(), run_dir.resolve())


def _training_library(records) -> dict[str, str]:
    """Recorded in the checkpoint: `vidsearch index` warns when such a model meets other footage."""
    return {"training_library": SYNTHETIC_LIBRARY} if is_synthetic_library(records) else {}
