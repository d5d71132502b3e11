"""The JSON API: search, one video, health, and its OpenAPI description (openapi.py)."""

from __future__ import annotations

from typing import Callable

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.conf import settings
from django.views.decorators.http import require_GET, require_POST

from vidsearch.web.library import openapi, presenters, selectors
from vidsearch.web.library.engine import LibraryUnavailable, get_library
from vidsearch.web.library.errors import busy, error_response
from vidsearch.web.library.forms import ApiSearchForm, ClipSearchForm, ImageSearchForm, SimilarForm, errors_text
from vidsearch.web.library.middleware import too_large
from vidsearch.video.clips import ClipRejected
from vidsearch.video.stills import ImageRejected


def read_only(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """GET only. The CSRF check is moot for views that change nothing; without it, any other method (POST, QUERY,
    ...) gets 405 Method Not Allowed rather than the CSRF middleware's HTML 403 page."""
    return csrf_exempt(require_GET(view))


@read_only
def search(request: HttpRequest) -> JsonResponse:
    form = ApiSearchForm(request.GET)
    if not form.is_valid():
        return error_response(request, status=400, message=errors_text(form), fields=form.errors.get_json_data())
    data = form.cleaned_data
    result = selectors.search_videos(query=data["q"], k=data["k"], mode=data["mode"], threshold=data["threshold"],
                                     category=data["category"], min_confidence=data["min_confidence"])
    return JsonResponse(presenters.api_search(result))


@csrf_exempt  # changes nothing: like the GET views, no session state is read or written
@require_POST
def search_image(request: HttpRequest) -> JsonResponse:
    form = ImageSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return error_response(request, status=400, message=errors_text(form), fields=form.errors.get_json_data())
    data = form.cleaned_data
    image = data["image"]
    if image.size > settings.VIDSEARCH_MAX_IMAGE_BYTES:
        return too_large(request, limit=settings.VIDSEARCH_MAX_IMAGE_BYTES)
    try:
        result = selectors.search_image(data=image.read(), name=image.name, k=data["k"], threshold=data["threshold"],
                                        category=data["category"], min_confidence=data["min_confidence"])
    except ImageRejected as error:
        return error_response(request, status=400, message=f"image: {error}")
    return JsonResponse(presenters.api_search(result))


@csrf_exempt  # changes nothing, as search_image
@require_POST
def search_clip(request: HttpRequest) -> JsonResponse:
    form = ClipSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return error_response(request, status=400, message=errors_text(form), fields=form.errors.get_json_data())
    data = form.cleaned_data
    clip = data["clip"]
    if clip.size > settings.VIDSEARCH_MAX_CLIP_BYTES:
        return too_large(request, limit=settings.VIDSEARCH_MAX_CLIP_BYTES)
    try:
        result = selectors.search_clip(file=clip, name=clip.name, k=data["k"], threshold=data["threshold"],
                                       category=data["category"], min_confidence=data["min_confidence"])
    except ClipRejected as error:
        return error_response(request, status=400, message=f"clip: {error}")
    except selectors.ClipsBusy as error:
        return busy(request, str(error))
    return JsonResponse(presenters.api_search(result))


@read_only
def video(request: HttpRequest, video_id: str) -> JsonResponse:
    detail = selectors.video_detail(video_id=video_id)
    if detail is None:
        return error_response(request, status=404, message=f"no video {video_id!r} in the library")
    return JsonResponse(presenters.api_video(detail))


@read_only
def similar(request: HttpRequest, video_id: str) -> JsonResponse:
    form = SimilarForm(request.GET)
    if not form.is_valid():
        return error_response(request, status=400, message=errors_text(form), fields=form.errors.get_json_data())
    data = form.cleaned_data
    result = selectors.similar_moments(video_id=video_id, start=data["start"], k=data["k"],
                                       threshold=data["threshold"], category=data["category"],
                                       min_confidence=data["min_confidence"])
    if result is None:
        return error_response(request, status=404, message=f"no video {video_id!r} with a moment at that time")
    return JsonResponse(presenters.api_search(result))


@read_only
def health(request: HttpRequest) -> JsonResponse:
    try:
        store = get_library().store
    except LibraryUnavailable as error:
        return JsonResponse({"status": "unavailable", "error": str(error)}, status=503)
    return JsonResponse({"status": "ok", "videos": len(store.videos()), "rows": len(store),
                         "store_version": store.version, "model": store.fingerprint})


@read_only
def openapi_description(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi.description())
