"""Temporal heads: turn per-frame features [B, T, D] and a mask [B, T] into one video feature [B, D].

Chosen by name from HEADS (CLIP4Clip's similarity headers): `meanP` (parameter-free mean pooling), `seqTransf`
(a transformer over frames with frame position embeddings and a residual, initialisable from CLIP's text tower), and
`seqLSTM` (one LSTM layer with a residual). Every head ends in meanP over its (normalised) outputs, as CLIP4Clip does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import Transformer
from torch import nn


def masked_mean_pool(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalise each frame, average the frames the mask keeps, normalise again (in fp32)."""
    features = F.normalize(features.float(), dim=-1)
    weights = mask.to(features.dtype).unsqueeze(-1)
    pooled = (features * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    return F.normalize(pooled, dim=-1)


class MeanPooling(nn.Module):
    """CLIP4Clip meanP."""

    def __init__(self, dim: int, num_frames: int, **_: object):
        super().__init__()

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean_pool(features, mask)


class SeqTransformer(nn.Module):
    """CLIP4Clip seqTransf: frames + position embeddings → transformer (padding masked) → + input → meanP."""

    def __init__(self, dim: int, num_frames: int, *, layers: int = 4, **_: object):
        super().__init__()
        self.frame_position = nn.Embedding(num_frames, dim)
        self.transformer = Transformer(width=dim, layers=layers, heads=max(1, dim // 64))
        self.heads = max(1, dim // 64)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = features.shape
        positions = self.frame_position(torch.arange(frames, device=features.device))
        x = features + positions.to(features.dtype)
        x = self.transformer(x, attn_mask=self._padding_mask(mask, features.dtype))
        return masked_mean_pool(x + features, mask)

    def _padding_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # An additive mask per (video, head): padded frames are never attended to.
        blocked = (~mask.bool()).to(dtype) * torch.finfo(dtype).min
        frames = mask.shape[1]
        return blocked[:, None, :].expand(-1, frames, -1).repeat_interleave(self.heads, dim=0)

    def init_from_text_tower(self, clip: nn.Module) -> bool:
        """Copy CLIP's text positional embeddings and first layers, as CLIP4Clip does, when the widths agree."""
        text_blocks = clip.transformer.resblocks
        if clip.transformer.width != self.frame_position.embedding_dim or len(text_blocks) < len(self.transformer.resblocks):
            return False
        with torch.no_grad():
            self.frame_position.weight.copy_(clip.positional_embedding[: self.frame_position.num_embeddings])
        for ours, theirs in zip(self.transformer.resblocks, text_blocks):
            ours.load_state_dict(theirs.state_dict())
        return True


class SeqLSTM(nn.Module):
    """CLIP4Clip seqLSTM: one LSTM layer over the valid frames (a prefix), + input → meanP."""

    def __init__(self, dim: int, num_frames: int, **_: object):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, batch_first=True)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(features.float(), lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=features.shape[1])
        return masked_mean_pool(output + features.float(), mask)


HEADS: dict[str, type[nn.Module]] = {"meanP": MeanPooling, "seqTransf": SeqTransformer, "seqLSTM": SeqLSTM}


def build_head(name: str, *, dim: int, num_frames: int, layers: int = 4) -> nn.Module:
    if name not in HEADS:
        raise ValueError(f"unknown temporal head '{name}'; choose from {', '.join(HEADS)}")
    return HEADS[name](dim, num_frames, layers=layers)
