"""Evaluate a model on one split: encode every caption and every video, then text→video and video→text metrics.

Each caption of each evaluated video is a query (CLIP4Clip's protocol); videos take T evenly spaced keyframes,
padded by repeating the last one with the mask marking real frames. Ties count pessimistically
(`vidsearch.eval.metrics`). Raw scores and dual softmax (DSL) are reported separately, never mixed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from vidsearch.data.loader import EvalVideos, FrameStore, JpegFrames, LoaderVideo, caption_table, match_videos
from vidsearch.eval.metrics import RetrievalMetrics, format_table
from vidsearch.eval.postprocess import evaluate_similarity

log = logging.getLogger(__name__)

DIRECTIONS = {"text_to_video": "text→video", "video_to_text": "video→text"}


def tokenize_captions(model, captions: Sequence[str], *, max_words: int | None = None) -> torch.Tensor:
    """Token ids [N, L]; with `max_words` shorter than the context, cut there and end with the end-of-text token.

    The end-of-text token has the largest id in CLIP's vocabulary, so `argmax` finds it, as the model does.
    """
    tokens = model.tokenize(list(captions))
    if max_words is None or tokens.shape[1] <= max_words:
        return tokens
    end_token = int(tokens.max())
    cut = tokens[:, :max_words].clone()
    too_long = tokens.argmax(dim=-1) >= max_words
    cut[too_long, -1] = end_token
    return cut


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on `device`, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def encode_captions(model, captions: Sequence[str], *, device: torch.device, precision: str = "fp32",
                    batch_size: int = 256, max_words: int | None = None) -> torch.Tensor:
    """[N, D] normalised float32 text features, on the CPU."""
    chunks = []
    for begin in range(0, len(captions), batch_size):
        tokens = tokenize_captions(model, captions[begin:begin + batch_size], max_words=max_words).to(device)
        with autocast_for(device, precision):
            chunks.append(model.encode_text(tokens).float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def encode_videos(model, videos: Sequence[LoaderVideo], store: FrameStore, *, device: torch.device,
                  precision: str = "fp32", batch_size: int = 16, workers: int = 0) -> torch.Tensor:
    """[V, D] normalised float32 video features, on the CPU (evenly spaced frames, `model.config.num_frames`)."""
    dataset = EvalVideos(videos, store, num_frames=model.config.num_frames)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    chunks = []
    for frames, mask in tqdm(loader, desc="encoding videos", unit="batch", leave=False):
        with autocast_for(device, precision):
            pixels = model.preprocess_frames(frames.to(device, non_blocking=True))
            chunks.append(model.encode_video(pixels, mask.to(device)).float().cpu())
    return torch.cat(chunks)


@dataclasses.dataclass
class Evaluation:
    """The metrics of one split: {"raw"|"dsl": {"text_to_video"|"video_to_text": RetrievalMetrics}}."""

    split: str
    videos: int
    captions: int
    results: dict[str, dict[str, RetrievalMetrics]]

    @property
    def r1(self) -> float:
        """Raw text→video R@1, the figure that picks the best checkpoint."""
        return self.results["raw"]["text_to_video"].r1

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "videos": self.videos, "captions": self.captions,
                **{kind: {d: m.as_dict() for d, m in rows.items()} for kind, rows in self.results.items()}}

    def table(self, *, label: str = "model", dsl: bool = False) -> str:
        """The thesis' table (§3.5): one table per direction, a raw row and, with `dsl`, a DSL row."""
        parts = []
        for direction, title in DIRECTIONS.items():
            rows = {f"{label} (raw)": self.results["raw"][direction]}
            if dsl:
                rows[f"{label} (DSL)"] = self.results["dsl"][direction]
            parts.append(f"{title}, {self.split} split: {self.videos} videos, {self.captions} captions\n\n"
                         + format_table(rows, label=label))
        return "\n\n".join(parts)


def similarity(model, videos: Sequence[LoaderVideo], store: FrameStore, *, device: torch.device,
               precision: str = "fp32", workers: int = 0, max_words: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """sim[caption, video] (float64) over all captions of `videos`, and each caption's video index."""
    captions, caption_video = caption_table(videos)
    if not captions:
        raise ValueError("no captioned videos with keyframes: nothing to evaluate")
    was_training = model.training
    model.eval()
    text = encode_captions(model, captions, device=device, precision=precision, max_words=max_words)
    video = encode_videos(model, videos, store, device=device, precision=precision, workers=workers)
    model.train(was_training)
    return (text @ video.t()).numpy().astype(np.float64), caption_video


def evaluate_model(model, videos: Sequence[LoaderVideo], store: FrameStore, *, split: str, device: torch.device,
                   precision: str = "fp32", workers: int = 0, max_words: int | None = None) -> Evaluation:
    """Encode `videos` and all their captions, and score both directions, raw and DSL."""
    sim, caption_video = similarity(model, videos, store, device=device, precision=precision, workers=workers,
                                    max_words=max_words)
    return Evaluation(split, len(videos), len(caption_video), evaluate_similarity(sim, caption_video))


def evaluate_checkpoint(checkpoint: str | Path, *, manifest: str | Path, frames: str | Path, split: str = "test",
                        device: str | None = None, workers: int = 2) -> Evaluation:
    """`vidsearch evaluate`: load a checkpoint (no flags repeated), join the manifest to the cache, evaluate."""
    from vidsearch.data.manifest import load_manifest
    from vidsearch.model.checkpoint import load_checkpoint
    from vidsearch.video.cache import open_cache

    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_checkpoint(checkpoint).to(target)
    cache = open_cache(frames)
    videos = match_videos(load_manifest(manifest), cache, split=split, manifest_dir=Path(manifest).parent)
    store = JpegFrames(cache, model.image_size)
    precision = "bf16" if target.type == "cuda" else "fp32"
    return evaluate_model(model, videos, store, split=split, device=target, precision=precision, workers=workers)
