"""A live server for the browser: the real WSGI app under waitress in a thread, over the shared web library."""

import os
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():  # a declared test dependency: missing, the browser tests fail rather than skip
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need it. Install Debian's package (`apt-get install "
                    "chromium`, as .ci/run does), or leave these tests out explicitly with `-m 'not e2e'`",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which Django takes for async code; the
    # test's own database calls are synchronous, so tell Django so.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def opened_library(web_library):
    from vidsearch.web.library import engine

    return engine.Library.open(web_library.store, refresh_seconds=0.0)


@pytest.fixture
def live_site(transactional_db, opened_library, web_library):
    """Base URL of the site under waitress on 127.0.0.1, captions loaded (committed: the server's threads see them)."""
    import waitress
    from django.core.wsgi import get_wsgi_application

    from vidsearch.web.library import engine, services

    engine.install(opened_library)
    services.load_captions(records=web_library.records)
    server = waitress.create_server(get_wsgi_application(), host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(timeout=10)
    engine.install(None)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
