"""Search by an example video clip: the API (multipart), the page's search by example, and their refusals."""

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from vidsearch.store.indexer import encode_clip
from vidsearch.store.search import stored_vectors
from vidsearch.video.cache import open_cache
from vidsearch.video.clips import decode_clip, query_frame_config


def library_clip(web_library, video_id) -> bytes:
    """A library video's own file, as a client would send it."""
    return open(open_cache(web_library.cache).entry(video_id).source, "rb").read()


def expected_scores(library, data, views=9):
    """Each stored row's cosine with the clip's vector, computed here independently of the views."""
    config = query_frame_config(library.model, library.store.info["frames"])
    vector = encode_clip(library.model, decode_clip(data, config).frames, views=views)
    rows = stored_vectors(library.store, "video_feature", np.arange(len(library.store)))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True) @ (vector / np.linalg.norm(vector))


def test_api_searches_by_a_clip(client, site, web_library, some_video):
    data = library_clip(web_library, some_video)
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("mine.mp4", data, "video/mp4"), "k": "3"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["query"] == "clip mine.mp4" and body["mode"] == "vector" and len(body["hits"]) == 3
    assert body["hits"][0]["score"] == pytest.approx(float(expected_scores(site, data).max()), abs=1e-5)
    assert some_video in [hit["video_id"] for hit in body["hits"]]
    assert {"confidence", "confidence_label"} <= set(body["hits"][0]) and isinstance(body["confident"], bool)
    timings = body["timings_ms"]
    assert timings["decode"] > 0 and timings["encode"] > 0
    assert timings["total"] >= timings["decode"] + timings["encode"] + timings["vector"] - 0.01, timings


def test_the_site_sees_examples_in_the_number_of_views_its_settings_say(client, site, web_library, some_video,
                                                                         settings):
    data = library_clip(web_library, some_video)
    nine, one = expected_scores(site, data).max(), expected_scores(site, data, views=1).max()
    assert abs(nine - one) > 1e-4, (nine, one)  # the two differ, so the check below tells them apart
    settings.VIDSEARCH_EXAMPLE_VIEWS = 1
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("mine.mp4", data, "video/mp4"), "k": "3"})
    assert response.status_code == 200, response.content
    assert response.json()["hits"][0]["score"] == pytest.approx(float(one), abs=1e-5)


def test_example_views_must_be_1_or_9(monkeypatch):
    import importlib

    from django.core.exceptions import ImproperlyConfigured

    import vidsearch.web.settings.base as base

    monkeypatch.setenv("VIDSEARCH_EXAMPLE_VIEWS", "4")
    with pytest.raises(ImproperlyConfigured, match="VIDSEARCH_EXAMPLE_VIEWS must be 1 or 9, not '4'"):
        importlib.reload(base)
    monkeypatch.setenv("VIDSEARCH_EXAMPLE_VIEWS", "1")
    assert importlib.reload(base).VIDSEARCH_EXAMPLE_VIEWS == 1
    monkeypatch.delenv("VIDSEARCH_EXAMPLE_VIEWS")
    assert importlib.reload(base).VIDSEARCH_EXAMPLE_VIEWS == 9


def test_api_clip_with_filters(client, site, web_library, some_video):
    category = next(r.category for r in web_library.records if r.video_id == some_video)
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("c.mp4", library_clip(web_library,
                                                                                                some_video)),
                                                "category": category, "k": "20", "threshold": "-1"})
    assert response.status_code == 200, response.content
    assert {hit["category"] for hit in response.json()["hits"]} == {category}


def test_api_refuses_a_file_that_is_not_a_video(client, site):
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("x.mp4", b"not a video at all")})
    assert response.status_code == 400
    assert response.json()["error"] == ("clip: not a video vidsearch can decode (MP4, MOV, MKV, WebM, AVI or "
                                        "MPEG-TS): Invalid data found when processing input")


def test_api_refuses_a_clip_over_the_duration_limit(client, site, web_library, some_video, settings):
    settings.VIDSEARCH_MAX_CLIP_SECONDS = 5.0  # the library's videos last 8 s
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("long.mp4", library_clip(web_library,
                                                                                                   some_video))})
    assert response.status_code == 400
    assert response.json()["error"] == "clip: the clip is too long: 8 s (limit 5 s)"


def test_api_refuses_a_clip_whose_decoding_passes_the_time_limit(client, site, web_library, some_video, settings):
    settings.VIDSEARCH_CLIP_DECODE_SECONDS = 0.001
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("slow.mp4", library_clip(web_library,
                                                                                                   some_video))})
    assert response.status_code == 400
    assert response.json()["error"] == "clip: decoding the clip took longer than 0.001 s"


