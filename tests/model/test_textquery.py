import pytest
import torch

from vidsearch.model.textquery import QueryTextTower, supports

VARIANT = {  # the micro CLIP of conftest.py, with layer scale in the text tower
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "ls_init_value": 0.5},
}


def test_query_tower_equals_encode_text(make_model, captions):
    model = make_model()
    tokens = model.tokenize(captions)
    with torch.no_grad():
        expected = model.encode_text(tokens)
    tower = QueryTextTower(model.clip)
    torch.testing.assert_close(tower(tokens), expected, atol=1e-5, rtol=0)
    for index in range(len(captions)):  # single queries, each truncated at its own end-of-text token
        torch.testing.assert_close(tower(tokens[index:index + 1]), expected[index:index + 1], atol=1e-5, rtol=0)


def test_query_tower_equals_encode_text_with_quick_gelu_and_layer_scale(make_model, captions):
    model = make_model(clip_config={**VARIANT, "quick_gelu": True})
    tokens = model.tokenize(captions)
    with torch.no_grad():
        torch.testing.assert_close(QueryTextTower(model.clip)(tokens), model.encode_text(tokens), atol=1e-5, rtol=0)


def test_bf16_query_tower_is_close_not_exact(make_model, captions):
    model = make_model()
    tokens = model.tokenize(captions)
    with torch.no_grad():
        expected = model.encode_text(tokens)
    tower = QueryTextTower(model.clip, precision="bf16")
    matrices = [linear for block in tower.blocks for linear in (block.qkv, block.out, block.fc, block.proj)]
    assert {(linear.weight.dtype, linear.bias.dtype) for linear in matrices} == {(torch.bfloat16, torch.bfloat16)}
    approximate = tower(tokens)
    assert approximate.dtype == torch.float32
    # bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 2e-3): on these unit vectors the error is a few 1e-3
    # (6.2e-3 measured), far above float32 rounding (the fp32 tower is exact to 1e-5, see above).
    error = float((approximate - expected).abs().max())
    assert 1e-3 < error < 1.5e-2, f"max |bf16 - fp32| = {error:.2e}"
    assert float((approximate * expected).sum(dim=-1).min()) > 0.999


def test_unsupported_towers_and_precisions_are_refused(make_model):
    model = make_model()
    with pytest.raises(ValueError, match="precision"):
        QueryTextTower(model.clip, precision="int4")
    model.clip.text_pool_type = "first"
    assert not supports(model.clip)
    with pytest.raises(ValueError, match="float32 open_clip"):
        QueryTextTower(model.clip)
