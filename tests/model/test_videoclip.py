import itertools

import pytest
import torch
import torch.nn.functional as F

from vidsearch.config import AdapterConfig, ModelConfig
from vidsearch.model.backbone import load_backbone
from vidsearch.model.heads import HEADS
from vidsearch.model.videoclip import TRAINING_MODES, VideoTextModel


def _frames(batch=2, frames=4, size=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=generator)


ADAPTER_KINDS = [dict(zip(("temporal", "spatial", "joint"), flags)) for flags in itertools.product([True, False], repeat=3)]


@pytest.mark.parametrize("kinds", ADAPTER_KINDS, ids=lambda k: "+".join(n for n, on in k.items() if on) or "none")
def test_zero_initialised_aim_equals_plain_clip_mean_pooling(kinds, make_model):
    plain = make_model(ModelConfig(backbone="micro", num_frames=4))
    adapted = make_model(ModelConfig(backbone="micro", num_frames=4, adapters=AdapterConfig(**kinds)))
    adapted.clip.load_state_dict(plain.clip.state_dict())
    frames, mask = _frames(), torch.tensor([[True] * 4, [True, True, False, False]])
    with torch.no_grad():
        expected = plain.encode_video(frames, mask)
        reference = F.normalize(plain.clip.encode_image(frames.flatten(0, 1)).view(2, 4, -1), dim=-1)
        reference = F.normalize((reference * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
        got = adapted.encode_video(frames, mask)
    torch.testing.assert_close(expected, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_temporal_embedding_makes_frame_order_matter(aim_config, make_model):
    model = make_model(aim_config)
    frames = _frames()
    reversed_frames = frames.flip(1)
    with torch.no_grad():
        assert torch.allclose(model.encode_video(frames), model.encode_video(reversed_frames), atol=1e-5)
        model.temporal_embedding.normal_(std=0.5)
        forward, backward = model.encode_video(frames), model.encode_video(reversed_frames)
    assert (forward - backward).abs().max() > 1e-3


def test_plain_mean_pooling_cannot_see_frame_order(make_model):
    model = make_model()
    frames = _frames()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(frames), model.encode_video(frames.flip(1)), atol=1e-5, rtol=0)


def test_truncated_text_encoding_equals_full_context(make_model, captions):
    model = make_model()
    tokens = model.tokenize(captions)
    assert tokens.shape[1] == 77
    with torch.no_grad():
        full = F.normalize(model.clip.encode_text(tokens).float(), dim=-1)
        truncated = model.encode_text(tokens)
    torch.testing.assert_close(truncated, full, atol=1e-5, rtol=0)
    assert int(tokens.argmax(-1).max()) + 1 < 77  # the batch really was truncated


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_outputs_float32_unit_vectors_close_to_fp32(precision, aim_config, make_model, captions):
    reference = make_model(aim_config)
    low = make_model(ModelConfig(backbone="micro", num_frames=4, adapters=AdapterConfig(), precision=precision))
    low.load_state_dict(reference.state_dict())
    frames = _frames()
    with torch.no_grad():
        video, text = low.encode_video(frames), low.encode_text(low.tokenize(captions))
        video32, text32 = reference.encode_video(frames), reference.encode_text(reference.tokenize(captions))
    assert low.compute_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert video.dtype == text.dtype == torch.float32
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
    assert (video - video32).abs().max() < 0.05 and (text - text32).abs().max() < 0.05
    layer_norms = [m for m in low.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(m.weight.dtype == torch.float32 for m in layer_norms)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_ignores_padded_frames(head, make_model):
    model = make_model(ModelConfig(backbone="micro", num_frames=4, head=head, head_layers=2))
    frames = _frames(batch=1)
    mask = torch.tensor([[True, True, False, False]])
    other_padding = frames.clone()
    other_padding[:, 2:] = torch.randn_like(other_padding[:, 2:])
    with torch.no_grad():
        a, b = model.encode_video(frames, mask), model.encode_video(other_padding, mask)
    assert a.shape == (1, 32)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(1), atol=1e-5, rtol=0)


def test_seq_transformer_starts_from_the_text_tower(make_model):
    model = make_model(ModelConfig(backbone="micro", num_frames=4, head="seqTransf", head_layers=2))
    for ours, theirs in zip(model.head.transformer.resblocks, model.clip.transformer.resblocks):
        for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(model.head.frame_position.weight, model.clip.positional_embedding[:4])


def test_training_modes_unfreeze_exactly_their_groups(aim_config, make_model):
    model = make_model(aim_config)
    for mode, groups in TRAINING_MODES.items():
        model.set_trainable(groups)
        for name, parameter in model.named_parameters():
            assert parameter.requires_grad == (VideoTextModel.group_of(name) in groups), (mode, name)
    model.set_trainable(TRAINING_MODES["aim"])
    report = model.parameter_report()
    assert report["all"]["trainable"] == report["adapters"]["total"] + report["ln_post"]["total"] + report["head"]["total"]
    with pytest.raises(ValueError, match="unknown parameter group"):
        model.set_trainable({"vision"})


def test_vit_b32_vision_adapters_have_the_published_size():
    model = VideoTextModel(load_backbone("ViT-B-32"), ModelConfig(adapters=AdapterConfig()))
    per_adapter = 768 * 192 + 192 + 192 * 768 + 768
    assert model.parameter_report()["adapters"]["total"] == 12 * 3 * per_adapter + 12 * 768  # ≈ 10.66 M


def test_fingerprint_follows_the_weights(aim_config, make_model):
    a, b = make_model(aim_config), make_model(aim_config)
    assert a.fingerprint == b.fingerprint
    c = make_model(aim_config, seed=1)
    assert c.fingerprint != a.fingerprint


def test_preprocess_resizes_crops_and_normalises(make_model):
    model = make_model()
    frames = torch.full((2, 3, 48, 64, 3), 255, dtype=torch.uint8)
    out = model.preprocess_frames(frames)
    assert out.shape == (2, 3, 3, 32, 32)
    expected = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(out[0, 0, :, 5, 5], expected, atol=1e-4, rtol=0)
