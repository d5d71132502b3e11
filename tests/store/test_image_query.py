"""`vidsearch search --image`: an image encoded as one-frame videos (T = 1) of shifted views by either runtime, searched."""

import json

import numpy as np
import pytest
from PIL import Image

from vidsearch.cli import main
from vidsearch.demo import SHIPPED_CHECKPOINT, SHIPPED_EXPORTED
from vidsearch.model.source import ModelSource
from vidsearch.config import FrameConfig
from vidsearch.store.indexer import encode_clips, encode_image, image_views
from vidsearch.video.clips import still_as_stored


@pytest.fixture(scope="module")
def still(tmp_path_factory):
    """A 40×60 image of a red disc on grey, as PNG."""
    yy, xx = np.mgrid[:40, :60]
    pixels = np.full((40, 60, 3), 90, np.uint8)
    pixels[(yy - 20) ** 2 + (xx - 25) ** 2 < 100] = (220, 30, 30)
    path = tmp_path_factory.mktemp("still") / "disc.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def test_both_runtimes_encode_an_image_as_the_mean_of_its_shifted_one_frame_views_of_it_as_a_keyframe(still):
    _, pixels = still
    exported = ModelSource(exported=str(SHIPPED_EXPORTED)).load()
    torch_model = ModelSource(checkpoint=str(SHIPPED_CHECKPOINT)).load().eval()
    frames = FrameConfig(size=48, jpeg_quality=80)
    a, b = encode_image(exported, pixels, frames), encode_image(torch_model, pixels, frames)
    assert a.shape == b.shape == (64,)
    assert float(a @ b) == pytest.approx(1.0, abs=1e-5), "the ONNX and PyTorch video towers disagree at T = 1"
    keyframe = still_as_stored(pixels, frames)
    views = image_views(keyframe, size=48, patch=12)
    assert views.shape == (9, 48, 48, 3)
    one_frame = encode_clips(exported, views[:, None], np.ones((9, 1), bool))
    mean = one_frame.mean(axis=0)
    np.testing.assert_allclose(a, mean / np.linalg.norm(mean), atol=1e-6)
    padded = np.zeros((1, exported.num_frames, 48, 48, 3), np.uint8)
    padded[0, 0] = views[4]
    mask = np.zeros((1, exported.num_frames), bool)
    mask[0, 0] = True
    assert float(encode_clips(exported, padded, mask)[0] @ one_frame[4]) < 0.99, "T = 1 is not the padded clip"
    default = encode_image(exported, pixels)  # no settings: the model's size at the default JPEG quality
    mean = encode_clips(exported, image_views(still_as_stored(pixels, FrameConfig(size=48)), size=48,
                                              patch=12)[:, None], np.ones((9, 1), bool)).mean(axis=0)
    np.testing.assert_allclose(default, mean / np.linalg.norm(mean), atol=1e-6)
    assert float(default @ a) < 1.0 - 1e-6, "the JPEG quality of the settings was not used"
    single = encode_image(exported, pixels, frames, views=1)  # the keyframe as it is: the unshifted view alone
    np.testing.assert_allclose(single, one_frame[4] / np.linalg.norm(one_frame[4]), atol=1e-6)


def test_image_views_are_the_square_shifted_by_a_third_of_a_patch_with_the_border_repeated():
    square = np.arange(12 * 12 * 3, dtype=np.uint16).reshape(12, 12, 3).astype(np.uint8)
    views = image_views(square, size=12, patch=6)  # a third of 6 pixels: shifts of -2, 0, 2
    assert views.shape == (9, 12, 12, 3)
    np.testing.assert_array_equal(views[4], square)  # (0, 0): the image itself
    down_right = views[8]  # content moved 2 pixels down and 2 right
    np.testing.assert_array_equal(down_right[2:, 2:], square[:-2, :-2])
    np.testing.assert_array_equal(down_right[:2, 2:], np.broadcast_to(square[:1, :-2], (2, 10, 3)))
    up_left = views[0]
    np.testing.assert_array_equal(up_left[:-2, :-2], square[2:, 2:])


def test_the_views_make_an_image_query_steadier_where_a_small_object_falls_on_the_patch_grid(still):
    """The reason for the views: moving a small disc by a third of a patch moves the 9-view vector less than it moves
    the vector of the one view."""
    _, pixels = still
    model = ModelSource(exported=str(SHIPPED_EXPORTED)).load()
    square = image_views(pixels, size=48, patch=12)[4]
    moved = np.pad(square, ((0, 0), (4, 0), (0, 0)), mode="edge")[:, :48]

    def single(image):
        vector = encode_clips(model, image[None, None], np.ones((1, 1), bool))[0]
        return vector / np.linalg.norm(vector)

    views_cos = float(encode_image(model, square) @ encode_image(model, moved))
    single_cos = float(single(square) @ single(moved))
    assert views_cos > single_cos, (views_cos, single_cos)


def test_cli_search_by_image(web_library, still, capsys):
    path, _ = still
    assert main(["search", "--image", str(path), "--store", str(web_library.store), "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "image disc.png" and len(result["hits"]) == 3 and result["mode"] == "vector"
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True) and "confident" in result
    timings = result["timings_ms"]  # the image's encoding is counted
    assert timings["encode"] > 0 and timings["total"] >= timings["encode"] + timings["vector"] - 0.01, timings
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
