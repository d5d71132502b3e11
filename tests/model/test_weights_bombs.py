"""Small hostile weights files must be refused in one line without the memory they declare.

Each crafted file is loaded in a child process under an address-space limit (RLIMIT_AS: what the warmed-up process
already maps plus a budget); the child resets its peak RSS after warming up, so the peak it reports is what reading
the file cost. A refusal must be a one-line `WeightsError`; an allocation failure, a traceback or a file written
means the defect is back.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

BUDGET_BYTES = 1536 << 20
# What reading one crafted file may cost on top of the warmed-up process: every file here is under 1 MB.
MAX_PEAK_MB = 64

CHILD = r"""
import contextlib, io, json, resource, sys
from vidsearch.cli import main
from vidsearch.model.backbone import load_backbone
from vidsearch.model.weights import WeightsError


def peak_rss_mb():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def run(job):
    result, stderr = {}, io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            if job["mode"] == "convert":
                result["exit"] = main(["convert", job["path"], "--out", job["out"]])
            elif job["mode"] == "checkpoint":
                from vidsearch.model.checkpoint import load_checkpoint

                load_checkpoint(job["path"])
                result["outcome"] = "loaded"
            else:
                load_backbone(None if job["mode"] == "load-directory" else "vidsearch-tiny", weights=job["path"])
                result["outcome"] = "loaded"
    except WeightsError as error:
        result.update(outcome="refused", message=str(error))
    except BaseException as error:
        result.update(outcome=type(error).__name__, message=str(error).strip()[:300])
    result["stderr"] = stderr.getvalue()
    return result


jobs, budget = json.loads(sys.argv[1]), int(sys.argv[2])
load_backbone("vidsearch-tiny")  # warm up: thread pools and allocator arenas exist before the limit
mapped = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + budget, mapped + budget))
for name, job in jobs.items():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak RSS (a child's getrusage ru_maxrss would include its parent's peak)
    before = peak_rss_mb()
    result = run(job)
    result["peak_mb"] = peak_rss_mb() - before
    print(json.dumps({"name": name, **result}), flush=True)
"""


def run_child(jobs: dict[str, dict], budget: int = BUDGET_BYTES) -> dict[str, dict]:
    """Load (or convert) each job's file in one child under the limit; each job's result by name."""
    import vidsearch

    env = {**os.environ, "PYTHONPATH": str(Path(vidsearch.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs), str(budget)], capture_output=True,
                          text=True, env=env, timeout=900)
    results = {r["name"]: r for r in map(json.loads, done.stdout.strip().splitlines() if done.stdout.strip() else [])}
    assert done.returncode == 0 and set(results) == set(jobs), \
        f"child died ({done.returncode}) after {sorted(results)}: {done.stderr[-2000:]}"
    return results


# --- a pickle writer for crafted files (only what these files need) --------------------------------------------------


@dataclass
class Global:
    module: str
    name: str


@dataclass
class Call:
    func: Global
    args: tuple


@dataclass
class NewObject:
    cls: Global
    state: dict


@dataclass
class Persistent:
    pid: tuple


def _ops(obj) -> bytes:
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        raw = obj.to_bytes(obj.bit_length() // 8 + 1, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(obj, str):
        return b"X" + len(obj.encode()).to_bytes(4, "little") + obj.encode()
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(_ops, obj)) + b"t"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_ops(k) + _ops(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, Global):
        return f"c{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, Call):
        return _ops(obj.func) + _ops(obj.args) + b"R"
    if isinstance(obj, NewObject):
        return _ops(obj.cls) + b")\x81" + _ops(obj.state) + b"b"
    if isinstance(obj, Persistent):
        return _ops(obj.pid) + b"Q"
    raise TypeError(obj)


def dump(obj) -> bytes:
    return b"\x80\x02" + _ops(obj) + b"."


def tensor(numel: int, size: tuple, stride: tuple, offset: int = 0, key: str = "0", legacy: bool = False) -> Call:
    """`_rebuild_tensor_v2` of a float storage; legacy streams add the storage's view metadata (None)."""
    pid = ("storage", Global("torch", "FloatStorage"), key, "cpu", numel) + ((None,) if legacy else ())
    storage = Persistent(pid)
    return Call(Global("torch._utils", "_rebuild_tensor_v2"),
                (storage, offset, size, stride, False, Call(Global("collections", "OrderedDict"), ())))


