import pytest
import torch

from vidsearch.config import AdapterConfig, ModelConfig
from vidsearch.model.backbone import Backbone, build_clip
from vidsearch.model.videoclip import VideoTextModel

# A micro CLIP (random weights) with AIM adapters, a temporal embedding and a seqTransf head, all non-zero, so every
# part of the video tower changes its output.
MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
FRAMES = 4


def micro_model(*, seed: int = 0, head: str = "seqTransf") -> VideoTextModel:
    torch.manual_seed(seed)
    config = ModelConfig(backbone="micro", num_frames=FRAMES, head=head, head_layers=1, adapters=AdapterConfig())
    model = VideoTextModel(Backbone(build_clip(MICRO), MICRO, False, None, None), config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("adapters.", "temporal_embedding")):
                parameter.normal_(std=0.05)
    return model.eval()


@pytest.fixture(scope="session")
def make_micro():
    """make_micro(seed=0, head="seqTransf") -> a micro model."""
    return micro_model


@pytest.fixture(scope="session")
def micro():
    return micro_model()


@pytest.fixture(scope="session")
def micro_exports(micro, tmp_path_factory):
    """The micro model exported in fp32 and int8: {"fp32": dir, "int8": dir}."""
    from vidsearch.model.export import export_model

    root = tmp_path_factory.mktemp("exports")
    fp32 = export_model(micro, root / "fp32")
    return {"fp32": fp32, "int8": export_model(micro, root / "int8", int8=True, towers_from=fp32)}


