"""Reading CLIP weights from every supported format, without executing code from the file.

Formats (detected from the file, not its name):
- safetensors (open_clip or Hugging Face parameter names);
- a PyTorch zip or legacy file saved with `torch.save`, read with `torch.load(weights_only=True)`;
- an OpenAI TorchScript archive (`ViT-B-32.pt`): its `data.pkl` is read by a restricted unpickler that admits only
  tensor rebuilding and stand-ins for TorchScript module objects; no `torch.jit.load`, no fallback;
- a Hugging Face CLIP directory (`config.json` + `model.safetensors`, or a weights-only `pytorch_model.bin`).

Hugging Face names are converted to open_clip names here, so everything downstream sees one naming.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Tensor attributes of OpenAI's TorchScript modules that are not part of an open_clip state dict.
_OPENAI_NON_STATE = {"input_resolution", "context_length", "vocab_size"}
_OPENAI_NON_STATE_SUFFIXES = (".attn_mask", "attn_mask")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


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


def read_weights(path: str | Path) -> LoadedWeights:
    """Read CLIP weights from `path` in any supported format; raise `WeightsError` with a clear message otherwise."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(path, "no such file or directory")
    if path.is_dir():
        return _read_hf_directory(path)
    head = _read_head(path)
    if head.startswith(b"PK\x03\x04"):
        return _read_zip(path)
    if _looks_like_safetensors(head):
        return _from_state_dict(_read_safetensors(path), "safetensors", path, quick_gelu=_saved_quick_gelu(path))
    if head[:1] == b"\x80":
        return _from_state_dict(_torch_load(path), "torch-legacy", path)
    raise WeightsError(path, "unknown format (expected safetensors, a torch.save file, an OpenAI TorchScript .pt, "
                             "or a Hugging Face CLIP directory)")


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        raise WeightsError(path, "the file is empty")
    return head


def _looks_like_safetensors(head: bytes) -> bool:
    header_size = int.from_bytes(head[:8], "little")
    return len(head) >= 9 and 0 < header_size < 100_000_000 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(path, f"truncated or corrupt safetensors file ({error})") from None


def _saved_quick_gelu(path: Path) -> bool | None:
    """`vidsearch convert` records whether the source used QuickGELU (OpenAI weights do) in the file's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        value = (handle.metadata() or {}).get("quick_gelu")
    return {"True": True, "False": False}.get(value)


def _read_zip(path: Path) -> LoadedWeights:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(name.endswith("/constants.pkl") for name in names):
                return _from_state_dict(_read_torchscript(path, archive, names), "openai-torchscript", path,
                                        quick_gelu=True)
    except zipfile.BadZipFile as error:
        raise WeightsError(path, f"truncated or corrupt zip archive ({error})") from None
    return _from_state_dict(_torch_load(path), "torch", path)


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(path, f"refused: the file holds objects other than tensors ({_first_line(error)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise WeightsError(path, f"truncated or corrupt PyTorch file ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# --- OpenAI TorchScript archives, read without executing code ------------------------------------------------------


class _ScriptModule:
    """Stands for a TorchScript module object in data.pkl: it only keeps the attributes the pickle gives it."""

    def __init__(self, *args: Any) -> None:
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected TorchScript module state")
        self.attributes = state


def _as_list(values: Any) -> list:
    return list(values)


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *rest: Any) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


class _TorchScriptUnpickler(pickle.Unpickler):
    """Admits tensor rebuilding, storages, OrderedDict, int lists and TorchScript module stand-ins; nothing else."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path):
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__."):
            return _ScriptModule
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch.jit._pickle" and name.startswith("build_") and name.endswith("list"):
            return _as_list
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        storage = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if storage.numel() < numel:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        return storage


def _read_torchscript(path: Path, archive: zipfile.ZipFile, names: list[str]) -> dict[str, torch.Tensor]:
    data_name = next((n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")), None)
    if data_name is None:
        raise WeightsError(path, "TorchScript archive without data.pkl")
    prefix = data_name.rsplit("/", 1)[0]
    try:
        root = _TorchScriptUnpickler(archive.read(data_name), archive, prefix, path).load()
    except (pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError, zipfile.BadZipFile) as error:
        raise WeightsError(path, f"refused or corrupt TorchScript archive ({error})") from None
    if not isinstance(root, _ScriptModule):
        raise WeightsError(path, "TorchScript archive whose root is not a module")
    return {key: value.clone() for key, value in _flatten_module(root, "")}


def _flatten_module(module: _ScriptModule, prefix: str):
    for name, value in module.attributes.items():
        if isinstance(value, torch.Tensor):
            if name not in _OPENAI_NON_STATE and not name.endswith(_OPENAI_NON_STATE_SUFFIXES):
                yield prefix + name, value
        elif isinstance(value, _ScriptModule):
            yield from _flatten_module(value, f"{prefix}{name}.")


# --- Hugging Face CLIP directories ---------------------------------------------------------------------------------


def _read_hf_directory(path: Path) -> LoadedWeights:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise WeightsError(path, "directory without config.json (expected a Hugging Face CLIP directory)")
    try:
        hf_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise WeightsError(config_file, f"not valid JSON ({error})") from None
    if "vision_config" not in hf_config or "text_config" not in hf_config:
        raise WeightsError(config_file, "not a CLIP config (needs vision_config and text_config)")
    weights_file = _hf_weights_file(path)
    raw = _read_safetensors(weights_file) if weights_file.suffix == ".safetensors" else _torch_load(weights_file)
    loaded = LoadedWeights(hf_to_open_clip(raw, path=weights_file), "huggingface", path,
                           quick_gelu=_hf_quick_gelu(hf_config), clip_config=hf_config_to_open_clip(hf_config),
                           files=[config_file, weights_file])
    return loaded


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


def hf_config_to_open_clip(hf_config: dict[str, Any]) -> dict[str, Any]:
    """The open_clip model config equivalent to a Hugging Face `CLIPConfig` dictionary."""
    vision, text = hf_config["vision_config"], hf_config["text_config"]
    defaults = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                "image_size": 224, "patch_size": 32}
    vision = {**defaults, **vision}
    text = {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "intermediate_size": 2048,
            "max_position_embeddings": 77, "vocab_size": 49408, **text}
    return {
        "embed_dim": hf_config.get("projection_dim", 512),
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
    if any(key.startswith(("text_model.", "vision_model.")) for key in state):
        state, fmt = hf_to_open_clip(state, path=path), fmt + "+huggingface-names"
    return LoadedWeights(state, fmt, path, quick_gelu=quick_gelu, files=[path])


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(path, "the file does not hold a state dict (a mapping of names to tensors)")
    bad = [key for key, value in obj.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise WeightsError(path, f"the file holds non-tensor entries, e.g. {bad[:3]}")
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module."):]: value for key, value in obj.items()}
    return obj


def check_state_dict(path: str | Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], arch: str) -> None:
    """Compare names and shapes before loading, so a mismatch is reported as what it is."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise WeightsError(path, f"does not match architecture '{arch}': "
                                 + "; ".join(filter(None, [_describe_keys("missing keys", missing),
                                                           _describe_keys("unexpected keys", extra)])))
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        key, got, want = wrong[0]
        raise WeightsError(path, f"does not match architecture '{arch}': shape mismatch in {len(wrong)} tensor(s), "
                                 f"e.g. {key} is {list(got)} in the file but {list(want)} in the model")


def _describe_keys(label: str, keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")
    return f"{label}: {shown}"
