"""Reading CLIP weights from every supported format, without executing code from the file.

Formats (detected from the file, not its name):
- safetensors (open_clip or Hugging Face parameter names);
- a PyTorch zip or legacy file saved with `torch.save`, and an OpenAI TorchScript archive (`ViT-B-32.pt`): read by
  `vidsearch.model.tensorfile`'s restricted unpickler, which admits only tensor descriptions (and stand-ins for
  TorchScript module objects) and checks every one against the file before allocating; no `torch.load`, no
  `torch.jit.load`, no fallback;
- a Hugging Face CLIP directory (`config.json` + `model.safetensors`, or a weights-only `pytorch_model.bin`).

Hugging Face names are converted to open_clip names here, so everything downstream sees one naming.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vidsearch.model.tensorfile import (DescribedFile, ScriptModule, TensorFileError, TensorRef, describe_legacy,
                                        describe_zip, materialise)

log = logging.getLogger(__name__)

# Tensor attributes of OpenAI's TorchScript modules that are not part of an open_clip state dict.
_OPENAI_NON_STATE = {"input_resolution", "context_length", "vocab_size"}
_OPENAI_NON_STATE_SUFFIXES = (".attn_mask", "attn_mask")


ACCEPTED_FORMATS = ("expected safetensors, a torch.save file (.pt/.bin), an OpenAI TorchScript .pt, "
                    "or a Hugging Face CLIP directory with config.json")
WHERE_WEIGHTS_COME_FROM = (
    "CLIP weights come from OpenAI's CLIP release (ViT-B-32.pt, as the `clip` package downloads it), open_clip "
    "(open_clip_pytorch_model.bin or .safetensors on the Hugging Face Hub), or a Hugging Face CLIP directory "
    "(e.g. openai/clip-vit-base-patch32 with its config.json); " + ACCEPTED_FORMATS)


class WeightsError(ValueError):
    """Weights that cannot be used: the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass
class LoadedWeights:
    """A state dict in open_clip names, where it came from, and what it says about the architecture."""

    state_dict: dict[str, torch.Tensor]
    format: str
    path: Path
    quick_gelu: bool | None = None
    clip_config: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)


def read_weights(path: str | Path, *, expected: Mapping[str, torch.Size] | None = None,
                 arch: str = "the architecture") -> LoadedWeights:
    """Read CLIP weights from `path` in any supported format; raise `WeightsError` with a clear message otherwise.

    Every tensor's declared shape, strides and storage are checked against the file's size, and (for files in
    open_clip names) against `expected`, the architecture's shapes, before any tensor data is allocated.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(path, "no such file or directory. " + WHERE_WEIGHTS_COME_FROM)
    if path.is_dir():
        return _read_hf_directory(path)
    head = _read_head(path)
    if head.startswith(b"PK\x03\x04"):
        return _read_zip(path, expected, arch)
    if _looks_like_safetensors(head):
        return _from_state_dict(_read_safetensors(path, expected, arch), "safetensors", path,
                                quick_gelu=_saved_quick_gelu(path))
    if head[:1] == b"\x80":
        state = _read_described(path, lambda: describe_legacy(path), expected, arch)
        return _from_state_dict(state, "torch-legacy", path)
    raise WeightsError(path, "unknown format (" + ACCEPTED_FORMATS + ")")


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        raise WeightsError(path, "the file is empty")
    return head


def _looks_like_safetensors(head: bytes) -> bool:
    header_size = int.from_bytes(head[:8], "little")
    return len(head) >= 9 and 0 < header_size < 100_000_000 and head[8:9] == b"{"


def _read_safetensors(path: Path, expected: Mapping[str, torch.Size] | None = None,
                      arch: str = "the architecture") -> dict[str, torch.Tensor]:
    """safetensors checks every tensor's extent against the file itself; the shapes are checked here first."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        if expected is not None:
            with safe_open(str(path), framework="pt") as handle:
                _check_declared(path, {k: torch.Size(handle.get_slice(k).get_shape()) for k in handle.keys()},
                                expected, arch)
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        if isinstance(error, WeightsError):
            raise
        raise WeightsError(path, f"truncated or corrupt safetensors file ({_first_line(error)})") from None


