"""`vidsearch search --image`: an image encoded as a one-frame video (T = 1) by either runtime, searched."""

import json

import numpy as np
import pytest
from PIL import Image

from vidsearch.cli import main
from vidsearch.demo import SHIPPED_CHECKPOINT, SHIPPED_EXPORTED
from vidsearch.model.source import ModelSource
from vidsearch.store.indexer import encode_clips, encode_image


@pytest.fixture(scope="module")
def still(tmp_path_factory):
    """A 40×60 image of a red disc on grey, as PNG."""
    yy, xx = np.mgrid[:40, :60]
    pixels = np.full((40, 60, 3), 90, np.uint8)
    pixels[(yy - 20) ** 2 + (xx - 25) ** 2 < 100] = (220, 30, 30)
    path = tmp_path_factory.mktemp("still") / "disc.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def test_both_runtimes_encode_an_image_as_a_one_frame_video(still):
    _, pixels = still
    exported = ModelSource(exported=str(SHIPPED_EXPORTED)).load()
    torch_model = ModelSource(checkpoint=str(SHIPPED_CHECKPOINT)).load().eval()
    a, b = encode_image(exported, pixels), encode_image(torch_model, pixels)
    assert a.shape == b.shape == (64,)
    assert float(a @ b) == pytest.approx(1.0, abs=1e-5), "the ONNX and PyTorch video towers disagree at T = 1"
    padded = np.zeros((1, exported.num_frames, *pixels.shape), np.uint8)
    padded[0, 0] = pixels
    mask = np.zeros((1, exported.num_frames), bool)
    mask[0, 0] = True
    assert np.allclose(encode_clips(exported, pixels[None, None], np.ones((1, 1), bool))[0], a)
    assert float(encode_clips(exported, padded, mask)[0] @ a) < 0.99, "T = 1 is not the padded clip"


def test_cli_search_by_image(web_library, still, capsys):
    path, _ = still
    assert main(["search", "--image", str(path), "--store", str(web_library.store), "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "image disc.png" and len(result["hits"]) == 3 and result["mode"] == "vector"
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True) and "confident" in result
    assert main(["search", "--image", str(path), "--store", str(web_library.store), "-k", "2"]) == 0
    assert capsys.readouterr().out.startswith("2 videos for 'image disc.png'")


@pytest.mark.parametrize("content, message", [
    (b"plain text", "not an image Pillow can read"),
    (b"", "the file is empty"),
])
def test_cli_refuses_what_is_not_an_image_in_one_line(web_library, tmp_path, capsys, content, message):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    assert main(["search", "--image", str(path), "--store", str(web_library.store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vidsearch search: error: --image {path}: {message}") and err.count("\n") == 1, err


def test_cli_refuses_an_oversized_image_before_reading_it(web_library, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("vidsearch.video.stills.MAX_IMAGE_BYTES", 10)
    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * 11)
    assert main(["search", "--image", str(path), "--store", str(web_library.store)]) == 2
    assert f"--image {path}: 11 bytes, the limit is 10" in capsys.readouterr().err


def test_cli_needs_a_query_or_an_image_not_both(web_library, still, capsys):
    path, _ = still
    assert main(["search", "a dog", "--image", str(path), "--store", str(web_library.store)]) == 2
    assert main(["search", "--store", str(web_library.store)]) == 2
    assert capsys.readouterr().err.count("give a query sentence, --image PATH or --clip PATH (one of them)") == 2
