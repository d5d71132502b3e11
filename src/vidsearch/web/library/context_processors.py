"""What every page's navigation bar shows: the library size, the text-match state and the link that flips it."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from vidsearch.web.library import selectors
from vidsearch.web.library.engine import LibraryUnavailable
from vidsearch.web.library.forms import is_on
from vidsearch.web.library.presenters import with_query


def navigation(request: HttpRequest) -> dict[str, Any]:
    text_match = is_on(request.GET.get("text"))
    flipped = request.GET.copy()
    flipped.pop("text", None)
    if not text_match:
        flipped["text"] = "1"
    try:
        size = selectors.library_size()
    except LibraryUnavailable:
        size = None
    return {"library_videos": size, "text_match": text_match, "nav_query": request.GET.get("q", ""),
            "text_toggle_url": with_query(request.path, flipped)}
