"""Every supported weight format round-trips to identical outputs; every bad input gets a clear error."""

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vidsearch.cli import main as cli_main
from vidsearch.model.backbone import build_clip, load_backbone
from vidsearch.model.weights import WeightsError, read_weights


def _tiny_clip(quick_gelu: bool):
    from vidsearch.model.backbone import clip_config_for

    torch.manual_seed(0)
    return build_clip({**clip_config_for("vidsearch-tiny"), "quick_gelu": quick_gelu})


@pytest.fixture(scope="module")
def source_clip():
    """A random vidsearch-tiny CLIP with QuickGELU, as OpenAI's models have."""
    return _tiny_clip(True)


def _inputs(clip):
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    tokens = SimpleTokenizer(context_length=32)(["a red circle moves left", "a blue square"])
    with torch.no_grad():
        expected = clip.encode_image(images), clip.encode_text(tokens)
    return images, tokens, expected


@pytest.fixture(scope="module")
def inputs(source_clip):
    return _inputs(source_clip)


def _assert_same_outputs(clip, inputs):
    images, tokens, (image_features, text_features) = inputs
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(images), image_features, atol=0, rtol=0)
        torch.testing.assert_close(clip.encode_text(tokens), text_features, atol=0, rtol=0)


def _save_safetensors(clip, path):
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path), metadata={"quick_gelu": "True"})


def _save_torch_zip(clip, path):
    torch.save(clip.state_dict(), path)


def _save_torch_legacy(clip, path):
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path,
               _use_new_zipfile_serialization=False)


def _save_openai_torchscript(clip, path):
    torch.jit.save(torch.jit.script(clip), str(path))


SAVERS = {"safetensors": _save_safetensors, "torch-zip": _save_torch_zip, "torch-legacy-nested": _save_torch_legacy,
          "openai-torchscript": _save_openai_torchscript}


# OpenAI archives imply QuickGELU and safetensors written by `vidsearch convert` record it; torch.save files carry
# no activation, so the named architecture decides (vidsearch-tiny: GELU).
CARRIES_ACTIVATION = {"safetensors": True, "openai-torchscript": True, "torch-zip": False, "torch-legacy-nested": False}


@pytest.mark.parametrize("fmt", sorted(SAVERS))
def test_each_format_round_trips_to_identical_outputs(fmt, tmp_path):
    quick_gelu = CARRIES_ACTIVATION[fmt]
    clip = _tiny_clip(quick_gelu)
    path = tmp_path / "weights.bin"
    SAVERS[fmt](clip, path)
    backbone = load_backbone("vidsearch-tiny", weights=path)
    assert backbone.quick_gelu == quick_gelu
    _assert_same_outputs(backbone.clip, _inputs(clip))
    assert len(backbone.weights_sha256) == 64


def test_openai_archive_is_read_without_torchscript(source_clip, tmp_path, monkeypatch):
    path = tmp_path / "ViT-tiny.pt"
    _save_openai_torchscript(source_clip, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.jit.load must never be called on user files")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    loaded = read_weights(path)
    assert loaded.format == "openai-torchscript" and loaded.quick_gelu is True
    assert set(loaded.state_dict) == set(source_clip.state_dict())


def test_convert_command_writes_safetensors_that_load_identically(source_clip, inputs, tmp_path):
    source, out = tmp_path / "ViT-tiny.pt", tmp_path / "converted.safetensors"
    _save_openai_torchscript(source_clip, source)
    assert cli_main(["convert", str(source), "--out", str(out)]) == 0
    backbone = load_backbone("vidsearch-tiny", weights=out)
    assert backbone.quick_gelu
    _assert_same_outputs(backbone.clip, inputs)


# --- bad input ------------------------------------------------------------------------------------------------------


def _expect_error(path, match, arch="vidsearch-tiny"):
    with pytest.raises(WeightsError, match=match) as info:
        load_backbone(arch, weights=path)
    assert str(path) in str(info.value) or str(Path(path).parent) in str(info.value)


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.pt", "no such file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    _expect_error(tmp_path / "empty.pt", "empty")


@pytest.mark.parametrize("content", [b"hello, this is a text file\n" * 4, os.urandom(4096)], ids=["text", "random"])
def test_unknown_format(content, tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"\x00" + content)
    _expect_error(tmp_path / "weights.pt", "unknown format")


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip", "openai-torchscript"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files(fmt, keep, source_clip, tmp_path):
    path = tmp_path / "weights.bin"
    SAVERS[fmt](source_clip, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _expect_error(path, "truncated|corrupt")


def test_wrong_architecture_is_named(source_clip, tmp_path):
    _save_safetensors(source_clip, tmp_path / "w.safetensors")
    _expect_error(tmp_path / "w.safetensors", r"does not match architecture 'ViT-B-32': missing keys", arch="ViT-B-32")


def test_missing_and_extra_keys(source_clip, tmp_path):
    state = {k: v.contiguous() for k, v in source_clip.state_dict().items()}
    state.pop("ln_final.weight")
    state["surprise.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "w.safetensors"))
    _expect_error(tmp_path / "w.safetensors", r"missing keys: ln_final.weight; unexpected keys: surprise.weight")


def test_shape_mismatch_names_the_tensor(source_clip, tmp_path):
    state = {k: v.contiguous() for k, v in source_clip.state_dict().items()}
    state["ln_final.weight"] = torch.zeros(7)
    save_file(state, str(tmp_path / "w.safetensors"))
    _expect_error(tmp_path / "w.safetensors", r"ln_final.weight is \[7\] in the file but \[128\] in the model")


# --- crafted pickles: refused, and the payload never runs -----------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _legacy_pickle(marker, path):
    path.write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=2))


def _torch_zip_pickle(marker, path):
    torch.save({"weight": _Payload(marker)}, path)


def _torchscript_pickle(marker, path, source_clip=None):
    clip = build_clip({"embed_dim": 8, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 16,
                       "head_width": 32}, "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 8, "heads": 1,
                       "layers": 1}})
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(clip), buffer)
    with zipfile.ZipFile(buffer) as original, zipfile.ZipFile(path, "w") as crafted:
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            crafted.writestr(item, data)


@pytest.mark.parametrize("craft", [_legacy_pickle, _torch_zip_pickle, _torchscript_pickle],
                         ids=["legacy-pickle", "torch-zip", "torchscript-archive"])
def test_crafted_pickle_is_refused_and_never_executes(craft, tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "ViT-B-32.pt"
    craft(marker, path)
    with pytest.raises(WeightsError, match="refused|not allowed") as info:
        load_backbone("vidsearch-tiny", weights=path)
    assert str(path) in str(info.value)
    assert not marker.exists()


# --- Hugging Face ---------------------------------------------------------------------------------------------------


def test_hugging_face_directory_with_wrong_named_architecture(tmp_path):
    import transformers  # a [dev] dependency: missing, this fails rather than skips
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16), projection_dim=16)
    transformers.CLIPModel(config).save_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="wrong architecture"):
        load_backbone("vidsearch-tiny", weights=tmp_path)
    assert load_backbone(None, weights=tmp_path).clip_config["embed_dim"] == 16


def test_directory_that_is_not_clip(tmp_path):
    _expect_error(tmp_path, "without config.json")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(WeightsError, match="not a CLIP config"):
        load_backbone(None, weights=tmp_path)
