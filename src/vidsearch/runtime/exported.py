"""An exported model directory (`vidsearch export`) and the encoder that runs it on ONNX Runtime.

    DIR/config.json      format, fingerprint, sizes, pixel normalisation, sha256 of every file below
    DIR/text.onnx        token ids [N, L] (L ≤ context, cut after the batch's last end-of-text) → [N, D] normalised
    DIR/video.onnx       frames [B, T, 3, S, S] float32 + mask [B, T] bool → [B, D] normalised (B, T dynamic)
    DIR/tokenizer.json   CLIP's BPE tokenizer for Hugging Face `tokenizers`

The fingerprint is the checkpoint's own when the fp32 towers were checked at export to give its vectors (cosine ≥
AGREEMENT on probe texts and videos), so a store indexed with either is searched with either; an int8 model has a
fingerprint of its own. Files are checked against their sha256 when the directory is opened.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidsearch.fsutil import sha256_file
from vidsearch.runtime.tokenizer import ClipTokenizer

log = logging.getLogger(__name__)

FORMAT = "vidsearch-exported"
VERSION = 1
CONFIG_FILE = "config.json"
TEXT_FILE = "text.onnx"
VIDEO_FILE = "video.onnx"
TOKENIZER_FILE = "tokenizer.json"
FILES = (TEXT_FILE, VIDEO_FILE, TOKENIZER_FILE)
AGREEMENT = 0.9999  # fp32 towers and PyTorch: minimum cosine of their vectors for the two to share a fingerprint


class ExportedModelError(ValueError):
    """A directory that is not a usable exported model: the message names it and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")


def is_exported_dir(path: str | Path) -> bool:
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_exported_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ExportedModelError(directory, f"not an exported model (no {CONFIG_FILE}); make one with `vidsearch export`")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportedModelError(path, f"not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ExportedModelError(path, "not a vidsearch exported model config (format/version)")
    return config


class ExportedModel:
    """The towers of an exported directory: `encode` (queries, the store's QueryEncoder), `encode_videos`.

    Sessions are created on first use (serving never loads the video tower): the text tower with `text_threads`
    intra-op threads (one: a query is ~100 small ops, and threads waiting on each other cost more than they give on
    a busy machine), the video tower with `video_threads` (None: one per core).
    """

    def __init__(self, directory: str | Path, *, text_threads: int | None = 1, video_threads: int | None = None):
        self.directory = Path(directory)
        self.config = read_exported_config(self.directory)
        self._check_files()
        self.fingerprint: str = self.config["fingerprint"]
        self.precision: str = self.config["precision"]
        self.num_frames: int = int(self.config["num_frames"])
        self.image_size: int = int(self.config["image_size"])
        self.embed_dim: int = int(self.config["embed_dim"])
        self.tokenizer = ClipTokenizer.from_file(self.directory / TOKENIZER_FILE)
        self._threads = {TEXT_FILE: text_threads, VIDEO_FILE: video_threads}
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _check_files(self) -> None:
        for name in FILES:
            path = self.directory / name
            if not path.is_file():
                raise ExportedModelError(self.directory, f"exported model without {name}")
            if sha256_file(path) != self.config["files"].get(name):
                raise ExportedModelError(path, "sha256 does not match config.json: the file is corrupt or was replaced")

    def _session(self, name: str):
        with self._lock:
            if name not in self._sessions:
                from vidsearch.runtime.sessions import inference_session

                self._sessions[name] = inference_session(self.directory / name, threads=self._threads[name])
            return self._sessions[name]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Texts → [N, D] L2-normalised float32 (the tower runs up to the batch's last end-of-text token)."""
        tokens = self.tokenizer(list(texts))
        length = int(tokens.argmax(axis=1).max()) + 1
        return self._session(TEXT_FILE).run(None, {"tokens": tokens[:, :length]})[0]

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [..., H, W, 3] → normalised float32 [..., 3, S, S]: short side to S (bicubic), centre crop."""
        leading, size = frames.shape[:-3], self.image_size
        images = frames.reshape(-1, *frames.shape[-3:])
        if images.shape[1:3] != (size, size):
            images = np.stack([resize_crop(image, size) for image in images])
        pixels = (images.astype(np.float32) / 255 - np.float32(self.config["mean"])) / np.float32(self.config["std"])
        return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).reshape(*leading, 3, size, size)

    def encode_videos(self, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """uint8 frames [B, T, H, W, 3] (T ≤ num_frames) and mask [B, T] (True: a real frame) → [B, D]."""
        inputs = {"frames": self.preprocess(frames), "mask": np.asarray(mask, dtype=bool)}
        return self._session(VIDEO_FILE).run(None, inputs)[0]


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's resize (short side to `size`, bicubic, antialiased) then centre crop, through Pillow; an image
    longer than 4 : 1 is first cut to its middle at 4 : 1 (`vidsearch.video.decode.central`)."""
    from vidsearch.video.decode import central

    image = central(image)
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    resized_long = int(size * long / short)
    resized_w, resized_h = (size, resized_long) if width <= height else (resized_long, size)
    resized = np.asarray(Image.fromarray(image).resize((resized_w, resized_h), Image.Resampling.BICUBIC))
    top, left = int(round((resized_h - size) / 2)), int(round((resized_w - size) / 2))
    return resized[top:top + size, left:left + size]
