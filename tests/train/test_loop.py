import json

import pytest
import torch

from vidsearch.config import AdapterConfig, ModelConfig, TrainConfig
from vidsearch.model.checkpoint import load_checkpoint, save_checkpoint
from vidsearch.train.loop import build_model, init_from_checkpoint, train

from .conftest import micro_model

CONFIG = TrainConfig(mode="full", epochs=2, batch_size=4, lr=1e-3, coef_lr=0.5, warmup=0.2, precision="fp32",
                     workers=0, val_split="none", max_words=16, log_every=1)


def _parameters(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode, example_weight", [("full", 0.0), ("aim+text", 0.0), ("aim+text", 1.0)])
def test_resume_after_an_interruption_is_bit_identical_to_an_uninterrupted_run(tmp_path, memory_source, mode,
                                                                               example_weight):
    adapters = AdapterConfig() if mode.startswith("aim") else None
    config = CONFIG.__class__(**{**CONFIG.__dict__, "mode": mode, "example_weight": example_weight})
    model_config = ModelConfig(backbone="micro", num_frames=4, adapters=adapters)
    steps = config.epochs * memory_source.steps_per_epoch
    assert memory_source.steps_per_epoch >= 2

    straight = micro_model(model_config)
    result = train(straight, memory_source, config, tmp_path / "straight")
    assert result.progress.step == steps

    interrupted = micro_model(model_config)
    stopped = train(interrupted, memory_source, config, tmp_path / "resumed", max_steps=steps // 2 + 1)
    assert stopped.progress.step == steps // 2 + 1
    resumed_model = load_checkpoint(tmp_path / "resumed" / "state")
    resumed = train(resumed_model, memory_source, config, tmp_path / "resumed", resume=True)
    assert resumed.progress.step == steps

    expected, got = _parameters(straight), _parameters(resumed_model)
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not torch.equal(expected[k], micro_model(model_config).state_dict()[k])]
    assert changed, "training changed nothing"
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, steps + 1))


def test_state_and_checkpoints_are_safetensors_and_json_only(tmp_path, memory_source):
    train(micro_model(), memory_source, CONFIG, tmp_path)
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {"state/optimizer.safetensors", "state/trainer.json", "state/model.safetensors", "epoch-1/config.json",
            "epoch-2/model.safetensors", "log.jsonl"} <= files
    assert all(f.endswith((".safetensors", ".json", ".jsonl")) for f in files)


def _video_inputs():
    generator = torch.Generator().manual_seed(3)
    return torch.randn(3, 4, 3, 32, 32, generator=generator), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]).bool()


@pytest.mark.parametrize("mode", ["aim", "aim+text"])
def test_init_from_a_meanP_checkpoint_into_aim_starts_with_its_features(tmp_path, mode):
    trained = micro_model(ModelConfig(backbone="micro", num_frames=4), seed=5)
    with torch.no_grad():  # make it unlike a fresh model
        trained.clip.visual.proj.mul_(1.5)
    save_checkpoint(trained, tmp_path / "meanP", trained_groups=["backbone"])
    adapted = build_model(ModelConfig(backbone="micro", num_frames=4), mode=mode, init=tmp_path / "meanP")
    assert adapted.adapters is not None and adapted.temporal_embedding is not None
    frames, mask = _video_inputs()
    tokens = trained.tokenize(["a red circle moves left", "x"])
    with torch.no_grad():
        torch.testing.assert_close(adapted.encode_video(frames, mask), trained.encode_video(frames, mask),
                                   atol=1e-5, rtol=0)
        assert torch.equal(adapted.encode_text(tokens), trained.encode_text(tokens))


def test_init_into_a_new_seqTransf_head_copies_the_checkpoints_text_layers(tmp_path):
    trained = micro_model(seed=7)
    save_checkpoint(trained, tmp_path / "meanP")
    model = init_from_checkpoint(tmp_path / "meanP", ModelConfig(backbone="micro", num_frames=4, head="seqTransf",
                                                                     head_layers=2))
    ours = model.head.transformer.resblocks[0].attn.in_proj_weight
    assert torch.equal(ours, trained.clip.transformer.resblocks[0].attn.in_proj_weight)

