"""Error answers: JSON `{"error": ...}` under /api/, a page elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import Resolver404

log = logging.getLogger(__name__)

API_PREFIX = "/api/"


def error_response(request: HttpRequest, *, status: int, message: str, **extra: Any) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": message, **extra}, status=status)
    return render(request, "library/error.html", {"status": status, "message": message}, status=status)


def busy(request: HttpRequest, message: str, *, retry_after_s: int = 5) -> HttpResponse:
    """429 with Retry-After: the server refuses more of this work now rather than hold a request thread for it."""
    response = error_response(request, status=429, message=message)
    response["Retry-After"] = str(retry_after_s)
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: the site's page (header and search box) or, under /api/, JSON; never Django's default."""
    said = isinstance(exception, Http404) and not isinstance(exception, Resolver404) and exception.args \
        and isinstance(exception.args[0], str)
    message = exception.args[0] if said else "there is no page at this address"
    return error_response(request, status=404, message=message)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the same page or JSON, with nothing of the failure shown (it is in the server's log)."""
    message = "something went wrong on the server; it has been logged"
    try:
        return error_response(request, status=500, message=message)
    except Exception:  # the page's header reads the library, which may be what failed
        log.exception("the error page failed too")
        return HttpResponse(f"500: {message}\n", content_type="text/plain; charset=utf-8", status=500)
