"""Query-time text tower: an inference-only copy of CLIP's text tower, laid out for one short query on a CPU.

One query of ~15 tokens multiplies every weight matrix by a ~15-row matrix, so the tower's time is the time to stream
its weights (ViT-B/32: 151 MB fp32) through small matrix products, not arithmetic. What this copy changes, measured on
the project's 2-core VM (benchmarks/RESULTS.md, "search"):
- each linear weight is stored transposed and contiguous, so `x @ Wᵀ` runs as a plain (NN) product: MKL's small-row
  path no longer re-reads W in the transposed layout (≈ 10-15 % of the tower's time);
- attention runs as `scaled_dot_product_attention(is_causal=True)` on the fused q/k/v projection, without
  `nn.MultiheadAttention`'s float mask and per-call checks;
- the tower stops at the batch's last end-of-text token (exact: the attention is causal), as `encode_text` does.
With `precision="fp32"` (the default) it equals `VideoTextModel.encode_text` to float rounding (a test checks 1e-5).
`precision="bf16"` stores the matrices in bfloat16 (half the bytes to stream; AMX/AVX-512 kernels): approximate,
opt-in only, its effect on rankings reported by `python -m vidsearch.bench search`.

The copy is a snapshot: build it from a model whose weights no longer change (a loaded checkpoint), as the model's
`fingerprint` is. It holds its own copy of the four matrices of each block (ViT-B/32: 151 MB more in fp32).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

Precision = Literal["fp32", "bf16"]
_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def supports(clip: nn.Module) -> bool:
    """Whether `clip` has the plain open_clip text tower this copy reproduces (float32, argmax pooling)."""
    if not isinstance(clip, CLIP) or clip.text_pool_type != "argmax" or clip.token_embedding.weight.dtype != torch.float32:
        return False
    return all(_plain_block(block) for block in clip.transformer.resblocks)


def _plain_block(block: nn.Module) -> bool:
    attn = getattr(block, "attn", None)
    return (type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
            and isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.bias_k is None
            and not attn.add_zero_attn and list(dict(block.mlp.named_children())) == ["c_fc", "gelu", "c_proj"])


class _Block:
    """One residual attention block with its four matrices pre-transposed (and cast to the chosen precision)."""

    def __init__(self, block: ResidualAttentionBlock, dtype: torch.dtype):
        attn = block.attn
        self.ln_1, self.ln_2, self.ls_1, self.ls_2 = block.ln_1, block.ln_2, block.ls_1, block.ls_2
        self.activation, self.heads = block.mlp.gelu, attn.num_heads
        self.qkv = _Linear(attn.in_proj_weight, attn.in_proj_bias, dtype)
        self.out = _Linear(attn.out_proj.weight, attn.out_proj.bias, dtype)
        self.fc = _Linear(block.mlp.c_fc.weight, block.mlp.c_fc.bias, dtype)
        self.proj = _Linear(block.mlp.c_proj.weight, block.mlp.c_proj.bias, dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(self.ln_1(x)).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [batch, heads, length, head width]
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x.shape)
        x = x + self.ls_1(self.out(attended))
        return x + self.ls_2(self.proj(self.activation(self.fc(self.ln_2(x)))))


class _Linear:
    """x @ weightᵀ + bias with weightᵀ stored contiguous in `dtype` (`.weight`); computes in `dtype`, returns float32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        self.weight = weight.detach().t().to(dtype).contiguous()
        self.bias = torch.zeros(weight.shape[0], dtype=dtype) if bias is None else bias.detach().to(dtype).clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(self.weight.dtype)
        return torch.addmm(self.bias, rows, self.weight).to(torch.float32).view(*x.shape[:-1], -1)


class QueryTextTower:
    """tokens [N, L] → L2-normalised float32 features [N, D], like `VideoTextModel.encode_text`, for inference."""

    def __init__(self, clip: CLIP, *, precision: Precision = "fp32"):
        if not supports(clip):
            raise ValueError("QueryTextTower needs a float32 open_clip CLIP text tower with plain attention blocks")
        if precision not in _DTYPES:
            raise ValueError(f"precision {precision!r}: one of {', '.join(_DTYPES)}")
        self.clip, self.precision = clip, precision
        self.blocks = [_Block(block, _DTYPES[precision]) for block in clip.transformer.resblocks]

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        tokens = tokens.to(clip.token_embedding.weight.device)
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        x = clip.token_embedding(tokens[:, :length]) + clip.positional_embedding[:length]
        for block in self.blocks:
            x = block(x)
        x = clip.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot]
        x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
        return F.normalize(x, dim=-1)
