"""MSVD as CLIP4Clip distributes it, converted into the manifest.

Files: ``raw-captions.pkl`` (a pickled dict: video id → list of captions, each a list of tokens) and
``train_list.txt``, ``val_list.txt``, ``test_list.txt`` (one video id a line; 1 200 / 100 / 670 videos). The videos are
``{videos_dir}/{video_id}.avi``. Every caption of a test video is a query (CLIP4Clip's protocol).

A pickle can run any code while it loads, so the captions are read by `SafeUnpickler`, which admits only the
opcodes for plain containers, strings and numbers and refuses every global (class or function) the file names.
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

from vidsearch.data.manifest import ManifestError, VideoRecord, relative_source

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}


class SafeUnpickler(pickle.Unpickler):
    """Loads only plain data: dicts, lists, tuples, sets, strings, bytes, numbers, booleans and None."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only plain data is allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: only plain data is allowed")


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle a file of plain data without running any code from it (Python 2 strings are read as UTF-8)."""
    data = Path(path).read_bytes()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ManifestError(f"{path}: not a plain-data pickle: {error}") from None


def read_raw_captions(path: str | Path) -> dict[str, list[str]]:
    """video id → captions, each caption's tokens joined by spaces."""
    raw = safe_load_pickle(path)
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a dict of video id → captions, got {type(raw).__name__}")
    return {str(video_id): [_join_tokens(caption, path=path, video_id=video_id) for caption in captions]
            for video_id, captions in raw.items()}


def _join_tokens(caption: Any, *, path: str | Path, video_id: Any) -> str:
    if isinstance(caption, str):
        return caption.strip()
    if isinstance(caption, (list, tuple)) and all(isinstance(token, str) for token in caption):
        return " ".join(caption).strip()
    raise ManifestError(f"{path}: video {video_id!r}: a caption must be a list of token strings")


def read_split_list(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def convert_msvd(*, data_dir: str | Path, videos_dir: str | Path, manifest_dir: str | Path) -> list[VideoRecord]:
    """Manifest records for MSVD's train, val and test lists, all captions of each video."""
    data_dir = Path(data_dir)
    captions = read_raw_captions(data_dir / "raw-captions.pkl")
    records = []
    for split, name in SPLIT_FILES.items():
        for video_id in read_split_list(data_dir / name):
            if not captions.get(video_id):
                raise ManifestError(f"{data_dir / name}: video {video_id!r} has no captions in raw-captions.pkl")
            source = relative_source(Path(videos_dir) / f"{video_id}.avi", manifest_dir)
            records.append(VideoRecord(video_id=video_id, source=source, captions=tuple(captions[video_id]),
                                       split=split))
    log.info("MSVD: %s", ", ".join(f"{sum(r.split == s for r in records)} {s}" for s in SPLIT_FILES))
    return records
