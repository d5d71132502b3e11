"""Where a model comes from, as data: a vidsearch checkpoint, or a backbone with weights or a pretrained tag.

A feature store records the `ModelSource` it was built with, so searching it needs no model flags repeated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vidsearch.config import ModelConfig
from vidsearch.model.videoclip import VideoTextModel

RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class ModelSource:
    checkpoint: str | None = None
    backbone: str = "ViT-B-32"
    weights: str | None = None
    pretrained: str | None = None
    num_frames: int = 12

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.checkpoint, self.weights, self.pretrained)) > 1:
            raise ValueError("a model comes from one of: a checkpoint, a weights file or directory, a pretrained tag")

    @property
    def has_weights(self) -> bool:
        return any(x is not None for x in (self.checkpoint, self.weights, self.pretrained))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        return cls(**data)

    def absolute(self) -> ModelSource:
        """The same source with local paths made absolute (a store may be used from another directory)."""
        resolve = lambda p: str(Path(p).resolve()) if p is not None else None  # noqa: E731
        return ModelSource(resolve(self.checkpoint), self.backbone, resolve(self.weights), self.pretrained,
                           self.num_frames)

    def load(self, *, precision: str = "fp32") -> VideoTextModel:
        from vidsearch.model.checkpoint import load_checkpoint
        from vidsearch.model.videoclip import create_model

        if self.checkpoint is not None:
            return load_checkpoint(self.checkpoint, precision=precision)
        config = ModelConfig(backbone=self.backbone, num_frames=self.num_frames, precision=precision)
        from_directory = self.weights is not None and Path(self.weights).is_dir()
        # Random weights (no source) come from a fixed seed, so the same "model" can be rebuilt to search its store.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return create_model(config, weights=self.weights, pretrained=self.pretrained,
                                architecture_from_weights=from_directory).eval()