def _saved_quick_gelu(path: Path) -> bool | None:
    """`vidsearch convert` records whether the source used QuickGELU (OpenAI weights do) in the file's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        value = (handle.metadata() or {}).get("quick_gelu")
    return {"True": True, "False": False}.get(value)


def _read_zip(path: Path, expected: Mapping[str, torch.Size] | None, arch: str) -> LoadedWeights:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise WeightsError(path, f"truncated or corrupt zip archive ({error})") from None
    torchscript = any(name.endswith("/constants.pkl") for name in archive.namelist())
    state = _read_described(path, lambda: describe_zip(path, archive, torchscript=torchscript), expected, arch)
    if torchscript:
        return _from_state_dict(state, "openai-torchscript", path, quick_gelu=True)
    return _from_state_dict(state, "torch", path)


def _read_described(path: Path, describe: Callable[[], DescribedFile], expected: Mapping[str, torch.Size] | None,
                    arch: str) -> dict[str, torch.Tensor]:
    """Describe the file's tensors, check them all, then materialise them; every refusal is one WeightsError."""
    described = None
    try:
        described = describe()
        refs = _state_refs(path, described.root)
        if expected is not None:
            _check_declared(path, {key: ref.shape for key, ref in refs.items()}, expected, arch)
        state = materialise(described, refs)
    except TensorFileError as error:
        raise WeightsError(path, f"refused: {error}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise WeightsError(path, f"truncated or corrupt file ({_first_line(error)})") from None
    finally:
        if described is not None:
            described.close()
    return state


def _state_refs(path: Path, root: Any) -> dict[str, TensorRef]:
    if isinstance(root, ScriptModule):
        return dict(_flatten_module(root, ""))
    return _unwrap(root, path)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _flatten_module(module: ScriptModule, prefix: str) -> Iterator[tuple[str, TensorRef]]:
    for name, value in module.attributes.items():
        if isinstance(value, TensorRef):
            if name not in _OPENAI_NON_STATE and not name.endswith(_OPENAI_NON_STATE_SUFFIXES):
                yield prefix + name, value
        elif isinstance(value, ScriptModule):
            yield from _flatten_module(value, f"{prefix}{name}.")


def _check_declared(path: Path, declared: Mapping[str, torch.Size], expected: Mapping[str, torch.Size],
                    arch: str) -> None:
    """Shapes in open_clip names are checked against the architecture before loading; Hugging Face names later."""
    if not _has_hf_names(declared):
        check_shapes(path, _unwrapped_names(declared), expected, arch)


# --- Hugging Face CLIP directories ---------------------------------------------------------------------------------


def _read_hf_directory(path: Path) -> LoadedWeights:
    config_file, weights_file, hf_config, clip_config = read_hf_directory_config(path)
    if weights_file.suffix == ".safetensors":
        raw = _read_safetensors(weights_file)
    else:
        raw = _read_described(weights_file, lambda: _describe_bin(weights_file), None, "")
    return LoadedWeights(hf_to_open_clip(raw, path=weights_file), "huggingface", path,
                         quick_gelu=_hf_quick_gelu(hf_config), clip_config=clip_config,
                         files=[config_file, weights_file])


def _describe_bin(path: Path) -> DescribedFile:
    if _read_head(path).startswith(b"PK\x03\x04"):
        try:
            return describe_zip(path, zipfile.ZipFile(path), torchscript=False)
        except zipfile.BadZipFile as error:
            raise WeightsError(path, f"truncated or corrupt zip archive ({error})") from None
    return describe_legacy(path)


def read_hf_directory_config(path: Path) -> tuple[Path, Path, dict[str, Any], dict[str, Any]]:
    """A Hugging Face CLIP directory's config file, weights file, config, and the open_clip config it describes,
    checked (dimensions in range, a model no larger than the weights file can fill) before anything is built."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise WeightsError(path, "directory without config.json (expected a Hugging Face CLIP directory)")
    try:
        hf_config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(config_file, f"not valid JSON ({error})") from None
    if not isinstance(hf_config, dict) or not isinstance(hf_config.get("vision_config"), dict) \
            or not isinstance(hf_config.get("text_config"), dict):
        raise WeightsError(config_file, "not a CLIP config (needs vision_config and text_config)")
    weights_file = _hf_weights_file(path)
    clip_config = hf_config_to_open_clip(hf_config, path=config_file)
    check_clip_config(config_file, clip_config, weights_file)
    return config_file, weights_file, hf_config, clip_config


def _hf_weights_file(path: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise WeightsError(path, "Hugging Face directory without model.safetensors or pytorch_model.bin")


def _hf_quick_gelu(hf_config: dict[str, Any]) -> bool:
    acts = {hf_config["vision_config"].get("hidden_act", "quick_gelu"), hf_config["text_config"].get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or acts.pop() not in {"quick_gelu", "gelu"}:
        raise WeightsError("config.json", "unsupported activation (expected quick_gelu or gelu in both towers)")
    return hf_config["vision_config"].get("hidden_act", "quick_gelu") == "quick_gelu"


# Bounds on a config's dimensions: far above any CLIP released, far below what would exhaust a machine.
_DIMENSION_LIMITS = {"hidden_size": 16384, "num_hidden_layers": 256, "num_attention_heads": 1024,
                     "intermediate_size": 65536, "image_size": 4096, "patch_size": 1024,
                     "max_position_embeddings": 4096, "vocab_size": 1_000_000, "projection_dim": 16384}


def hf_config_to_open_clip(hf_config: dict[str, Any], *, path: str | Path = "config.json") -> dict[str, Any]:
    """The open_clip model config equivalent to a Hugging Face `CLIPConfig` dictionary (dimensions checked)."""
    defaults = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                "image_size": 224, "patch_size": 32}
    vision = {**defaults, **hf_config["vision_config"]}
    text = {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "intermediate_size": 2048,
            "max_position_embeddings": 77, "vocab_size": 49408, **hf_config["text_config"]}
    projection_dim = hf_config.get("projection_dim", 512)
    _check_dimensions(path, "vision_config", vision)
    _check_dimensions(path, "text_config", text)
    _check_dimensions(path, "", {"projection_dim": projection_dim})
    if vision["patch_size"] > vision["image_size"]:
        raise WeightsError(path, f"vision_config.patch_size {vision['patch_size']} is larger than its image_size")
    return {
        "embed_dim": projection_dim,
        "vision_cfg": {
            "image_size": vision["image_size"], "patch_size": vision["patch_size"], "width": vision["hidden_size"],
            "layers": vision["num_hidden_layers"], "head_width": vision["hidden_size"] // vision["num_attention_heads"],
            "mlp_ratio": vision["intermediate_size"] / vision["hidden_size"],
        },
        "text_cfg": {
            "context_length": text["max_position_embeddings"], "vocab_size": text["vocab_size"],
            "width": text["hidden_size"], "heads": text["num_attention_heads"], "layers": text["num_hidden_layers"],
            "mlp_ratio": text["intermediate_size"] / text["hidden_size"],
        },
    }


def _check_dimensions(path: str | Path, section: str, values: dict[str, Any]) -> None:
    prefix = f"{section}." if section else ""
    for key, limit in _DIMENSION_LIMITS.items():
        if key not in values:
            continue
        value = values[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise WeightsError(path, f"{prefix}{key} is {str(value)[:40]}: expected an integer from 1 to {limit}")
    heads = values.get("num_attention_heads")
    if heads is not None and values["hidden_size"] % heads:
        raise WeightsError(path, f"{prefix}hidden_size {values['hidden_size']} is not divisible by "
                                 f"num_attention_heads {heads}")


def check_clip_config(path: str | Path, clip_config: dict[str, Any], weights_file: Path) -> None:
    """Refuse a config describing a model larger than its weights file could fill (2 bytes a parameter at least):
    the model is sized on PyTorch's meta device, which allocates nothing."""
    from vidsearch.model.backbone import expected_shapes

    _check_tower_dimensions(path, clip_config)
    try:
        shapes = expected_shapes(clip_config)
    except (TypeError, ValueError, KeyError, ZeroDivisionError, RuntimeError, AssertionError) as error:
        raise WeightsError(path, f"invalid model config ({_first_line(error)})") from None
    parameters = sum(shape.numel() for shape in shapes.values())
    size = weights_file.stat().st_size
    if 2 * parameters > size + _CONFIG_SLACK_BYTES:
        raise WeightsError(path, f"describes a model of {parameters:,} parameters but {weights_file.name} holds only "
                                 f"{size:,} bytes: refused before allocating it")


_CONFIG_SLACK_BYTES = 1 << 20
# The same bounds in open_clip's names (a checkpoint's config.json records its open_clip config).
_TOWER_LIMITS = {"embed_dim": 16384, "width": 16384, "layers": 256, "heads": 1024, "head_width": 16384,
                 "image_size": 4096, "patch_size": 1024, "context_length": 4096, "vocab_size": 1_000_000}


def _check_tower_dimensions(path: str | Path, clip_config: dict[str, Any]) -> None:
    """Bounded integers before the model is even sized: a config of a million layers would take that many modules."""
    sections = {"": clip_config, "vision_cfg.": clip_config.get("vision_cfg"), "text_cfg.": clip_config.get("text_cfg")}
    for prefix, section in sections.items():
        if not isinstance(section, dict):
            raise WeightsError(path, f"model config without {prefix.rstrip('.') or 'a mapping'}")
        for key, limit in _TOWER_LIMITS.items():
            values = section.get(key, 1)
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                    raise WeightsError(path, f"{prefix}{key} is {str(values)[:40]}: expected an integer from 1 to "
                                             f"{limit}")


_HF_LAYER_NAMES = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_HF_TOP_NAMES = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_HF_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
_HF_TOWER_PREFIX = {"text_model.encoder.layers.": "transformer.resblocks.",
                    "vision_model.encoder.layers.": "visual.transformer.resblocks."}


def hf_to_open_clip(state: dict[str, torch.Tensor], *, path: str | Path = "weights") -> dict[str, torch.Tensor]:
    """Rename (and where needed transpose or fuse) Hugging Face CLIP parameters to open_clip's names."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key in _HF_TOP_NAMES:
            out[_HF_TOP_NAMES[key]] = value
        elif key in _HF_TRANSPOSED:
            out[_HF_TRANSPOSED[key]] = value.t().contiguous()
        else:
            _convert_layer_key(key, value, out, qkv, path)
    for name, parts in qkv.items():
        for kind in ("weight", "bias"):
            out[f"{name}.attn.in_proj_{kind}"] = torch.cat([parts[f"{p}_proj.{kind}"] for p in "qkv"])
    return out


def _convert_layer_key(key: str, value: torch.Tensor, out: dict, qkv: dict, path: str | Path) -> None:
    for hf_prefix, oc_prefix in _HF_TOWER_PREFIX.items():
        if key.startswith(hf_prefix):
            index, rest = key[len(hf_prefix):].split(".", 1)
            block = f"{oc_prefix}{index}"
            if rest.startswith("self_attn.") and rest[len("self_attn."):][0] in "qkv" and "_proj." in rest:
                qkv.setdefault(block, {})[rest[len("self_attn."):]] = value
                return
            for hf_name, oc_name in _HF_LAYER_NAMES.items():
                if rest.startswith(hf_name + "."):
                    out[f"{block}.{oc_name}{rest[len(hf_name):]}"] = value
                    return
    raise WeightsError(path, f"unexpected Hugging Face parameter '{key}'")


# --- common -------------------------------------------------------------------------------------------------------


def _from_state_dict(obj: Any, fmt: str, path: Path, quick_gelu: bool | None = None) -> LoadedWeights:
    state = _unwrap(obj, path)
    if _has_hf_names(state):
        state, fmt = hf_to_open_clip(state, path=path), fmt + "+huggingface-names"
    return LoadedWeights(state, fmt, path, quick_gelu=quick_gelu, files=[path])


def _has_hf_names(state: Mapping[str, Any]) -> bool:
    return any(key.startswith(("text_model.", "vision_model.")) for key in state)


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    """The state dict in what a file holds (tensors, or their descriptions), `state_dict` nesting and `module.` off."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(path, "the file does not hold a state dict (a mapping of names to tensors)")
    bad = [key for key, value in obj.items()
           if not isinstance(key, str) or not isinstance(value, (torch.Tensor, TensorRef))]
    if bad:
        raise WeightsError(path, f"the file holds non-tensor entries, e.g. {[str(key)[:40] for key in bad[:3]]}")
    return _unwrapped_names(obj)


def _unwrapped_names(state: Mapping[str, Any]) -> dict[str, Any]:
    if all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return dict(state)


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in state.items()}


# A scalar vs a 1-element logit_scale is a storage detail, not an architecture difference.
_RESHAPEABLE = ("logit_scale", "logit_bias")


def check_shapes(path: str | Path, state: Mapping[str, torch.Size], expected: Mapping[str, torch.Size],
                 arch: str) -> None:
    """Compare names and shapes before loading, so a mismatch is reported as what it is."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise WeightsError(path, f"does not match architecture '{arch}': "
                                 + "; ".join(filter(None, [_describe_keys("missing keys", missing),
                                                           _describe_keys("unexpected keys", extra)])))
    wrong = [(k, tuple(state[k]), tuple(v)) for k, v in expected.items()
             if state[k] != v and not (k in _RESHAPEABLE and state[k].numel() == v.numel() == 1)]
    if wrong:
        key, got, want = wrong[0]
        raise WeightsError(path, f"does not match architecture '{arch}': shape mismatch in {len(wrong)} tensor(s), "
                                 f"e.g. {key} is {list(got)} in the file but {list(want)} in the model")


def _describe_keys(label: str, keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")
    return f"{label}: {shown}"
