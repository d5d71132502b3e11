import pytest
import torch

from vidsearch.config import AdapterConfig, ModelConfig
from vidsearch.model.backbone import Backbone, build_clip, clip_config_for
from vidsearch.model.videoclip import VideoTextModel

# A micro CLIP with the full 77-token context, for exact text-tower equalities.
MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def micro_model(config: ModelConfig | None = None, *, seed: int = 0, clip_config: dict | None = None) -> VideoTextModel:
    torch.manual_seed(seed)
    clip_config = clip_config or MICRO
    backbone = Backbone(build_clip(clip_config, precision=(config.precision if config else "fp32")), clip_config,
                        False, None, None)
    return VideoTextModel(backbone, config or ModelConfig(backbone="micro", num_frames=4)).eval()


@pytest.fixture
def tiny_config() -> dict:
    return clip_config_for("vidsearch-tiny")


@pytest.fixture
def aim_config() -> ModelConfig:
    return ModelConfig(backbone="micro", num_frames=4, adapters=AdapterConfig())


CAPTIONS = [
    "a red circle moves to the left",
    "x",
    "a small blue square slides slowly upwards across a dark textured background while nothing else moves at all",
    "the green triangle goes down",
]


@pytest.fixture
def make_model():
    return micro_model


@pytest.fixture
def captions() -> list[str]:
    return list(CAPTIONS)
