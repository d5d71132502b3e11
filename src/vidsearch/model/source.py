"""Where a model comes from, as data: a vidsearch checkpoint, a backbone with weights or a pretrained tag, or an
exported model directory (`vidsearch export`, run on ONNX Runtime without torch).

A feature store records the `ModelSource` it was built with, so searching it needs no model flags repeated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidsearch.config import ModelConfig

if TYPE_CHECKING:  # torch only where a PyTorch model is loaded: an exported model runs without it
    from vidsearch.model.videoclip import VideoTextModel
    from vidsearch.runtime.exported import ExportedModel

RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class ModelSource:
    checkpoint: str | None = None
    backbone: str = "ViT-B-32"
    weights: str | None = None
    pretrained: str | None = None
    num_frames: int = 12
    exported: str | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.checkpoint, self.weights, self.pretrained, self.exported)) > 1:
            raise ValueError("a model comes from one of: a checkpoint, a weights file or directory, a pretrained tag, "
                             "an exported model directory")

    @property
    def has_weights(self) -> bool:
        return any(x is not None for x in (self.checkpoint, self.weights, self.pretrained, self.exported))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["exported"] is None:  # stores indexed with PyTorch models keep the record they always had
            del data["exported"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        return cls(**data)

    def absolute(self) -> ModelSource:
        """The same source with local paths made absolute (a store may be used from another directory)."""
        resolve = lambda p: str(Path(p).resolve()) if p is not None else None  # noqa: E731
        return ModelSource(resolve(self.checkpoint), self.backbone, resolve(self.weights), self.pretrained,
                           self.num_frames, resolve(self.exported))

    def load(self, *, precision: str = "fp32") -> VideoTextModel | ExportedModel:
        """The model (an ExportedModel for an exported directory, its own precision; else a VideoTextModel)."""
        if self.exported is not None:
            from vidsearch.runtime.exported import ExportedModel

            return ExportedModel(self.exported)
        import torch

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
