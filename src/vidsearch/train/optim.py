"""Optimiser, parameter groups and learning-rate schedule (CLIP4Clip's meanP recipe; docs/experiments.md).

- Pretrained CLIP parameters (groups `backbone`, `ln_post`, `text`, `logit_scale`) learn at lr × coef_lr;
  new modules (AIM adapters with the temporal embedding, the temporal head) at lr.
- No weight decay on biases, norms, embeddings (token, positional, class, temporal, frame position) or the logit
  scale: shrinking those towards zero only distorts them.
- AdamW(β 0.9/0.98, eps 1e-6); linear warm-up from 0, then cosine to 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vidsearch.config import TrainConfig

NEW_GROUPS = frozenset({"adapters", "head"})
BETAS = (0.9, 0.98)
EPS = 1e-6


def decays(name: str, parameter: torch.Tensor) -> bool:
    """Whether weight decay applies: matrices of linear/attention/conv layers only."""
    if parameter.ndim < 2:  # biases, norm weights, logit scale
        return False
    return not any(word in name for word in ("embedding", "class_embedding", "frame_position"))


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Trainable parameters split by (new module or pretrained) × (decay or not); empty groups dropped.

    `model` must have `group_of(name)` (VideoTextModel). Each group carries a `name` for logs and state files.
    """
    buckets: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            key = (model.group_of(name) in NEW_GROUPS, decays(name, parameter))
            buckets.setdefault(key, []).append(parameter)
    groups = []
    for (new, decay), params in sorted(buckets.items()):
        groups.append({"name": f"{'new' if new else 'pretrained'}/{'decay' if decay else 'no_decay'}",
                       "params": params, "lr": config.lr * (1.0 if new else config.coef_lr),
                       "weight_decay": config.weight_decay if decay else 0.0})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    groups = parameter_groups(model, config)
    if not groups:
        raise ValueError("no trainable parameters: the training mode froze everything")
    return torch.optim.AdamW(groups, betas=BETAS, eps=EPS)


def warmup_cosine(step: int, *, total: int, warmup: int) -> float:
    """Learning-rate multiplier: (step+1)/warmup during warm-up, then half a cosine from 1 down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup` is a fraction of `total_steps` (CLIP4Clip: 0.1)."""
    warmup_steps = max(1, int(round(warmup * total_steps))) if warmup > 0 else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total=total_steps, warmup=warmup_steps))


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> float:
    """Clip the global gradient norm of everything the optimiser updates; returns the norm before clipping."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if max_norm <= 0 or not params:
        return float("nan")
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
