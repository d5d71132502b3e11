"""Background work of the web process: one thread, so uploads are ingested one at a time (the store has one writer)."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from django.db import connections

log = logging.getLogger(__name__)

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidsearch-ingest")


def submit(fn: Callable[..., Any], **kwargs: Any) -> Future:
    """Run fn(**kwargs) on the background thread; its database connections are closed when it returns."""
    return _executor.submit(_run, fn, kwargs)


def _run(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(**kwargs)
    except Exception:
        log.exception("background job %s failed", fn.__name__)
        raise
    finally:
        connections.close_all()
