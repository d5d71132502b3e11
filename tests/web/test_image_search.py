"""Search by an example image: the API (multipart), the page's image form, and their refusals."""

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from vidsearch.store.indexer import encode_image
from vidsearch.video.clips import query_frame_config
from vidsearch.store.search import stored_vectors
from vidsearch.video.stills import decode_image


def keyframe(web_library, video_id):
    """The first keyframe of a library video, as stored (JPEG bytes)."""
    return next((web_library.cache / "frames" / video_id).glob("*.jpg")).read_bytes()


def png_of(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_top_score(library, data):
    """The best cosine of the image's one-frame vector over every stored row, computed here independently."""
    frames = query_frame_config(library.model, library.store.info.get("frames"))  # the library's keyframe settings
    vector = encode_image(library.model, decode_image(data), frames)
    vector = vector / np.linalg.norm(vector)
    store = library.store
    rows = stored_vectors(store, "video_feature", np.arange(len(store)))
    return float((rows / np.linalg.norm(rows, axis=1, keepdims=True) @ vector).max())


def test_api_searches_by_an_image(client, site, web_library, some_video):
    data = keyframe(web_library, some_video)
    response = client.post("/api/search/image", {"image": SimpleUploadedFile("still.jpg", data), "k": "3"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["query"] == "image still.jpg" and body["mode"] == "vector" and len(body["hits"]) == 3
    assert body["hits"][0]["score"] == pytest.approx(expected_top_score(site, data), abs=1e-5)
    assert {"confidence", "confidence_label"} <= set(body["hits"][0]) and isinstance(body["confident"], bool)
    timings = body["timings_ms"]  # the image's encoding is counted
    assert timings["encode"] > 0 and timings["total"] >= timings["encode"] + timings["vector"] - 0.01, timings


def test_api_image_in_another_format_and_filters(client, site, web_library, some_video):
    pixels = decode_image(keyframe(web_library, some_video))
    category = next(r.category for r in web_library.records if r.video_id == some_video)
    response = client.post("/api/search/image", {"image": SimpleUploadedFile("still.png", png_of(pixels)),
                                                 "category": category, "k": "20"})
    assert response.status_code == 200, response.content
    assert {hit["category"] for hit in response.json()["hits"]} == {category}


def test_api_refuses_a_file_that_is_not_an_image(client, site):
    response = client.post("/api/search/image", {"image": SimpleUploadedFile("x.jpg", b"not an image at all")})
    assert response.status_code == 400
    assert response.json()["error"].startswith("image: not an image Pillow can read"), response.json()


def test_api_refuses_an_image_over_the_pixel_limit_before_decoding(client, site, settings):
    settings.VIDSEARCH_MAX_IMAGE_PIXELS = 100
    response = client.post("/api/search/image", {"image": SimpleUploadedFile("big.png", png_of(
        np.zeros((20, 20, 3), np.uint8)))})
    assert response.status_code == 400
    assert response.json()["error"] == "image: the image is 20×20 pixels: the limit is 100 pixels"


def test_api_refuses_an_oversized_file_with_413(client, site, settings):
    settings.VIDSEARCH_MAX_IMAGE_BYTES = 1000
    response = client.post("/api/search/image", {"image": SimpleUploadedFile("big.bin", b"\0" * 1001)})
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_api_needs_an_image(client, site):
    response = client.post("/api/search/image", {"k": "3"})
    assert response.status_code == 400 and "image" in response.json()["fields"]


def test_page_has_an_image_form_and_shows_its_results(client, site, web_library, some_video):
    home = client.get("/").content.decode()
    assert 'enctype="multipart/form-data"' in home and 'type="file" name="image"' in home
    assert 'action="/search/image"' in home
    page = client.post("/search/image", {"image": SimpleUploadedFile("still.jpg", keyframe(web_library, some_video)),
                                         "k": "4"})
    html = page.content.decode()
    assert page.status_code == 200 and len(page.context["hits"]) == 4
    assert "4 videos for <q>image still.jpg</q>" in html and html.count('<article class="card') == 4


def test_page_says_why_an_image_is_refused(client, site):
    png_header_only = b"\x89PNG\r\n\x1a\n" + b"x" * 30
    page = client.post("/search/image", {"image": SimpleUploadedFile("x.png", png_header_only)})
    assert page.status_code == 400
    assert "the image cannot be decoded: Truncated File Read" in page.content.decode()