def test_api_refuses_an_oversized_clip_with_413_before_decoding(client, site, settings, monkeypatch):
    monkeypatch.setattr("vidsearch.video.clips.run_isolated", lambda *a, **k: pytest.fail("the clip was decoded"))
    settings.VIDSEARCH_MAX_CLIP_BYTES = 1000
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("big.mp4", b"\0" * 1001)})
    assert response.status_code == 413
    assert response.json()["error"] == "The file is too large: the limit is 0.000953674 MB."


def test_api_needs_a_clip(client, site):
    response = client.post("/api/search/clip", {"k": "3"})
    assert response.status_code == 400 and "clip" in response.json()["fields"]
    assert client.get("/api/search/clip").status_code == 405


def test_page_offers_search_by_example_and_shows_a_clips_results(client, site, web_library, some_video):
    home = client.get("/").content.decode()
    assert 'accept="image/*,video/*"' in home and 'data-clip-action="/search/clip"' in home
    page = client.post("/search/clip", {"clip": SimpleUploadedFile("walk.mp4", library_clip(web_library, some_video),
                                                                   "video/mp4"), "k": "4"})
    html = page.content.decode()
    assert page.status_code == 200 and len(page.context["hits"]) == 4, html
    assert "4 videos for <q>clip walk.mp4</q>" in html and html.count('<article class="card') == 4
    assert "<title>clip walk.mp4 · vidsearch</title>" in html


def test_page_without_script_searches_a_video_sent_to_the_image_search_as_a_clip(client, site, web_library,
                                                                                  some_video):
    page = client.post("/search/image", {"image": SimpleUploadedFile("walk.mp4", library_clip(web_library, some_video),
                                                                     "video/mp4"), "k": "2"})
    assert page.status_code == 200, page.content.decode()
    assert "2 videos for <q>clip walk.mp4</q>" in page.content.decode()


def test_page_says_why_a_clip_is_refused(client, site):
    page = client.post("/search/clip", {"clip": SimpleUploadedFile("x.webm", b"\x1a\x45\xdf\xa3 broken", "video/webm")})
    assert page.status_code == 400
    html = page.content.decode()
    assert ("<strong>clip</strong>: not a video vidsearch can decode (MP4, MOV, MKV, WebM, AVI or MPEG-TS): Invalid data "
            "found when processing input</p>") in html


def test_clips_beyond_the_decoding_slots_are_refused_at_once(client, site, web_library, some_video, settings,
                                                            monkeypatch):
    from vidsearch.web.library import throttle

    monkeypatch.setattr("vidsearch.video.clips.run_isolated", lambda *a, **k: pytest.fail("the clip was decoded"))
    settings.VIDSEARCH_CLIP_DECODES = 1
    data = library_clip(web_library, some_video)
    with throttle.clip_decoding_slot() as held:  # another request is decoding its clip
        assert held
        for url, field in [("/api/search/clip", "clip"), ("/search/clip", "clip"), ("/search/image", "image")]:
            response = client.post(url, {field: SimpleUploadedFile("c.mp4", data, "video/mp4")})
            assert (response.status_code, response["Retry-After"]) == (429, "5"), url
            assert "decoding as many clips as it may at once" in response.content.decode()
    with throttle.clip_decoding_slot() as free:
        assert free, "a refused request kept a slot"


def test_a_parameter_or_file_given_twice_is_refused(client, site, web_library, some_video, monkeypatch):
    monkeypatch.setattr("vidsearch.video.clips.run_isolated", lambda *a, **k: pytest.fail("the clip was decoded"))
    data = library_clip(web_library, some_video)
    response = client.post("/api/search/clip", {"clip": SimpleUploadedFile("c.mp4", data), "k": ["3", "4"]})
    assert (response.status_code, response.json()["error"]) == (400, "k: given more than once")
    response = client.post("/api/search/clip", {"clip": [SimpleUploadedFile("a.mp4", data),
                                                         SimpleUploadedFile("b.mp4", data)]})
    assert (response.status_code, response.json()["error"]) == (400, "clip: given more than once")
    response = client.post("/api/search/image", {"image": SimpleUploadedFile("x.png", b"x"), "category": ["a", "b"]})
    assert (response.status_code, response.json()["error"]) == (400, "category: given more than once")
    response = client.get("/api/search", {"q": ["a dog", "a cat"]})
    assert (response.status_code, response.json()["error"]) == (400, "q: given more than once")


@pytest.mark.parametrize("url, field", [("/api/search/clip", "clip"), ("/api/search/image", "image")])
@pytest.mark.parametrize("name", ["k", "threshold", "min_confidence"])
def test_a_filter_given_without_a_value_is_refused(client, site, monkeypatch, url, field, name):
    monkeypatch.setattr("vidsearch.video.clips.run_isolated", lambda *a, **k: pytest.fail("the clip was decoded"))
    response = client.post(url, {field: SimpleUploadedFile("x", b"x"), name: ""})
    assert (response.status_code, response.json()["error"]) == (400, f"{name}: a value is required when the "
                                                                      "parameter is given")
