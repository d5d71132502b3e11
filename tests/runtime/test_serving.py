"""Indexing, searching and serving with an exported model: ONNX Runtime only, no torch, the checkpoint's vectors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vidsearch.cli import main as cli
from vidsearch.demo import SHIPPED_CHECKPOINT, SHIPPED_EXPORTED
from vidsearch.store.store import Store

HERE = Path(__file__).parent
QUERY = "a red circle moves to the left"


def torchless(*args: str, block: bool = False) -> tuple[dict, subprocess.CompletedProcess]:
    """Run tests/runtime/torchless.py: (its JSON verdict, the finished process)."""
    command = [sys.executable, str(HERE / "torchless.py"), *(["--block"] if block else []), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1]), done


@pytest.fixture(scope="module")
def library(tmp_path_factory, make_keyframe_library):
    """A small moving-shapes library and its keyframe cache at the demo model's frame size and count."""
    return make_keyframe_library(tmp_path_factory.mktemp("library"), videos=6, size=48, seconds=4.0, frames=8)


@pytest.fixture(scope="module")
def onnx_store(library):
    store = library / "onnx-store"
    verdict, done = torchless("cli", "index", "--model", SHIPPED_EXPORTED, "--frames", library / "cache",
                              "--store", store, "--data", library / "lib" / "manifest.jsonl")
    assert verdict == {"rc": 0, "imported": []}, done.stdout + done.stderr
    return store


def test_search_and_serve_with_an_exported_model_never_import_torch(onnx_store):
    for args in (["cli", "search", QUERY, "--store", onnx_store, "--json"],  # the store's own (exported) model
                 ["cli", "search", QUERY, "--store", onnx_store, "--model", SHIPPED_EXPORTED, "--json"],
                 ["api", onnx_store, SHIPPED_EXPORTED, QUERY]):
        verdict, done = torchless(*args)
        assert verdict == {"rc": 0, "imported": []}, (args, done.stdout[-2000:], done.stderr[-2000:])
        result = json.loads(done.stdout[:done.stdout.rindex("\n{")])
        assert result["hits"][0]["video_id"], result


def test_without_torch_search_works_and_training_commands_say_which_extra(onnx_store, library, tmp_path):
    verdict, done = torchless("cli", "search", QUERY, "--store", onnx_store, block=True)
    assert verdict["rc"] == 0 and "videos for" in done.stdout, done.stderr[-2000:]
    for args in (["export", SHIPPED_CHECKPOINT, "--out", tmp_path / "x"],
                 ["index", "--checkpoint", SHIPPED_CHECKPOINT, "--frames", library / "cache", "--store", tmp_path / "s"]):
        verdict, done = torchless("cli", *args, block=True)
        assert verdict["rc"] == 2, done.stderr
        hint = ", or use an exported model (--model DIR)" if args[0] == "index" else ""
        assert done.stderr.strip().splitlines() == [
            f"vidsearch {args[0]}: error: this needs PyTorch (torch is not installed): pip install 'vidsearch[train]'"
            + hint]
    assert list(tmp_path.iterdir()) == []


def test_a_store_indexed_through_pytorch_or_onnx_holds_the_same_vectors(onnx_store, library, tmp_path, capsys):
    torch_store = tmp_path / "torch-store"
    assert cli(["index", "--checkpoint", str(SHIPPED_CHECKPOINT), "--frames", str(library / "cache"),
                "--store", str(torch_store)]) == 0
    ours, theirs = Store.open(onnx_store), Store.open(torch_store)
    assert ours.fingerprint == theirs.fingerprint
    assert list(ours.rows.video_id) == list(theirs.rows.video_id)
    cosine = (ours.array("video_feature") * theirs.array("video_feature")).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine
    capsys.readouterr()
    assert cli(["search", QUERY, "--store", str(torch_store), "--model", str(SHIPPED_EXPORTED), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"]


@pytest.mark.slow  # quantises the demo model (~20 s on a busy machine); test_export covers int8 fingerprints in CI
def test_an_int8_model_is_refused_by_a_store_of_the_fp32_model(onnx_store, tmp_path, capsys):
    from vidsearch.model.checkpoint import load_checkpoint
    from vidsearch.model.export import export_model

    int8 = export_model(load_checkpoint(SHIPPED_CHECKPOINT), tmp_path / "int8", int8=True, towers_from=SHIPPED_EXPORTED)
    assert cli(["search", QUERY, "--store", str(onnx_store), "--model", str(int8)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "holds features of model" in error[0], error


def test_model_flags_that_name_no_exported_model_are_refused(onnx_store, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli(["search", QUERY, "--store", str(onnx_store), "--model", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli(["search", QUERY, "--store", str(onnx_store), "--model", str(tmp_path / "empty")]) == 2
    assert "not an exported model" in capsys.readouterr().err
    assert cli(["index", "--model", str(SHIPPED_EXPORTED), "--device", "cuda", "--frames", str(tmp_path),
                "--store", str(tmp_path / "s")]) == 2
    assert "runs on the CPU" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert cli(["export", str(SHIPPED_CHECKPOINT), "--out", str(tmp_path / "empty")]) == 2
    assert "exists: choose a new directory" in capsys.readouterr().err


def test_the_shipped_exported_demo_model_is_the_shipped_checkpoint():
    """The demo's ONNX towers give the demo checkpoint's vectors (and so carry its fingerprint)."""
    import torch

    from vidsearch.model.checkpoint import load_checkpoint
    from vidsearch.model.export import PROBE_TEXTS, probe_videos
    from vidsearch.runtime.exported import ExportedModel

    model, exported = load_checkpoint(SHIPPED_CHECKPOINT), ExportedModel(SHIPPED_EXPORTED)
    assert exported.fingerprint == model.fingerprint == exported.config["source_fingerprint"]
    texts = [QUERY, "a yellow star drifts towards the right edge", *PROBE_TEXTS]
    frames, mask = probe_videos(model.config.num_frames, model.image_size, videos=4)
    with torch.no_grad():
        text = model.encode_texts(texts).numpy()
        video = model.encode_video(model.preprocess_frames(torch.from_numpy(frames)), torch.from_numpy(mask)).numpy()
    assert (exported.encode(texts) * text).sum(axis=1).min() >= 0.9999
    assert (exported.encode_videos(frames, mask) * video).sum(axis=1).min() >= 0.9999
