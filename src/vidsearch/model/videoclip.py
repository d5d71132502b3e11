"""VideoTextModel: CLIP's two towers turned into a video-text model.

    text  ─tokenize→ text tower (stopping at the batch's last end-of-text token) → projection → normalise
    video ─frames [B·T]→ image tower (with AIM adapters and a temporal embedding, if configured) → [B, T, D]
          → temporal head (meanP, seqTransf, ...) → normalise

Parameters fall into named groups (`backbone`, `ln_post`, `text`, `adapters`, `head`, `logit_scale`) so a training
mode is just a set of groups to unfreeze (TRAINING_MODES).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cached_property

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from vidsearch.config import ModelConfig, to_dict
from vidsearch.model.adapters import AIMBlockAdapters, check_adaptable
from vidsearch.model.backbone import Backbone, load_backbone
from vidsearch.model.heads import SeqTransformer, build_head

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

GROUPS = ("backbone", "ln_post", "text", "adapters", "head", "logit_scale")
TRAINING_MODES: dict[str, frozenset[str]] = {
    "full": frozenset({"backbone", "ln_post", "text", "adapters", "head", "logit_scale"}),
    "aim": frozenset({"adapters", "ln_post", "head"}),
    "aim+text": frozenset({"adapters", "ln_post", "head", "text"}),
}


class VideoTextModel(nn.Module):
    def __init__(self, backbone: Backbone, config: ModelConfig):
        super().__init__()
        self.config = config
        self.clip: CLIP = backbone.clip
        self.clip_config = backbone.clip_config
        self.base_weights_sha256 = backbone.weights_sha256
        self.tokenizer = SimpleTokenizer(context_length=self.clip.context_length)
        width = self.clip.visual.transformer.width
        self.adapters = self._build_adapters(width) if config.adapters else None
        use_temporal_embedding = bool(config.adapters and config.adapters.temporal_embedding)
        self.temporal_embedding = nn.Parameter(torch.zeros(1, config.num_frames, width)) if use_temporal_embedding else None
        self.head = build_head(config.head, dim=self.embed_dim, num_frames=config.num_frames, layers=config.head_layers)
        if isinstance(self.head, SeqTransformer) and not self.head.init_from_text_tower(self.clip):
            log.info("seqTransf head initialised at random (text width differs from the embedding size)")
        self._match_precision()

    # --- construction -------------------------------------------------------------------------------------------

    def _build_adapters(self, width: int) -> nn.ModuleList:
        check_adaptable(self.clip.visual)
        blocks = self.clip.visual.transformer.resblocks
        return nn.ModuleList(AIMBlockAdapters(width, self.config.adapters) for _ in blocks)

    def _match_precision(self) -> None:
        dtype = self.compute_dtype
        for module in (self.adapters, self.head):
            if module is not None and dtype != torch.float32:
                module.to(dtype)
        if self.temporal_embedding is not None:
            self.temporal_embedding.data = self.temporal_embedding.data.to(dtype)

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[-1] if isinstance(self.clip.text_projection, torch.Tensor)
                   else self.clip.text_projection.out_features)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.clip.visual.conv1.weight.dtype

    @property
    def image_size(self) -> int:
        return int(self.clip.visual.image_size[0])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    # --- text ---------------------------------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, L] token ids → [N, D] L2-normalised float32 features.

        The text tower's attention is causal, so the feature at a caption's end-of-text token depends only on the
        tokens before it: running the tower on the first `max(eot) + 1` positions gives exactly the full result.
        """
        clip = self.clip
        tokens = tokens.to(clip.token_embedding.weight.device)
        if clip.text_pool_type != "argmax":
            return F.normalize(clip.encode_text(tokens).float(), dim=-1)
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens[:, :length]).to(dtype) + clip.positional_embedding[:length].to(dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot]
        x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
        return F.normalize(x.float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(self.tokenize(texts))

    # --- video --------------------------------------------------------------------------------------------------

    def preprocess_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., H, W, 3] → normalised float [..., 3, S, S]: short side to S (bicubic), centre crop."""
        leading = frames.shape[:-3]
        images = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
        size = self.image_size
        if images.shape[-2:] != (size, size):
            images = TF.resize(images, [size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
            images = TF.center_crop(images, [size, size])
        images = images.float().div_(255)
        images = TF.normalize(images, CLIP_MEAN, CLIP_STD)
        return images.reshape(*leading, 3, size, size)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, S, S] → per-frame features [B, T, D] (before the temporal head, not normalised)."""
        batch, num_frames = frames.shape[:2]
        images = frames.flatten(0, 1).to(self.compute_dtype)
        if self.adapters is None:
            features = self.clip.visual(images)
        else:
            features = self._adapted_image_tower(images, num_frames)
        return features.view(batch, num_frames, -1)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, 3, S, S] frames and [B, T] mask (True = a real frame) → [B, D] L2-normalised float32."""
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return F.normalize(self.head(self.encode_frames(frames), mask.to(frames.device)).float(), dim=-1)

    def pool_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The temporal head alone, for features computed earlier by `encode_frames`."""
        return F.normalize(self.head(frame_features, mask).float(), dim=-1)

    def _adapted_image_tower(self, images: torch.Tensor, num_frames: int) -> torch.Tensor:
        visual = self.clip.visual
        x = self._patch_embed(images)
        if self.temporal_embedding is not None:
            frames, tokens, width = x.shape
            x = (x.view(-1, num_frames, tokens, width) + self.temporal_embedding[:, :num_frames, None, :].to(x.dtype))
            x = x.view(frames, tokens, width)
        x = visual.ln_pre(visual.patch_dropout(x))
        for block, adapters in zip(visual.transformer.resblocks, self.adapters):
            x = adapters(block, x, num_frames)
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

    def _patch_embed(self, images: torch.Tensor) -> torch.Tensor:
        """open_clip's ViT embedding (conv patches, class token, positional embedding), before dropout and ln_pre."""
        visual = self.clip.visual
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)

    # --- similarity ---------------------------------------------------------------------------------------------

    def similarity(self, text_features: torch.Tensor, video_features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [N_text, N_video] of normalised features."""
        return text_features @ video_features.t()

    def logits(self, text_features: torch.Tensor, video_features: torch.Tensor) -> torch.Tensor:
        """Similarity scaled by exp(logit_scale), clamped at 100 as CLIP4Clip does."""
        return self.logit_scale.float().exp().clamp(max=100.0) * self.similarity(text_features, video_features)

    # --- parameter groups ---------------------------------------------------------------------------------------

    @staticmethod
    def group_of(name: str) -> str:
        """Which group a parameter (by its name in this module) belongs to."""
        if name.startswith(("adapters.", "temporal_embedding")):
            return "adapters"
        if name.startswith("head."):
            return "head"
        if name == "clip.logit_scale" or name == "clip.logit_bias":
            return "logit_scale"
        if name.startswith("clip.visual.ln_post."):
            return "ln_post"
        if name.startswith("clip.visual."):
            return "backbone"
        return "text"

    def set_trainable(self, groups: set[str] | frozenset[str]) -> None:
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown parameter group(s) {sorted(unknown)}; groups are {', '.join(GROUPS)}")
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(self.group_of(name) in groups)

    def parameter_report(self) -> dict[str, dict[str, int]]:
        """Per group: total and trainable parameter counts (and an `all` row)."""
        report = {group: {"total": 0, "trainable": 0} for group in (*GROUPS, "all")}
        for name, parameter in self.named_parameters():
            for group in (self.group_of(name), "all"):
                report[group]["total"] += parameter.numel()
                report[group]["trainable"] += parameter.numel() if parameter.requires_grad else 0
        return report

    # --- identity -----------------------------------------------------------------------------------------------

    def describe(self) -> dict:
        """Everything needed to rebuild this model's structure (weights aside)."""
        return {"model": to_dict(self.config), "clip_config": self.clip_config,
                "base_weights_sha256": self.base_weights_sha256}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the structure and every weight: features from two models agree only if this does.

        Computed once per loaded model (cached); a model that is trained further must be reloaded to be re-stamped.
        """
        digest = hashlib.sha256(json.dumps(self.describe()["model"], sort_keys=True).encode())
        digest.update(json.dumps(self.clip_config, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def create_model(config: ModelConfig, *, weights: str | None = None, pretrained: str | None = None,
                 architecture_from_weights: bool = False) -> VideoTextModel:
    """A VideoTextModel for `config`, its CLIP weights from a file/directory, a pretrained tag, or random.

    With `architecture_from_weights`, a Hugging Face directory's own config decides the architecture.
    """
    name = None if architecture_from_weights else config.backbone
    backbone = load_backbone(name, weights=weights, pretrained=pretrained, precision=config.precision)
    return VideoTextModel(backbone, config)
