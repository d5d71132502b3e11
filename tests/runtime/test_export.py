"""`vidsearch export`: ONNX towers that give PyTorch's vectors, fingerprints that say so, refusals."""

import json
import shutil

import numpy as np
import pytest
import torch

from vidsearch.model.export import ExportError, export_model
from vidsearch.runtime.exported import ExportedModel, ExportedModelError

TEXTS = ["a red circle moves to the left", "x", "", "A Blue SQUARE, sliding upwards!! 😀 &amp; café",
         "the green triangle goes down " * 20]


def torch_video(model, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        pixels = model.preprocess_frames(torch.from_numpy(frames))
        return model.encode_video(pixels, torch.from_numpy(mask)).numpy()


def torch_text(model, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return model.encode_texts(texts).numpy()


def videos(batch: int, frames: int, size: int = 32, *, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(batch, frames, size, size, 3), dtype=np.uint8)
    mask = np.ones((batch, frames), dtype=bool)
    mask[-1, max(1, frames // 2):] = False  # the last video is shorter: padded frames are masked
    return pixels, mask


def cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return (ours * theirs).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)


def test_fp32_towers_give_pytorchs_vectors_and_keep_its_fingerprint(micro, micro_exports):
    exported = ExportedModel(micro_exports["fp32"])
    assert exported.fingerprint == micro.fingerprint and exported.precision == "fp32"
    for batch in (TEXTS, TEXTS[:1], TEXTS[1:2], TEXTS[-1:]):  # each batch cut at its own last end-of-text
        text = cosines(exported.encode(batch), torch_text(micro, batch))
        assert text.min() >= 0.9999, text
    frames = micro.config.num_frames
    for batch, frames in ((1, frames), (3, frames), (2, frames - 1), (1, 1)):  # B and T dynamic
        pixels, mask = videos(batch, frames)
        video = cosines(exported.encode_videos(pixels, mask), torch_video(micro, pixels, mask))
        assert video.min() >= 0.9999, (batch, frames, video)


def test_frames_of_another_size_are_resized_like_pytorch(micro, micro_exports):
    pixels, mask = videos(2, micro.config.num_frames, size=48)
    video = cosines(ExportedModel(micro_exports["fp32"]).encode_videos(pixels, mask), torch_video(micro, pixels, mask))
    assert video.min() >= 0.999, video


def test_int8_is_close_and_has_a_fingerprint_of_its_own(micro, micro_exports):
    fp32, int8 = ExportedModel(micro_exports["fp32"]), ExportedModel(micro_exports["int8"])
    assert int8.precision == "int8" and int8.fingerprint not in (fp32.fingerprint, micro.fingerprint)
    assert int8.config["source_fingerprint"] == micro.fingerprint
    assert (micro_exports["int8"] / "text.onnx").stat().st_size < (micro_exports["fp32"] / "text.onnx").stat().st_size / 2
    pixels, mask = videos(3, micro.config.num_frames)
    assert cosines(int8.encode(TEXTS), torch_text(micro, TEXTS)).min() >= 0.99
    assert cosines(int8.encode_videos(pixels, mask), torch_video(micro, pixels, mask)).min() >= 0.99


def test_towers_that_disagree_with_the_model_are_refused(make_micro, micro_exports, tmp_path):
    other = make_micro(seed=1)  # the same architecture, other weights: the towers exported above do not fit it
    with pytest.raises(ExportError, match="disagree with PyTorch"):
        export_model(other, tmp_path / "out", towers_from=micro_exports["fp32"])
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_a_changed_file_is_refused(micro_exports, tmp_path):
    copy = shutil.copytree(micro_exports["fp32"], tmp_path / "copy")
    data = bytearray((copy / "video.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "video.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportedModelError, match="video.onnx: sha256 does not match"):
        ExportedModel(copy)


def test_what_cannot_be_exported_is_refused_before_anything_is_written(make_micro, micro, micro_exports, tmp_path):
    with pytest.raises(ExportError, match="seqLSTM"):
        export_model(make_micro(head="seqLSTM"), tmp_path / "lstm")
    with pytest.raises(ExportError, match="exists"):
        export_model(micro, micro_exports["fp32"])
    assert list(tmp_path.iterdir()) == []
    config = json.loads((micro_exports["fp32"] / "config.json").read_text())
    assert config["files"].keys() == {"text.onnx", "video.onnx", "tokenizer.json"}
