"""Schemathesis against `/api/openapi.json`: generated valid and invalid requests for every operation, through the
Django app over WSGI, with all of Schemathesis' checks (status codes, content types, response schemas, server
errors, negative data refused, ...). The description is loaded from the app itself, so the two cannot drift apart.
(`schemathesis.pytest.from_fixture` would build the app lazily, but fails under pytest 9; Django is configured
before collection, so the app is built at import.) The database is transactional, not one wrapping transaction:
the WSGI handler closes connections after each request, as in the server.
"""

import io

import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image


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


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_meets_its_description(case, transactional_db, site):
    case.call_and_validate()


def test_every_video_of_the_library_meets_its_description(transactional_db, site, web_library):
    operation = schema["/api/videos/{video_id}"]["GET"]
    for video_id in sorted({record.video_id for record in web_library.records}):
        response = operation.Case(path_parameters={"video_id": video_id}).call_and_validate()
        assert response.status_code == 200 and response.json()["video_id"] == video_id
