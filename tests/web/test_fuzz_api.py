"""Schemathesis against `/api/openapi.json`: generated valid and invalid requests for every operation, through the
Django app over WSGI, with all of Schemathesis' checks (status codes, content types, response schemas, server
errors, negative data refused, ...). The description is loaded from the app itself, so the two cannot drift apart.
(`schemathesis.pytest.from_fixture` would build the app lazily, but fails under pytest 9; Django is configured
before collection, so the app is built at import.) The database is transactional, not one wrapping transaction:
the WSGI handler closes connections after each request, as in the server.
"""

import io

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.specs.openapi import checks as openapi_checks


@st.composite
def images(draw, image_format: str) -> bytes:
    """Small decodable images: a schema can say "binary", not "an image Pillow reads" (`image` of /api/search/image);
    likewise clips below."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    colour = draw(st.tuples(*[st.integers(0, 255)] * 3))
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=image_format)
    return buffer.getvalue()


def _clips() -> list[bytes]:
    """A few short H.264 MP4 clips (made once: each example then costs a decode, not an encode)."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from vidsearch.data.synthetic import random_spec, render_clip
    from vidsearch.video.encode import write_video

    made = []
    with tempfile.TemporaryDirectory() as directory:
        for seed, frames, size in [(0, 4, 16), (1, 9, 32), (2, 20, 48)]:
            pixels = render_clip(random_spec(np.random.default_rng(seed)), frames=frames, size=size)
            made.append(write_video(Path(directory) / f"{seed}.mp4", pixels, fps=4).read_bytes())
    return made


schemathesis.openapi.media_type("image/png", images("PNG"))
schemathesis.openapi.media_type("image/jpeg", images("JPEG"))
schemathesis.openapi.media_type("video/mp4", st.sampled_from(_clips()))  # `clip` of /api/search/clip

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())

_form_body_is_valid_as_sent = openapi_checks._form_body_is_valid_as_sent


def _files_read_as_text(response, case, media_type) -> bool:
    """Schemathesis' own re-reading of a form body as sent, with each file (bytes) given as text.

    A field's type mutation that reads as valid text on the wire (category `false`, not the boolean false) is valid
    data, which Schemathesis tells by validating the body as sent; but its JSON Schema validator refuses bytes, so a
    body holding a file (`image`, `clip`: strings of format binary) was never found valid, and the server's answer
    200 was reported as accepted invalid data."""
    body = case.body
    if not isinstance(body, dict) or not any(isinstance(value, bytes) for value in body.values()):
        return _form_body_is_valid_as_sent(response, case, media_type)
    case.body = {name: value.decode("latin-1") if isinstance(value, bytes) else value for name, value in body.items()}
    try:
        return _form_body_is_valid_as_sent(response, case, media_type)
    finally:
        case.body = body


@pytest.fixture(autouse=True)
def files_in_forms_are_strings(monkeypatch):
    monkeypatch.setattr(openapi_checks, "_form_body_is_valid_as_sent", _files_read_as_text)


@schemathesis.hook
def before_call(context, case, **kwargs):
    """Empty text fields left out of multipart bodies, as the WSGI transport sends them: Werkzeug's encoder writes an
    empty part without the line break before the next boundary, which Django's parser reads as no field at all, while
    Schemathesis judges the body with the field. (Sent by a real client, an empty `k` is refused: test_clip_search.)"""
    if (case.media_type or "").startswith("multipart/") and isinstance(case.body, dict):
        case.body = {name: value for name, value in case.body.items() if value != ""}


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_meets_its_description(case, transactional_db, site):
    case.call_and_validate()


def test_every_video_of_the_library_meets_its_description(transactional_db, site, web_library):
    operation = schema["/api/videos/{video_id}"]["GET"]
    for video_id in sorted({record.video_id for record in web_library.records}):
        response = operation.Case(path_parameters={"video_id": video_id}).call_and_validate()
        assert response.status_code == 200 and response.json()["video_id"] == video_id
