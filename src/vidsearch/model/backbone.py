"""The CLIP backbone: an open_clip model by architecture name, with weights from any supported source.

Architectures are data: open_clip's JSON model configs, plus vidsearch's own in `model/configs/` (a tiny one for
tests and the demo), registered the open_clip way. Weights come from an open_clip pretrained tag (downloaded by
open_clip when online), or a local file or directory read by `vidsearch.model.weights`.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.model import CLIP

from vidsearch.fsutil import sha256_file
from vidsearch.model.weights import (WHERE_WEIGHTS_COME_FROM, LoadedWeights, WeightsError, check_shapes,
                                     read_hf_directory_config, read_weights, shapes_of)

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Backbone:
    """An open_clip model and what is known of where its weights came from."""

    clip: torch.nn.Module
    clip_config: dict[str, Any]
    quick_gelu: bool
    weights_sha256: str | None
    weights_source: str | None


def available_architectures() -> list[str]:
    return open_clip.list_models()


def clip_config_for(name: str) -> dict[str, Any]:
    """The open_clip model config of a registered architecture, or a clear error listing close names."""
    config = open_clip.get_model_config(name)
    if config is None:
        close = [m for m in open_clip.list_models() if name.lower().split("-")[0] in m.lower()][:8]
        raise ValueError(f"unknown architecture '{name}'" + (f"; similar: {', '.join(close)}" if close else ""))
    return config


def build_clip(clip_config: dict[str, Any], *, quick_gelu: bool = False, precision: str = "fp32") -> torch.nn.Module:
    """A randomly initialised open_clip CLIP from a config dict (layer norms in fp32 for bf16/fp16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not '{precision}'")
    config = dict(clip_config)
    quick_gelu = bool(config.pop("quick_gelu", False) or quick_gelu)
    config.pop("custom_text", None)
    if "hf_model_name" in config.get("text_cfg", {}) or "timm_model_name" in config.get("vision_cfg", {}):
        raise ValueError("vidsearch needs an open_clip architecture with its own ViT and text transformer towers")
    cast_dtype = open_clip.get_cast_dtype(precision)
    model = CLIP(**config, quick_gelu=quick_gelu, cast_dtype=cast_dtype)
    if precision != "fp32":
        open_clip.model.convert_weights_to_lp(model, dtype=cast_dtype)
    return model.eval()


def expected_shapes(clip_config: dict[str, Any]) -> dict[str, torch.Size]:
    """The parameter shapes of the model a config describes, built on the meta device: nothing is allocated."""
    with torch.device("meta"):
        return shapes_of(build_clip(clip_config).state_dict())


def load_backbone(
    name: str = "ViT-B-32",
    *,
    weights: str | Path | None = None,
    pretrained: str | None = None,
    precision: str = "fp32",
) -> Backbone:
    """Build architecture `name` and load weights from a file/directory (`weights`) or a pretrained tag.

    With neither, the weights are random (tests, benchmarks). A Hugging Face directory carries its own
    architecture: `name` must then agree with it, or be None to take it from the directory.
    """
    if weights is not None and pretrained is not None:
        raise ValueError("give either weights (a local file or directory) or pretrained (an open_clip tag), not both")
    if pretrained is not None:
        return _from_pretrained_tag(name, pretrained, precision)
    if weights is None:
        config = clip_config_for(name)
        return Backbone(build_clip(config, precision=precision), config, bool(config.get("quick_gelu")), None, None)
    return _from_local_weights(name, Path(weights), precision)


def _from_local_weights(name: str | None, path: Path, precision: str) -> Backbone:
    """The architecture first (named, or from a Hugging Face directory's checked config), then weights checked
    against its shapes before they are allocated, then the model."""
    config = _resolve_config(name, path)
    arch = name or "the directory's config"
    loaded = read_weights(path, expected=expected_shapes(config), arch=arch)
    quick_gelu = bool(config.get("quick_gelu")) if loaded.quick_gelu is None else loaded.quick_gelu
    config = {**config, "quick_gelu": quick_gelu}
    clip = build_clip(config, precision=precision)
    state = _match_optional_shapes(loaded.state_dict, clip.state_dict())
    check_shapes(loaded.path, shapes_of(state), shapes_of(clip.state_dict()), arch)
    clip.load_state_dict(state, strict=True)
    log.info("loaded %s weights from %s", loaded.format, loaded.path)
    return Backbone(clip, config, quick_gelu, _weights_sha256(loaded), str(loaded.path))


def _resolve_config(name: str | None, path: Path) -> dict[str, Any]:
    if not path.is_dir():
        return clip_config_for(name or "ViT-B-32")
    directory_config = read_hf_directory_config(path)[3]
    if name is not None:
        named = clip_config_for(name)
        if _core_dims(named) != _core_dims(directory_config):
            raise WeightsError(path, f"wrong architecture: the directory describes {_core_dims(directory_config)}"
                                     f" but '{name}' is {_core_dims(named)}")
    return directory_config


def _core_dims(config: dict[str, Any]) -> dict[str, Any]:
    vision, text = config["vision_cfg"], config["text_cfg"]
    return {"embed_dim": config["embed_dim"], "image_size": vision["image_size"], "patch_size": vision["patch_size"],
            "vision_width": vision["width"], "vision_layers": vision["layers"], "text_width": text["width"],
            "text_layers": text["layers"], "context_length": text.get("context_length", 77)}


def _match_optional_shapes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A scalar vs 1-element logit_scale is a storage detail, not an architecture difference."""
    state = dict(state)
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in expected and state[key].numel() == expected[key].numel() == 1:
            state[key] = state[key].reshape(expected[key].shape)
    return state


def _weights_sha256(loaded: LoadedWeights) -> str:
    files = loaded.files or [loaded.path]
    return sha256_file(files[-1])


def _from_pretrained_tag(name: str, tag: str, precision: str) -> Backbone:
    check_pretrained_available(name, tag)
    try:
        clip = open_clip.create_model(name, pretrained=tag, precision=precision, require_pretrained=True)
    except Exception as error:  # open_clip raises many kinds here: network, hub, unknown tag
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"{name}:{tag}", f"could not get open_clip pretrained weights ({detail}). Without internet, "
                                            "download them once elsewhere and pass --weights FILE") from error
    config = {**clip_config_for(name), "quick_gelu": _uses_quick_gelu(clip)}
    return Backbone(clip.eval(), config, config["quick_gelu"], None, f"open_clip:{name}:{tag}")


def check_pretrained_available(name: str, tag: str) -> None:
    """Fail at once, in one line, when open_clip would have to download the weights and the network is not there
    (open_clip and the Hugging Face hub would otherwise retry for a minute, warning at every try)."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise WeightsError(f"{name}:{tag}", f"open_clip has no pretrained weights '{tag}' for {name}"
                                            + (f" (it has: {', '.join(tags)})" if tags else ""))
    if _pretrained_in_cache(cfg):
        return
    host = "huggingface.co" if cfg.get("hf_hub") and _has_hf_hub() else urlparse(cfg.get("url", "")).hostname
    offline = cfg.get("hf_hub") and os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    if offline or not host or not _reachable(host):
        raise WeightsError(f"{name}:{tag}", f"open_clip's '{tag}' weights for {name} are not in the local cache and "
                                            f"{host or 'their server'} cannot be reached (offline?). Download them "
                                            "once on a machine with internet and pass --weights FILE; "
                                            + WHERE_WEIGHTS_COME_FROM)


