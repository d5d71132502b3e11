"""`vidsearch serve`: the site over one store in waitress, with the model and the store loaded once at start."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def create_app(*, store_dir: str | Path, https: bool = False, model: str | Path | None = None):
    """Configure Django for the store, migrate its site database, load the store and its model (or the exported
    model directory `model`); the WSGI app."""
    from vidsearch.web.setup import prepare_environment, start_django

    prepare_environment(store_dir, https=https)
    start_django()
    from django.core.wsgi import get_wsgi_application

    from vidsearch.web.library import engine, services

    interrupted = services.fail_interrupted_jobs()
    if interrupted:
        log.warning("%d upload(s) were interrupted by the last stop and are marked failed", interrupted)
    if model is not None:
        engine.install(engine.Library.open(store_dir, model=model))
    engine.get_library()
    return get_wsgi_application()


def serve(*, store_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 4,
          https: bool = False, model: str | Path | None = None) -> None:
    import waitress

    from vidsearch.web.library.middleware import body_limit

    app = create_app(store_dir=store_dir, https=https, model=model)
    proxy = {"trusted_proxy": "127.0.0.1", "trusted_proxy_headers": {"x-forwarded-proto"}} if https else {}
    log.info("serving %s on http://%s:%d/", Path(store_dir).resolve(), host, port)
    waitress.serve(app, host=host, port=port, threads=threads, max_request_body_size=body_limit(), ident="vidsearch",
                   **proxy)
