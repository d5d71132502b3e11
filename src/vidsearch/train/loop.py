"""The training loop, written out in full (nanoGPT style): CLIP4Clip full fine-tuning and AIM adapter tuning.

    vidsearch train --data MANIFEST --frames CACHE --out RUN [--mode full|aim|aim+text] [--init CHECKPOINT] ...

A run directory holds:

    run.json                 what was asked (model and train configs, data, weights): --resume must ask the same
    log.jsonl                one JSON object per `log_every` steps, and one per validation
    frames-<S>.npy/.json     the keyframes packed at the model's resolution (reused by later runs into this dir)
    epoch-<k>/               a checkpoint after every epoch (config.json + model.safetensors)
    best/                    the checkpoint with the best validation text→video R@1
    state/                   the latest training state: a checkpoint plus optimizer.safetensors and trainer.json

Everything saved is safetensors or JSON: the optimizer's state tensors are flattened into safetensors, its scalars
and the scheduler, scaler, step and RNG bookkeeping go into JSON. No pickle anywhere.

Under `torchrun --nproc-per-node N -m vidsearch train ...` (nccl on GPUs, gloo on CPUs) `--batch-size` stays the
global batch: each rank encodes batch/N pairs, the loss gathers all features, DistributedDataParallel averages the
gradients, so a step equals one process's step on the whole batch. Rank 0 alone logs and saves. The state holds no
per-rank data (parameters and optimiser state are replicated), so a run resumes on any number of ranks that divides
the batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn
from tqdm import tqdm

from vidsearch.config import AdapterConfig, ModelConfig, TrainConfig, to_dict
from vidsearch.data.loader import Batch
from vidsearch.distributed import barrier
from vidsearch.eval.evaluate import Evaluation, autocast_for, tokenize_captions
from vidsearch.fsutil import atomic_write_text
from vidsearch.model.checkpoint import WEIGHTS_FILE, read_checkpoint_config, save_checkpoint
from vidsearch.model.videoclip import TRAINING_MODES, VideoTextModel
from vidsearch.train.loss import contrastive_loss, example_loss
from vidsearch.train.optim import build_optimizer, build_scheduler, clip_gradients

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
VAL_SPLITS = ("val", "test", "none")


class BatchSource(Protocol):
    """Where training batches come from: a fixed number of steps per epoch, restartable at any step."""

    steps_per_epoch: int

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[Batch]: ...


# --- building the model to train ------------------------------------------------------------------------------------


def model_config_for(mode: str, config: ModelConfig) -> ModelConfig:
    """AIM modes need adapters: a config without them gets the default ones (zero-initialised when built)."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown training mode {mode!r}; modes: {', '.join(TRAINING_MODES)}")
    if mode.startswith("aim") and config.adapters is None:
        return dataclasses.replace(config, adapters=AdapterConfig())
    return config


