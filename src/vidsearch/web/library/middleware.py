"""Refuses bodies over the upload limit (413) before anything reads them; a missing store answers 503; every answer
carries the site's Content-Security-Policy."""

from __future__ import annotations

import logging
from typing import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from vidsearch.web.library.engine import LibraryUnavailable
from vidsearch.web.library.errors import error_response

log = logging.getLogger(__name__)

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields beside the file


def body_limit() -> int:
    return settings.VIDSEARCH_MAX_UPLOAD_BYTES + FORM_OVERHEAD


def too_large(request: HttpRequest, *, limit: int | None = None) -> HttpResponse:
    """413 naming the limit (by default the upload limit)."""
    limit_mb = (limit or settings.VIDSEARCH_MAX_UPLOAD_BYTES) / 2**20
    return error_response(request, status=413, message=f"The file is too large: the limit is {limit_mb:g} MB.")


class RequestSizeLimitMiddleware:
    """First in the chain: CSRF and upload parsing would otherwise read a huge body before anyone refuses it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(request, status=400, message="Content-Length is not a number.")
        if length > body_limit():
            return too_large(request)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, LibraryUnavailable):
            log.error("%s", exception)
            return error_response(request, status=503, message=str(exception))
        return None


class ContentSecurityPolicyMiddleware:
    """`Content-Security-Policy` from settings.VIDSEARCH_CSP on every answer: the pages load scripts, styles, images
    and video from the site alone, run no inline script, and may not be framed or post forms elsewhere."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.policy = "; ".join(f"{name} {' '.join(sources)}" for name, sources in settings.VIDSEARCH_CSP.items())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", self.policy)
        return response
