"""AIM adapters (Yang et al., "AIM: Adapting Image Models for Efficient Video Action Recognition"; the thesis §3.2.4).

Each residual attention block of the frozen image tower gets three small bottleneck MLPs:

    xt = x  + T_Adapter(MSA(LN1(x over frames)))      temporal: the block's own attention, run across the T frames
    xs = xt + S_Adapter(MSA(LN1(xt)))                 spatial: with a skip inside the adapter
    z  = xs + MLP(LN2(xs)) + s · J_Adapter(LN2(xs))   joint: parallel to the MLP, scaled by s

The second layer of every adapter starts at zero, so a freshly adapted model computes exactly what plain CLIP does;
training then moves it away only as far as the video task needs.
"""

from __future__ import annotations

import torch
from torch import nn

from vidsearch.config import AdapterConfig


class Adapter(nn.Module):
    """FC2(GELU(FC1(x))), D → D·ratio → D; with `skip`, x + that. FC2 is zero-initialised."""

    def __init__(self, dim: int, *, ratio: float, skip: bool):
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out


class AIMBlockAdapters(nn.Module):
    """The adapters of one residual attention block, and the adapted forward pass through that (frozen) block."""

    def __init__(self, dim: int, config: AdapterConfig):
        super().__init__()
        self.scale = config.scale
        self.temporal = Adapter(dim, ratio=config.ratio, skip=False) if config.temporal else None
        self.spatial = Adapter(dim, ratio=config.ratio, skip=True) if config.spatial else None
        self.joint = Adapter(dim, ratio=config.ratio, skip=False) if config.joint else None

    def forward(self, block: nn.Module, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: [B·T, N, D] with the T frames of each video contiguous; `block` is open_clip's ResidualAttentionBlock."""
        if self.temporal is not None:
            x = x + self._temporal_attention(block, x, num_frames)
        attended = block.ls_1(block.attention(q_x=block.ln_1(x)))
        x = x + (self.spatial(attended) if self.spatial is not None else attended)
        normed = block.ln_2(x)
        x = x + block.ls_2(block.mlp(normed))
        if self.joint is not None:
            x = x + self.scale * self.joint(normed)
        return x

    def _temporal_attention(self, block: nn.Module, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        frames, tokens, dim = x.shape
        videos = frames // num_frames
        # '(b t) n d -> (b n) t d': each token position attends over the frames of its own video.
        over_time = x.view(videos, num_frames, tokens, dim).transpose(1, 2).reshape(videos * tokens, num_frames, dim)
        attended = self.temporal(block.attention(q_x=block.ln_1(over_time)))
        return attended.view(videos, tokens, num_frames, dim).transpose(1, 2).reshape(frames, tokens, dim)


def check_adaptable(visual: nn.Module) -> None:
    """AIM needs open_clip's plain VisionTransformer with default residual attention blocks."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise ValueError("AIM adapters need a ViT image tower (open_clip VisionTransformer)")
    if visual.attn_pool is not None:
        raise ValueError("AIM adapters do not support attentional pooling towers")
    if not all(isinstance(block, ResidualAttentionBlock) for block in visual.transformer.resblocks):
        raise ValueError("AIM adapters need open_clip's default ResidualAttentionBlock")
