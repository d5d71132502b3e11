"""Error answers: JSON `{"error": ...}` under /api/, a page elsewhere."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

API_PREFIX = "/api/"


def error_response(request: HttpRequest, *, status: int, message: str, **extra: Any) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": message, **extra}, status=status)
    return render(request, "library/error.html", {"status": status, "message": message}, status=status)
