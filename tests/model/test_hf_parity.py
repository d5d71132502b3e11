"""Parity with an implementation nobody here wrote: Hugging Face transformers' CLIPModel on the same random weights."""

import pytest
import torch
import torch.nn.functional as F
import transformers  # a [dev] dependency: without it these tests fail, they never skip

from vidsearch.config import ModelConfig
from vidsearch.model.videoclip import create_model


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_features_match_transformers(act, tmp_path):
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=32, hidden_act=act),
        vision_config=dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=act),
        projection_dim=48,
    )
    reference = transformers.CLIPModel(config).eval()
    reference.save_pretrained(tmp_path)
    ours = create_model(ModelConfig(num_frames=1), weights=str(tmp_path), architecture_from_weights=True)
    tokens = ours.tokenize(["a red circle moves to the left", "a square", "the small green triangle slides upwards"])
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        text = _tensor(reference.get_text_features(input_ids=tokens))
        image = _tensor(reference.get_image_features(pixel_values=images))
        ours_text, ours_image = ours.encode_text(tokens), ours.encode_frames(images[:, None])[:, 0]
    torch.testing.assert_close(ours_text, F.normalize(text, dim=-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_image, image, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.logit_scale, reference.logit_scale, atol=0, rtol=0)


def _tensor(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output
