import numpy as np
import pytest
import torch

from vidsearch.config import ModelConfig
from vidsearch.data.loader import CacheBatches, LoaderVideo
from vidsearch.model.backbone import Backbone, build_clip
from vidsearch.model.videoclip import VideoTextModel

MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def micro_model(config: ModelConfig | None = None, *, seed: int = 0) -> VideoTextModel:
    torch.manual_seed(seed)
    backbone = Backbone(build_clip(MICRO), MICRO, False, None, None)
    return VideoTextModel(backbone, config or ModelConfig(backbone="micro", num_frames=4))


class MemoryFrames:
    """A FrameStore over a uint8 [V, F, S, S, 3] array; LoaderVideo.cache_id is the row."""

    def __init__(self, frames: np.ndarray):
        self.frames, self.size = frames, frames.shape[2]

    def read(self, video, positions):
        return self.frames[int(video.cache_id)][np.asarray(video.frames)[positions]]


def memory_videos(count: int = 8, *, frames: int = 6, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, frames, size, size, 3), dtype=np.uint8)
    videos = [LoaderVideo(f"v{i}", str(i), tuple(range(frames - i % 3)),
                          tuple(f"caption {j} of video number {i}" for j in range(1 + i % 2)))
              for i in range(count)]
    return videos, MemoryFrames(pixels)


@pytest.fixture
def memory_source():
    videos, store = memory_videos()
    return CacheBatches(videos, store, batch_size=4, num_frames=4, seed=0, workers=0)
