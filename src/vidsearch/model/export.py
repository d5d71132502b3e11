"""`vidsearch export`: a checkpoint (or CLIP weights) → an exported model directory for ONNX Runtime.

The two towers are exported with torch.onnx's dynamo exporter (the TorchScript one bakes the text length into
`nn.MultiheadAttention`'s reshapes): the text tower takes token ids cut after the batch's last end-of-text token, as
`VideoTextModel.encode_text` does (exact: its attention is causal); the video tower takes frames [B, T, 3, S, S] and
a mask, AIM adapters, temporal embedding and temporal head included, B and T dynamic (T ≤ the model's frame count).
Before anything is published, the fp32 towers are run on probe texts and videos against PyTorch: they keep the
checkpoint's fingerprint only if every vector agrees (cosine ≥ AGREEMENT), else the export is refused. `int8`
quantises the weights of both towers with ONNX Runtime's dynamic quantisation; that model gets a fingerprint of its
own. The directory appears complete or not at all (written aside, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidsearch import __version__
from vidsearch.fsutil import atomic_write_text, fsync_dir, sha256_file
from vidsearch.model.videoclip import CLIP_MEAN, CLIP_STD, VideoTextModel
from vidsearch.runtime import exported as layout
from vidsearch.runtime.exported import ExportedModel

log = logging.getLogger(__name__)

PROBE_TEXTS = ["a red circle moves to the left", "x", "A Blue SQUARE, sliding upwards!  ", "the green triangle goes "
               "down " * 12, "café & naïve 😀 — 東京"]
PROBE_SEED = 0


class ExportError(ValueError):
    """A model that cannot be exported, or towers that do not agree with PyTorch: one line says which and why."""


@dataclass(frozen=True)
class Agreement:
    """Smallest cosine between exported and PyTorch vectors on the probe inputs, per tower."""

    text: float
    video: float

    def to_dict(self) -> dict[str, float]:
        return {"text_min_cosine": round(self.text, 7), "video_min_cosine": round(self.video, 7)}


class TextTower(nn.Module):
    """tokens [N, L] (cut after the last end-of-text) → [N, D] normalised; `VideoTextModel.encode_text` as a graph."""

    def __init__(self, model: VideoTextModel):
        super().__init__()
        self.clip = model.clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        clip, length = self.clip, tokens.shape[1]
        eot = tokens.argmax(dim=-1)
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)[torch.arange(x.shape[0]), eot]
        x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
        return F.normalize(x, dim=-1)


class VideoTower(nn.Module):
    def __init__(self, model: VideoTextModel):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_video(frames, mask)


def check_exportable(model: VideoTextModel) -> None:
    clip = model.clip
    if model.compute_dtype != torch.float32:
        raise ExportError(f"cannot export a {model.compute_dtype} model: load it in fp32")
    if getattr(clip, "text_pool_type", None) != "argmax" or getattr(clip, "attn_mask", None) is None:
        raise ExportError("cannot export this text tower: only open_clip's causal text tower with end-of-text pooling "
                          "is supported")
    if model.config.head == "seqLSTM":
        raise ExportError("cannot export the seqLSTM head (packed sequences have no ONNX form here); "
                          "meanP and seqTransf heads can be exported")


def export_model(model: VideoTextModel, out: str | Path, *, int8: bool = False, bpe_path: str | Path | None = None,
                 towers_from: str | Path | None = None) -> Path:
    """Write the exported directory `out` (which must not exist) for `model`; return it.

    `towers_from`: an fp32 export of this model whose ONNX towers are reused (exporting a ViT-B/32 takes minutes);
    they are checked against `model` like fresh ones.
    """
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out} exists: choose a new directory for the exported model")
    check_exportable(model)
    model = model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    work.chmod(0o755)
    try:
        if towers_from is None:
            _write_towers(model, work)
        else:
            for name in (layout.TEXT_FILE, layout.VIDEO_FILE):
                shutil.copyfile(Path(towers_from) / name, work / name)
        _write_tokenizer(model, work, bpe_path)
        config = _base_config(model, work)
        agreement = measure_agreement(model, work, config)
        if agreement.text < layout.AGREEMENT or agreement.video < layout.AGREEMENT:
            raise ExportError(f"the exported towers disagree with PyTorch (smallest cosine: text {agreement.text:.6f}, "
                              f"video {agreement.video:.6f}; at least {layout.AGREEMENT} needed)")
        config |= {"fingerprint": model.fingerprint, "agreement": agreement.to_dict()}
        if int8:
            config = _quantise(model, work, config)
        atomic_write_text(work / layout.CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
        work.rename(out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s (%s) to %s", model.fingerprint[:12], config["precision"], out)
    return out


def _write_towers(model: VideoTextModel, directory: Path) -> None:
    context, frames = model.clip.context_length, model.config.num_frames
    tokens = torch.tensor([[1] * (min(context, 8) - 1) + [2]] * 2)  # any ids: the end-of-text is the largest
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=context)
    time_dim = torch.export.Dim("frames", max=frames)
    pixels = torch.zeros(2, frames, 3, model.image_size, model.image_size)
    mask = torch.ones(2, frames, dtype=torch.bool)
    with torch.no_grad():
        _export(TextTower(model), (tokens,), directory / layout.TEXT_FILE, ["tokens"], ({0: batch, 1: length},), "text")
        _export(VideoTower(model), (pixels, mask), directory / layout.VIDEO_FILE, ["frames", "mask"],
                ({0: batch, 1: time_dim}, {0: batch, 1: time_dim}), "video")


def _export(module: nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple, tower: str) -> None:
    try:
        with warnings.catch_warnings(), _quiet("onnx_ir", "onnxscript"):  # notes on the exporter's own internals
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, input_names=names,
                              output_names=["features"], dynamic_shapes=shapes, verbose=False)
    except Exception as error:  # the exporter raises many kinds; one line says which tower and why
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"cannot export the {tower} tower of this model: {first_line}") from error


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Loggers `names` at ERROR inside the block, restored after it."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_tokenizer(model: VideoTextModel, directory: Path, bpe_path: str | Path | None) -> None:
    from open_clip.tokenizer import default_bpe

    from vidsearch.runtime.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer(bpe_path or default_bpe(), model.clip.context_length)
    tokenizer.save(str(directory / layout.TOKENIZER_FILE))


def _base_config(model: VideoTextModel, directory: Path) -> dict:
    return {
        "format": layout.FORMAT,
        "version": layout.VERSION,
        "vidsearch_version": __version__,
        "precision": "fp32",
        "source_fingerprint": model.fingerprint,
        "embed_dim": model.embed_dim,
        "num_frames": model.config.num_frames,
        "image_size": model.image_size,
        "context_length": model.clip.context_length,
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        **model.describe(),
        "files": {name: sha256_file(directory / name) for name in layout.FILES},
    }


def measure_agreement(model: VideoTextModel, directory: Path, config: dict) -> Agreement:
    """Smallest cosine of exported and PyTorch vectors: the probe texts, and seeded random videos with padding."""
    scratch = dict(config, fingerprint="probe")
    atomic_write_text(directory / layout.CONFIG_FILE, json.dumps(scratch))
    exported = ExportedModel(directory)
    with torch.no_grad():
        expected_text = model.encode_texts(PROBE_TEXTS).numpy()
        frames, mask = probe_videos(model.config.num_frames, model.image_size)
        expected_video = model.encode_video(model.preprocess_frames(torch.from_numpy(frames)),
                                            torch.from_numpy(mask)).numpy()
    text = _min_cosine(exported.encode(PROBE_TEXTS), expected_text)
    video = _min_cosine(exported.encode_videos(frames, mask), expected_video)
    return Agreement(text, video)


def probe_videos(num_frames: int, size: int, videos: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random uint8 frames [videos, T, S, S, 3] and a mask with some videos shorter than T."""
    rng = np.random.default_rng(PROBE_SEED)
    frames = rng.integers(0, 256, size=(videos, num_frames, size, size, 3), dtype=np.uint8)
    lengths = [num_frames] + [max(1, num_frames * (v + 1) // (videos + 1)) for v in range(videos - 1)]
    mask = np.arange(num_frames)[None, :] < np.array(lengths)[:, None]
    return frames, mask


def _min_cosine(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float((ours * theirs).sum(axis=1).min())


def _quantise(model: VideoTextModel, directory: Path, config: dict) -> dict:
    """Both towers' weights to int8 (ONNX Runtime's dynamic quantisation); the fingerprint names the result."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in (layout.TEXT_FILE, layout.VIDEO_FILE):
        quantised = directory / f"int8-{name}"
        with _quiet(""):  # its advice to pre-process the model first goes to the root logger
            quantize_dynamic(directory / name, quantised, weight_type=QuantType.QInt8)
        quantised.replace(directory / name)
    files = {name: sha256_file(directory / name) for name in layout.FILES}
    digest = hashlib.sha256(json.dumps({"source": model.fingerprint, "precision": "int8", "files": files},
                                       sort_keys=True).encode()).hexdigest()
    config = dict(config, precision="int8", files=files, fingerprint=digest)
    config["agreement"] = measure_agreement(model, directory, config).to_dict()
    return config
