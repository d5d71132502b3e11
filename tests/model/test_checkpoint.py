import json

import pytest
import torch

from vidsearch.config import AdapterConfig, ModelConfig
from vidsearch.model.checkpoint import load_checkpoint, save_checkpoint
from vidsearch.model.weights import WeightsError


@pytest.fixture
def adapted(make_model):
    model = make_model(ModelConfig(backbone="micro", num_frames=4, adapters=AdapterConfig(), head="seqTransf",
                                   head_layers=1))
    with torch.no_grad():
        for adapters in model.adapters:  # move away from zero-init so the round trip is not trivially exact
            adapters.temporal.fc2.weight.normal_(std=0.1)
        model.temporal_embedding.normal_(std=0.1)
    return model


def test_round_trip_gives_identical_outputs_without_flags(adapted, tmp_path, captions):
    save_checkpoint(adapted, tmp_path / "ckpt", trained_groups=["adapters", "head"], extra={"epoch": 3})
    loaded = load_checkpoint(tmp_path / "ckpt")
    frames = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(frames), adapted.encode_video(frames), atol=0, rtol=0)
        tokens = adapted.tokenize(captions)
        torch.testing.assert_close(loaded.encode_text(tokens), adapted.encode_text(tokens), atol=0, rtol=0)
    assert loaded.fingerprint == adapted.fingerprint
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["trained_groups"] == ["adapters", "head"] and config["extra"] == {"epoch": 3}
    assert config["model"]["adapters"]["ratio"] == 0.25 and config["vidsearch_version"]


def test_checkpoint_can_load_at_another_precision(adapted, tmp_path):
    save_checkpoint(adapted, tmp_path / "ckpt")
    low = load_checkpoint(tmp_path / "ckpt", precision="bf16")
    assert low.compute_dtype == torch.bfloat16
    frames = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert (low.encode_video(frames) - adapted.encode_video(frames)).abs().max() < 0.05


def test_corrupt_weights_are_detected(adapted, tmp_path):
    directory = save_checkpoint(adapted, tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_checkpoint(directory)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(WeightsError, match="not a vidsearch checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(WeightsError, match="unsupported checkpoint format"):
        load_checkpoint(tmp_path)
