"""A checkpoint is a directory: `config.json` (everything needed to rebuild the model) and `model.safetensors`.

Loading needs nothing else: no command-line flags repeated, no pickle. The config records the backbone and its
open_clip config, head, adapters, frame count, which parameter groups were trained, the vidsearch version and the
sha256 of the base CLIP weights it started from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from vidsearch import __version__
from vidsearch.config import ModelConfig, from_dict
from vidsearch.fsutil import atomic_write_text, sha256_file
from vidsearch.model.backbone import Backbone, build_clip, save_file_atomic
from vidsearch.model.videoclip import VideoTextModel
from vidsearch.model.weights import WeightsError, check_clip_config, check_shapes, shapes_of

log = logging.getLogger(__name__)

FORMAT = "vidsearch-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_checkpoint(model: VideoTextModel, directory: str | Path, *, trained_groups: list[str] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write weights first, then the config: a directory with a config.json always has its weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
    save_file_atomic(state, directory / WEIGHTS_FILE, metadata={"format": FORMAT})
    config = {
        "format": FORMAT,
        "version": VERSION,
        "vidsearch_version": __version__,
        **model.describe(),
        "trained_groups": sorted(trained_groups or []),
        "weights_sha256": sha256_file(directory / WEIGHTS_FILE),
        "extra": extra or {},
    }
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(directory, f"not a vidsearch checkpoint (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise WeightsError(path, f"not valid JSON ({error})") from None
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise WeightsError(path, f"unsupported checkpoint format {config.get('format')!r} version {config.get('version')!r}")
    return config


def load_checkpoint(directory: str | Path, *, precision: str | None = None, verify: bool = True) -> VideoTextModel:
    """Rebuild the model a checkpoint describes and load its weights (optionally at another precision)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_checkpoint_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise WeightsError(directory, f"checkpoint without {WEIGHTS_FILE}")
    if verify and sha256_file(weights) != config["weights_sha256"]:
        raise WeightsError(weights, "sha256 does not match config.json: the file is corrupt or was replaced")
    model_config = from_dict(ModelConfig, config["model"])
    if precision is not None:
        model_config.precision = precision
    check_clip_config(directory / CONFIG_FILE, config["clip_config"], weights)
    clip = build_clip(config["clip_config"], precision=model_config.precision)
    backbone = Backbone(clip, config["clip_config"], bool(config["clip_config"].get("quick_gelu")),
                        config.get("base_weights_sha256"), str(directory))
    model = VideoTextModel(backbone, model_config)
    state = load_file(str(weights))
    check_shapes(weights, shapes_of(state), shapes_of(model.state_dict()), model_config.backbone)
    model.load_state_dict(state)
    model.trained_groups = config.get("trained_groups", [])
    return model.eval()