def init_from_checkpoint(directory: str | Path, config: ModelConfig) -> VideoTextModel:
    """A model of `config` whose CLIP (and whatever else matches) comes from an earlier vidsearch checkpoint.

    Modules the checkpoint lacks (adapters, temporal embedding, a different head) start fresh. Adapters and the
    temporal embedding start at zero, so a meanP checkpoint continued in an AIM mode computes exactly the
    checkpoint's features at step 0 (that is a test). A new seqTransf head is initialised from the checkpoint's
    text tower, as CLIP4Clip does.
    """
    from safetensors.torch import load_file

    from vidsearch.model.backbone import Backbone, build_clip

    saved = read_checkpoint_config(directory)
    clip_config = saved["clip_config"]
    backbone = Backbone(build_clip(clip_config, precision=config.precision), clip_config,
                        bool(clip_config.get("quick_gelu")), saved.get("base_weights_sha256"), str(directory))
    model = VideoTextModel(backbone, config)
    state = load_file(str(Path(directory) / WEIGHTS_FILE))
    same_head = saved["model"]["head"] == config.head
    state = {k: v for k, v in state.items() if same_head or model.group_of(k) != "head"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    _check_fresh_modules(model, missing, unexpected, directory)
    if not same_head and hasattr(model.head, "init_from_text_tower"):
        model.head.init_from_text_tower(model.clip)
    log.info("initialised from %s; fresh: %s", directory, sorted({model.group_of(k) for k in missing}) or "nothing")
    return model


def _check_fresh_modules(model: VideoTextModel, missing: list[str], unexpected: list[str], directory) -> None:
    fresh = {model.group_of(name) for name in missing}
    if unexpected or not fresh <= {"adapters", "head"}:
        raise ValueError(f"{directory}: checkpoint does not fit this model (unexpected {unexpected[:3]}, "
                         f"missing {[k for k in missing if model.group_of(k) not in {'adapters', 'head'}][:3]})")


def build_model(config: ModelConfig, *, mode: str, init: str | Path | None = None, weights: str | None = None,
                pretrained: str | None = None) -> VideoTextModel:
    """The model a run starts from: an earlier checkpoint (`init`), or base CLIP weights, or random."""
    from vidsearch.model.videoclip import create_model

    config = model_config_for(mode, config)
    if init is not None:
        if weights or pretrained:
            raise ValueError("--init takes CLIP from the checkpoint: do not also give --weights or --pretrained")
        return init_from_checkpoint(init, config)
    return create_model(config, weights=weights, pretrained=pretrained)


# --- precision, devices, distribution --------------------------------------------------------------------------------


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 autocast on a GPU (CLIP was trained in 16-bit; bf16 needs no loss scaling), fp32 on a CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


class PairEncoder(nn.Module):
    """Both towers in one forward, so DistributedDataParallel sees (and synchronises) the whole step; with `stills`
    ([B, 1, 3, S, S], one frame of each video) also the video tower at T = 1, as an image query is encoded."""

    def __init__(self, model: VideoTextModel):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                stills: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        text, video = self.model.encode_text(tokens), self.model.encode_video(frames, mask)
        if stills is None:
            return text, video
        return text, video, self.model.encode_video(stills)


def one_frame_each(frames: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[B, T, ...] frames and [B, T] mask → [B, 1, ...]: one real frame of each video, drawn with `generator` (a CPU
    generator seeded from the run's seed and the step, so a resumed run draws the frames an uninterrupted one did)."""
    weights = mask.detach().to("cpu", torch.float32)
    weights[weights.sum(dim=1) == 0] = 1.0  # a video without a real frame (none in practice): any of its slots
    chosen = torch.multinomial(weights, 1, generator=generator).squeeze(1).to(frames.device)
    return frames[torch.arange(len(frames), device=frames.device), chosen].unsqueeze(1)


def wrap_forward(model: VideoTextModel, config: TrainConfig, device: torch.device, world: int) -> nn.Module:
    forward: nn.Module = PairEncoder(model)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        forward = nn.parallel.DistributedDataParallel(forward, device_ids=ids)
    if config.compile:
        forward = torch.compile(forward)
    return forward


# --- training state: safetensors + JSON ------------------------------------------------------------------------------


@dataclasses.dataclass
class Progress:
    """Where a run is: `step` counts optimiser steps since the start, `epoch` the epochs completed."""

    step: int = 0
    epoch: int = 0
    best_r1: float | None = None
    best_epoch: int | None = None


def save_training_state(directory: Path, model: VideoTextModel, optimizer: torch.optim.Optimizer,
                        scheduler, scaler, progress: Progress, *, trained_groups: list[str], extra: dict) -> None:
    """Write the state into a fresh directory, then swap it in: an interruption never leaves half a state."""
    from safetensors.torch import save_file

    partial, old = directory.with_name(directory.name + ".partial"), directory.with_name(directory.name + ".old")
    shutil.rmtree(partial, ignore_errors=True)
    save_checkpoint(model, partial, trained_groups=trained_groups, extra=extra)
    tensors, scalars = _flatten_optimizer_state(optimizer.state_dict()["state"])
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(partial / "optimizer.safetensors"))
    trainer = {"progress": dataclasses.asdict(progress), "param_groups": optimizer.state_dict()["param_groups"],
               "optimizer_scalars": scalars, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}
    atomic_write_text(partial / "trainer.json", json.dumps(trainer, indent=1) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    partial.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _flatten_optimizer_state(state: dict[int, dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, values in state.items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, scalars


def load_training_state(directory: Path, model: VideoTextModel, optimizer: torch.optim.Optimizer, scheduler,
                        scaler) -> Progress:
    """Restore what `save_training_state` wrote into freshly built objects; returns where the run was."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    trainer = json.loads((directory / "trainer.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("state/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in trainer["optimizer_scalars"].items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": trainer["param_groups"]})
    scheduler.load_state_dict(trainer["scheduler"])
    scaler.load_state_dict(trainer["scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    if torch.cuda.is_available() and "rng/cuda/0" in tensors:
        torch.cuda.set_rng_state_all([tensors[f"rng/cuda/{i}"] for i in range(torch.cuda.device_count())])
    return Progress(**trainer["progress"])


# --- the loop --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    progress: Progress
    last: Path | None  # the newest epoch checkpoint (or the state, when stopped by a step cap mid-epoch)
    best: Path | None
    seconds: float


class JsonLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def print_parameter_report(model: VideoTextModel, mode: str) -> None:
    report = model.parameter_report()
    lines = [f"training mode {mode!r}: trainable / total parameters per group"]
    lines += [f"  {group:<12} {row['trainable']:>12,} / {row['total']:>12,}" for group, row in report.items()
              if row["total"]]
    share = 100.0 * report["all"]["trainable"] / max(1, report["all"]["total"])
    lines.append(f"  trainable share {share:.2f}%")
    tqdm.write("\n".join(lines), file=sys.stderr)


def train(model: VideoTextModel, source: BatchSource, config: TrainConfig, run_dir: str | Path, *,
          validate: Callable[[VideoTextModel], Evaluation] | None = None, max_steps: int | None = None,
          resume: bool = False, device: torch.device | None = None, rank: int = 0, world: int = 1,
          extra: dict[str, Any] | None = None) -> TrainResult:
    """Train `model` on `source` for `config.epochs` epochs, or until global step `max_steps` (state saved, so
    `resume=True` continues; `max_steps=0` just saves the starting model, e.g. for a zero-shot evaluation)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(config.precision, device)
    main_process = rank == 0
    began = time.perf_counter()

    # Freeze before building the optimiser: frozen weights then get no gradient buffers, no optimiser state and,
    # in AIM modes, autograd never computes the (large) weight gradients of the frozen towers at all.
    model.to(device).train()
    model.set_trainable(TRAINING_MODES[config.mode])
    if config.grad_checkpointing:
        model.clip.set_grad_checkpointing(True)
    if main_process:
        print_parameter_report(model, config.mode)

    # The schedule spans the whole run (epochs × steps), not the step cap: a capped run resumed later follows
    # exactly the curve an uninterrupted one would.
    steps_per_epoch = source.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup=config.warmup)
    # fp16 overflows without loss scaling; bf16 has fp32's range and needs none (the scaler is then a no-op).
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    trained_groups = sorted(TRAINING_MODES[config.mode])
    extra = {**(extra or {}), "train": to_dict(config)}

    progress = Progress()
    state_dir = run_dir / "state"
    if resume:
        progress = load_training_state(state_dir, model, optimizer, scheduler, scaler)
        log.info("resumed at step %d (epoch %d)", progress.step, progress.epoch)
    forward = wrap_forward(model, config, device, world)
    journal = JsonLog(run_dir / "log.jsonl", main_process)
    last = best = None

    def save_state() -> None:
        if main_process:
            save_training_state(state_dir, model, optimizer, scheduler, scaler, progress,
                                trained_groups=trained_groups, extra={**extra, "step": progress.step})

    try:
        while progress.epoch < config.epochs:
            # Resuming mid-epoch: the epoch's batches are a function of (seed, epoch), so skipping the ones
            # already trained on gives exactly the batches an uninterrupted run would see next.
            start = progress.step - progress.epoch * steps_per_epoch
            bar = tqdm(source.epoch(progress.epoch, start=start), total=steps_per_epoch, initial=start,
                       desc=f"epoch {progress.epoch + 1}/{config.epochs}", disable=not main_process, unit="step")
            tick, seen = time.perf_counter(), 0
            for batch in bar:
                if max_steps is not None and progress.step >= max_steps:  # a cap, not the schedule's end
                    save_state()
                    return TrainResult(progress, last or state_dir, best, time.perf_counter() - began)
                loss, grad_norm = train_step(forward, model, batch, optimizer, scheduler, scaler, config=config,
                                             precision=precision, device=device, step=progress.step)
                progress.step += 1
                seen += len(batch.captions) * world
                if progress.step % config.log_every == 0 or progress.step == total_steps:
                    rate = seen / (time.perf_counter() - tick)
                    lr = optimizer.param_groups[-1]["lr"]
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", pairs_s=f"{rate:.1f}")
                    journal.write({"step": progress.step, "epoch": progress.epoch, "loss": loss, "lr": lr,
                                   "grad_norm": grad_norm, "pairs_per_s": rate})
                    tick, seen = time.perf_counter(), 0
            progress.epoch += 1
            last, best = end_of_epoch(model, progress, run_dir, validate, journal, main_process=main_process,
                                      trained_groups=trained_groups, extra=extra, best=best)
            save_state()
    except KeyboardInterrupt:
        # Keep what was trained: `--resume` continues from this very step.
        save_state()
        log.warning("interrupted at step %d: training state saved in %s", progress.step, state_dir)
        raise
    return TrainResult(progress, last, best, time.perf_counter() - began)


def train_step(forward: nn.Module, model: VideoTextModel, batch: Batch, optimizer, scheduler, scaler, *,
               config: TrainConfig, precision: str, device: torch.device, step: int = 0) -> tuple[float, float]:
    """One optimiser step on one batch (the run's `step`-th, counted from 0); returns (loss, gradient norm before
    clipping)."""
    # Frames travel as uint8 (4× less than float) and are normalised on the device.
    frames = model.preprocess_frames(batch.frames.to(device, non_blocking=True))
    mask = batch.mask.to(device, non_blocking=True)
    tokens = tokenize_captions(model, batch.captions, max_words=config.max_words).to(device)
    stills = None
    if config.example_weight > 0:
        stills = one_frame_each(frames, mask, torch.Generator().manual_seed(config.seed * 1_000_003 + step))
    with autocast_for(device, precision):
        features = forward(tokens, frames, mask, stills)
        # The loss gathers the features of every rank (with gradient): the contrastive negatives are the whole
        # global batch, as on one device.
        loss = contrastive_loss(features[0], features[1], model.logit_scale)
        if stills is not None:
            loss = loss + config.example_weight * example_loss(*features, batch.footage.to(device),
                                                                scale=config.example_scale,
                                                                motion=config.example_motion)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # clip true gradients, not scaled ones
    grad_norm = clip_gradients(optimizer, config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return float(loss.detach()), grad_norm


def end_of_epoch(model: VideoTextModel, progress: Progress, run_dir: Path, validate, journal: JsonLog, *,
                 main_process: bool, trained_groups: list[str], extra: dict, best: Path | None) -> tuple[Path, Path | None]:
    """Validate, save this epoch's checkpoint, and replace `best/` when validation R@1 improved."""
    epoch_dir = run_dir / f"epoch-{progress.epoch}"
    if main_process:
        evaluation = validate(model) if validate is not None else None
        info = {**extra, "epoch": progress.epoch, "step": progress.step}
        if evaluation is not None:
            info["validation"] = evaluation.as_dict()
            journal.write({"event": "validation", "epoch": progress.epoch, "step": progress.step,
                           **evaluation.as_dict()})
            tqdm.write(evaluation.table(label=f"epoch {progress.epoch}"), file=sys.stderr)
        save_checkpoint(model, epoch_dir, trained_groups=trained_groups, extra=info)
        if evaluation is not None and (progress.best_r1 is None or evaluation.r1 > progress.best_r1):
            progress.best_r1, progress.best_epoch = evaluation.r1, progress.epoch
            save_checkpoint(model, run_dir / "best", trained_groups=trained_groups, extra=info)
    barrier()
    best_dir = run_dir / "best"
    return epoch_dir, (best_dir if best_dir.exists() else best)