def write_archive(path: Path, root, records: dict[str, bytes], *, torchscript: bool,
                  deflated: dict[str, int] | None = None) -> Path:
    """A torch.save zip (or, with constants.pkl and a module root, an OpenAI TorchScript archive)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", dump(root))
        archive.writestr("archive/version", "3\n")
        if torchscript:
            archive.writestr("archive/constants.pkl", pickle.dumps((), protocol=2))
        for key, data in records.items():
            archive.writestr(f"archive/data/{key}", data)
        for key, zeros in (deflated or {}).items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as handle:
                chunk = bytes(1 << 20)
                for _ in range(zeros >> 20):
                    handle.write(chunk)
    return path


def torchscript_module(attributes: dict) -> NewObject:
    return NewObject(Global("__torch__.model", "CLIP"), attributes)


# --- the crafted files ------------------------------------------------------------------------------------------------

GB = 1 << 30


def ts_zero_stride(tmp: Path) -> Path:
    """A 4 GB view of a 1-element storage: stride 0."""
    return write_archive(tmp / "ViT-B-32.pt", torchscript_module({"visual": tensor(1, (GB,), (0,))}),
                         {"0": bytes(4)}, torchscript=True)


def ts_view_past_storage(tmp: Path) -> Path:
    return write_archive(tmp / "ViT-B-32.pt", torchscript_module({"visual": tensor(4, (1 << 20,), (1,))}),
                         {"0": bytes(16)}, torchscript=True)


def ts_offset_out_of_bounds(tmp: Path) -> Path:
    return write_archive(tmp / "ViT-B-32.pt", torchscript_module({"visual": tensor(4, (4,), (1,), offset=1 << 40)}),
                         {"0": bytes(16)}, torchscript=True)


def ts_storage_larger_than_record(tmp: Path) -> Path:
    """The storage declares 1 GB, its record holds 16 bytes."""
    return write_archive(tmp / "ViT-B-32.pt", torchscript_module({"visual": tensor(GB // 4, (4,), (1,))}),
                         {"0": bytes(16)}, torchscript=True)


def ts_deflated_record(tmp: Path) -> Path:
    """A 0.25 MB deflated record that inflates to 256 MB."""
    return write_archive(tmp / "ViT-B-32.pt", torchscript_module({"visual": tensor(1 << 26, (1 << 26,), (1,))}),
                         {}, torchscript=True, deflated={"0": 256 << 20})


def torch_zip_deflated_record(tmp: Path) -> Path:
    return write_archive(tmp / "weights.pt", {"visual.proj": tensor(1 << 26, (1 << 26,), (1,))}, {},
                         torchscript=False, deflated={"0": 256 << 20})


def torch_save_expanded(tmp: Path) -> Path:
    """`torch.save` of a 2 GB broadcast view of one float: a 1.5 KB file."""
    torch.save({"visual.proj": torch.zeros(1).expand(1 << 29)}, tmp / "weights.pt")
    return tmp / "weights.pt"


def legacy_declared_400gb(tmp: Path) -> Path:
    """A legacy torch.save stream whose one storage declares 10^11 floats (400 GB); the file ends there."""
    path = tmp / "weights.pt"
    numel = 10**11
    header = b"".join(pickle.dumps(x, protocol=2) for x in
                      (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    main = dump({"visual.proj": tensor(numel, (numel,), (1,), key="1", legacy=True)})
    path.write_bytes(header + main + pickle.dumps(["1"], protocol=2) + numel.to_bytes(8, "little"))
    return path


CRAFTED = {
    "torchscript-zero-stride": (ts_zero_stride, "load", r"4 bytes|zero or overlapping strides"),
    "torchscript-view-past-storage": (ts_view_past_storage, "load", "out of bounds"),
    "torchscript-offset-out-of-bounds": (ts_offset_out_of_bounds, "load", "out of bounds"),
    "torchscript-storage-larger-than-record": (ts_storage_larger_than_record, "load", "its record holds 16"),
    "torchscript-deflated-record": (ts_deflated_record, "load", "declare 268435456 bytes but the file holds only"),
    "torch-zip-deflated-record": (torch_zip_deflated_record, "convert",
                                  "declare 268435456 bytes but the file holds only"),
    "torch-save-expanded-view": (torch_save_expanded, "convert", "zero or overlapping strides"),
    "legacy-declared-400-GB": (legacy_declared_400gb, "convert", "declare 400000000000 bytes but the file holds only"),
}


def _hf_directory(tmp: Path, vision: dict) -> Path:
    directory = tmp / "clip-hf"
    directory.mkdir()
    config = {"projection_dim": 16, "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                                                      "num_hidden_layers": 1, "num_attention_heads": 2,
                                                      "image_size": 32, "patch_size": 16, **vision},
              "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "max_position_embeddings": 16}}
    (directory / "config.json").write_text(json.dumps(config))
    save_file({"logit_scale": torch.zeros(())}, str(directory / "model.safetensors"))
    return directory


HF_CONFIGS = {
    "hf-config-absurd-but-in-range": ({"hidden_size": 16384, "intermediate_size": 65536, "num_hidden_layers": 64,
                                       "num_attention_heads": 16},
                                      "describes a model of .* parameters but model.safetensors"),
    "hf-config-out-of-range": ({"hidden_size": 10**7, "num_attention_heads": 1},
                               "hidden_size is 10000000: expected an integer"),
    "hf-config-zero-heads": ({"num_attention_heads": 0}, "num_attention_heads is 0: expected an integer from 1"),
    "hf-config-heads-not-dividing": ({"num_attention_heads": 3}, "not divisible by num_attention_heads 3"),
}


def _checkpoint(tmp: Path, vision: dict) -> Path:
    """A real vidsearch checkpoint whose config.json then claims a larger vision tower."""
    from vidsearch.model.checkpoint import save_checkpoint
    from vidsearch.model.source import ModelSource

    save_checkpoint(ModelSource(backbone="vidsearch-tiny", num_frames=2).load(), tmp / "ckpt")
    config = json.loads((tmp / "ckpt" / "config.json").read_text())
    config["clip_config"]["vision_cfg"].update(vision)
    (tmp / "ckpt" / "config.json").write_text(json.dumps(config))
    return tmp / "ckpt"


CHECKPOINT_CONFIGS = {
    "checkpoint-config-absurd-but-in-range": ({"width": 16384, "layers": 64},
                                              "describes a model of .* parameters but model.safetensors"),
    "checkpoint-config-million-layers": ({"layers": 10**6}, "vision_cfg.layers is 1000000: expected an integer"),
}


def _genuine(tmp: Path) -> Path:
    from vidsearch.model.backbone import build_clip, clip_config_for

    torch.manual_seed(0)
    torch.save(build_clip(clip_config_for("vidsearch-tiny")).state_dict(), tmp / "weights.pt")
    return tmp / "weights.pt"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """Every crafted file (and one genuine file) read in one child process: imports are paid once."""
    jobs, paths = {}, {}
    for name, (craft, mode, _) in CRAFTED.items():
        paths[name] = craft(tmp_path_factory.mktemp(name))
        jobs[name] = {"mode": mode, "path": str(paths[name]), "out": str(paths[name].parent / "converted.safetensors")}
    for name, (vision, _) in HF_CONFIGS.items():
        paths[name] = _hf_directory(tmp_path_factory.mktemp(name), vision)
        jobs[name] = {"mode": "load-directory", "path": str(paths[name])}
    for name, (vision, _) in CHECKPOINT_CONFIGS.items():
        paths[name] = _checkpoint(tmp_path_factory.mktemp(name), vision)
        jobs[name] = {"mode": "checkpoint", "path": str(paths[name])}
    paths["genuine"] = _genuine(tmp_path_factory.mktemp("genuine"))
    jobs["genuine"] = {"mode": "load", "path": str(paths["genuine"])}
    outcome = run_child(jobs)
    return {name: (outcome[name], paths[name]) for name in jobs}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_weights_file_is_refused_in_one_line_within_budget(name, results):
    result, path = results[name]
    message = CRAFTED[name][2]
    if CRAFTED[name][1] == "convert":
        lines = result["stderr"].strip().splitlines()
        assert result.get("exit") == 2 and len(lines) == 1, result
        assert lines[0].startswith("vidsearch convert: error: ") and "refused" in lines[0], lines
        assert re.search(message, lines[0]), lines[0]
        assert not list(path.parent.glob("*converted*")), "convert wrote a file"
    else:
        assert result["outcome"] == "refused", result
        assert "\n" not in result["message"] and str(path) in result["message"], result
        assert re.search(message, result["message"]), result
    assert result["peak_mb"] < MAX_PEAK_MB, f"{path.stat().st_size} B file cost {result['peak_mb']:.0f} MB: {result}"


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_hugging_face_config_with_absurd_dimensions_is_refused_before_building(name, results):
    result, _ = results[name]
    assert result["outcome"] == "refused" and "config.json" in result["message"], result
    assert re.search(HF_CONFIGS[name][1], result["message"]), result
    assert result["peak_mb"] < MAX_PEAK_MB, result


@pytest.mark.parametrize("name", sorted(CHECKPOINT_CONFIGS))
def test_checkpoint_config_with_absurd_dimensions_is_refused_before_building(name, results):
    result, _ = results[name]
    assert result["outcome"] == "refused" and "config.json" in result["message"], result
    assert re.search(CHECKPOINT_CONFIGS[name][1], result["message"]), result
    assert result["peak_mb"] < MAX_PEAK_MB, result


def test_a_genuine_file_loads_under_the_same_limit(results):
    """The limit is not what refuses the crafted files: real weights of the same architecture load under it."""
    result, path = results["genuine"]
    assert result["outcome"] == "loaded", result


def measure(budget_mb: int) -> None:
    """Peak memory of reading each crafted file, one JSON line each, with the sources on PYTHONPATH (docs/security.md
    gives the figures): `PYTHONPATH=src python tests/model/test_weights_bombs.py [BUDGET_MB]`."""
    import tempfile

    root, jobs = Path(tempfile.mkdtemp()), {}
    for name, (craft, mode, _) in CRAFTED.items():
        (root / name).mkdir()
        path = craft(root / name)
        jobs[name] = {"mode": mode, "path": str(path), "out": str(root / name / "converted.safetensors")}
    for name, (vision, _) in HF_CONFIGS.items():
        (root / name).mkdir()
        jobs[name] = {"mode": "load-directory", "path": str(_hf_directory(root / name, vision))}
    for name, (vision, _) in CHECKPOINT_CONFIGS.items():
        (root / name).mkdir()
        jobs[name] = {"mode": "checkpoint", "path": str(_checkpoint(root / name, vision))}
    (root / "genuine").mkdir()
    jobs["genuine"] = {"mode": "load", "path": str(_genuine(root / "genuine"))}
    for name, result in run_child(jobs, budget_mb << 20).items():
        path, out = Path(jobs[name]["path"]), Path(jobs[name].get("out", root / "none"))
        size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
        print(json.dumps({"file": name, "bytes": size, "peak_mib": round(result["peak_mb"], 1),
                          "outcome": result.get("outcome") or f"exit {result.get('exit')}",
                          "written_bytes": out.stat().st_size if out.exists() else 0,
                          "message": (result.get("message") or result["stderr"]).strip()[-120:]}))


if __name__ == "__main__":
    measure(int(sys.argv[1]) if len(sys.argv) > 1 else BUDGET_BYTES >> 20)
