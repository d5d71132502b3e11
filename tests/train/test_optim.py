import math

import pytest

from vidsearch.config import AdapterConfig, ModelConfig, TrainConfig
from vidsearch.model.videoclip import TRAINING_MODES
from vidsearch.train.optim import build_optimizer, build_scheduler, parameter_groups, warmup_cosine

from .conftest import micro_model


def _groups(mode: str) -> dict[str, set[str]]:
    model = micro_model(ModelConfig(backbone="micro", num_frames=4, head="seqTransf", adapters=AdapterConfig()))
    model.set_trainable(TRAINING_MODES[mode])
    names = {id(p): n for n, p in model.named_parameters()}
    config = TrainConfig(lr=1e-4, coef_lr=1e-3, weight_decay=0.2)
    return {g["name"]: ({names[id(p)] for p in g["params"]}, g["lr"], g["weight_decay"])
            for g in parameter_groups(model, config)}


def test_full_mode_groups_split_new_from_pretrained_and_decay_from_no_decay():
    groups = _groups("full")
    assert set(groups) == {"new/decay", "new/no_decay", "pretrained/decay", "pretrained/no_decay"}
    assert groups["new/decay"][1:] == (1e-4, 0.2) and groups["new/no_decay"][1:] == (1e-4, 0.0)
    assert groups["pretrained/decay"][1] == pytest.approx(1e-7) and groups["pretrained/decay"][2] == 0.2
    assert groups["pretrained/no_decay"][2] == 0.0
    no_decay = groups["pretrained/no_decay"][0] | groups["new/no_decay"][0]
    for name in ("clip.logit_scale", "clip.token_embedding.weight", "clip.positional_embedding",
                 "clip.visual.class_embedding", "clip.visual.positional_embedding", "temporal_embedding",
                 "head.frame_position.weight", "clip.visual.ln_post.weight", "clip.ln_final.bias",
                 "clip.visual.transformer.resblocks.0.attn.in_proj_bias", "adapters.0.temporal.fc1.bias"):
        assert name in no_decay, name
    assert "temporal_embedding" in groups["new/no_decay"][0]
    assert "adapters.0.temporal.fc1.weight" in groups["new/decay"][0]
    assert "clip.visual.conv1.weight" in groups["pretrained/decay"][0]
    assert "clip.transformer.resblocks.1.mlp.c_fc.weight" in groups["pretrained/decay"][0]


def test_aim_mode_optimises_only_adapters_ln_post_and_head():
    groups = _groups("aim")
    names = set().union(*(g[0] for g in groups.values()))
    assert names and all(n.startswith(("adapters.", "temporal_embedding", "head.", "clip.visual.ln_post.")) for n in names)
    assert groups["pretrained/no_decay"][0] == {"clip.visual.ln_post.weight", "clip.visual.ln_post.bias"}


def test_optimizer_is_adamw_with_clip4clip_betas_and_eps():
    model = micro_model()
    model.set_trainable(TRAINING_MODES["full"])
    optimizer = build_optimizer(model, TrainConfig())
    assert all(g["betas"] == (0.9, 0.98) and g["eps"] == 1e-6 for g in optimizer.param_groups)


def test_warmup_then_cosine_shape():
    values = [warmup_cosine(step, total=100, warmup=10) for step in range(100)]
    assert values[:10] == [(s + 1) / 10 for s in range(10)]
    assert values[10] == 1.0
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, total=100, warmup=10) == 0.0


def test_scheduler_scales_each_group_from_its_own_base_lr():
    model = micro_model()
    model.set_trainable(TRAINING_MODES["full"])
    optimizer = build_optimizer(model, TrainConfig(lr=1e-4, coef_lr=1e-3))
    scheduler = build_scheduler(optimizer, total_steps=20, warmup=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-7 * 0.5] * len(optimizer.param_groups))
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-7)
