"""Configuration dataclasses with a JSON round-trip.

Each stage of the pipeline takes one of these, built once by the CLI (or by a caller), and saves it next to what it
writes, so that a checkpoint, a cache or a store can always say how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclasses.dataclass
class AdapterConfig:
    """AIM adapters (the thesis §3.2.4): which kinds, bottleneck ratio and joint-adapter scale."""

    temporal: bool = True
    spatial: bool = True
    joint: bool = True
    ratio: float = 0.25
    scale: float = 0.5
    temporal_embedding: bool = True


@dataclasses.dataclass
class ModelConfig:
    """Everything needed to rebuild a VideoTextModel (weights come from a file or a checkpoint)."""

    backbone: str = "ViT-B-32"
    head: str = "meanP"
    num_frames: int = 12
    adapters: AdapterConfig | None = None
    precision: str = "fp32"
    head_layers: int = 4


@dataclasses.dataclass
class FrameConfig:
    """Keyframe selection and caching (the thesis §3.3)."""

    sampler: str = "uniform"
    frames: int = 12
    size: int = 224
    fps: float = 1.0
    jpeg_quality: int = 90
    segment_seconds: float | None = None
    scenes: bool = False
    scene_threshold: float = 0.12  # mean absolute difference of small grey frames (0-1) that starts a new shot
    keyframes_only: bool = False  # uniform: candidates are the intra frames only (decoded alone, at their own time)


@dataclasses.dataclass
class TrainConfig:
    """A training run (CLIP4Clip's meanP recipe by default; docs/experiments.md)."""

    mode: str = "full"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    coef_lr: float = 1e-3
    weight_decay: float = 0.2
    warmup: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"
    seed: int = 0
    max_words: int = 77
    workers: int = 2
    val_split: str = "val"  # "val", "test" (explicitly chosen) or "none": which split picks the best checkpoint
    twins_in_batch: bool = False  # put each video's time-reversed twin in the same batch (hard negatives)
    example_weight: float = 0.0  # weight of the search-by-example term (train/loss.py `example_loss`); 0: off
    example_scale: float = 30.0  # its similarity scale (train/loss.py EXAMPLE_SCALE): lower spreads its targets
    example_motion: float = 1.0  # how much direction in time counts in its targets (1: captions as they are)
    compile: bool = False  # torch.compile the forward pass
    grad_checkpointing: bool = False  # recompute open_clip tower activations in backward (less memory)
    log_every: int = 10  # steps between JSON log lines


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able data."""
    return dataclasses.asdict(obj)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a dataclass from `to_dict` output; unknown keys are an error, missing keys take defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs = {name: _convert(hints[name], value) for name, value in data.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return from_dict(option, value)
    return value


def save_json(obj: Any, path: str | Path) -> None:
    """Write a dataclass as JSON atomically (temp file, fsync, rename)."""
    from vidsearch.fsutil import atomic_write_text

    atomic_write_text(Path(path), json.dumps(to_dict(obj), indent=2, sort_keys=True) + "\n")


def load_json(cls: type[T], path: str | Path) -> T:
    """Read a dataclass written by `save_json`."""
    return from_dict(cls, json.loads(Path(path).read_text()))
