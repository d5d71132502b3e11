"""The web tests: the shared library installed as the process's library, its captions in the test database."""

import pytest

from vidsearch.web.library import engine, services


@pytest.fixture(scope="session")
def opened_library(web_library):
    return engine.Library.open(web_library.store, refresh_seconds=0.0)


@pytest.fixture
def library(opened_library):
    engine.install(opened_library)
    yield opened_library
    engine.install(None)


@pytest.fixture
def captions(db, web_library):
    return services.load_captions(records=web_library.records)


@pytest.fixture
def site(library, captions):
    """The library searchable and its caption database loaded."""
    return library


@pytest.fixture
def some_video(web_library):
    return sorted(record.video_id for record in web_library.records)[0]