def _has_hf_hub() -> bool:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return False
    return True


def _pretrained_in_cache(cfg: dict[str, Any]) -> bool:
    if cfg.get("hf_hub") and _has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(cfg["hf_hub"])
        names = {filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors"}
        return any(isinstance(try_to_load_from_cache(model_id, name), str) for name in names)
    url = cfg.get("url", "")
    return bool(url) and (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file()


def _reachable(host: str, timeout_s: float = 5.0) -> bool:
    """Whether a TCP connection to the host (or to the HTTPS proxy the environment names) opens."""
    proxy = urllib.request.getproxies().get("https")
    target = (urlparse(proxy).hostname, urlparse(proxy).port or 443) if proxy else (host, 443)
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _uses_quick_gelu(clip: torch.nn.Module) -> bool:
    return any(isinstance(m, open_clip.transformer.QuickGELU) for m in clip.modules())


def convert_to_safetensors(source: str | Path, out: str | Path) -> Path:
    """Write the weights at `source` (any supported format) as a safetensors file with open_clip names."""
    loaded = read_weights(source)
    out = Path(out)
    state = {key: value.contiguous().clone() for key, value in loaded.state_dict.items()}
    metadata = {"source_format": loaded.format, "quick_gelu": str(loaded.quick_gelu)}
    save_file_atomic(state, out, metadata=metadata)
    return out


def save_file_atomic(state: dict[str, torch.Tensor], out: Path, *, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file into a temp file in the same directory, fsync, then an atomic rename."""
    import os

    from safetensors.torch import save_file

    from vidsearch.fsutil import fsync_dir

    tmp = out.with_name(f".{out.name}.partial")
    save_file(state, str(tmp), metadata=metadata)
    tmp.chmod(0o644)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, out)
    fsync_dir(out.parent)
