"""The pages (the thesis §4.5): search and results, player, uploads; and the files they show. Reads go through
selectors, writes through services."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from vidsearch.web.library import presenters, selectors, services
from vidsearch.video.clips import ClipRejected
from vidsearch.video.stills import ImageRejected
from vidsearch.web.library.forms import (ClipSearchForm, ImageSearchForm, LoginForm, PlayerForm, SearchForm,
                                         SimilarForm, UploadForm)
from vidsearch.web.library.errors import busy
from vidsearch.web.library.middleware import too_large
from vidsearch.web.library.streaming import content_type_of, open_recorded, ranged_file_response

EXAMPLES = 4
K_CHOICES = (10, 20, 50, 100)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET)
    if not form.is_valid():
        return render(request, "library/home.html", {"form": form}, status=400)
    query = form.cleaned_data["q"]
    if not query and "q" in request.GET:
        return _random_search(request, form.cleaned_data)
    if not query:
        return render(request, "library/home.html", {"form": form,
                                                     "examples": selectors.example_captions(count=EXAMPLES)})
    return render(request, "library/home.html", {"form": form, **_results(form.cleaned_data)})


def _random_search(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    """The thesis §4.5.2: an empty query searches a random caption of the library, shown in the search box."""
    caption = selectors.random_caption()
    if caption is None:
        return render(request, "library/home.html", {"form": SearchForm(), "no_captions": True})
    state = presenters.state_of({**data, "q": caption})
    return redirect(presenters.with_query(reverse("home"), state))


def _results(data: dict[str, Any]) -> dict[str, Any]:
    result = selectors.search_videos(query=data["q"], k=data["k"], threshold=data["threshold"],
                                     category=data["category"], min_confidence=data["min_confidence"])
    state = presenters.state_of(data)
    captions = selectors.caption_matches(query=data["q"], limit=data["k"]) if data["text"] else None
    return {"result": result, "hits": presenters.present_hits(result, state=state), "captions": captions,
            "nearest_only": not result.confident,
            "state": state, "categories": selectors.categories(), "searched": True,
            "k_choices": sorted({*K_CHOICES, data["k"]})}


@require_POST
def search_image(request: HttpRequest) -> HttpResponse:
    """An image chosen or dropped beside the search box: its results on the search page (filters as the text
    search's). The page's script sends videos to `search_clip`; without it, a file the browser calls a video comes
    here and is searched as a clip."""
    form = ImageSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "library/home.html", {"form": form}, status=400)
    data, image = form.cleaned_data, form.cleaned_data["image"]
    if (image.content_type or "").startswith("video/"):
        return _clip_results(request, form, image, field="image")
    if image.size > settings.VIDSEARCH_MAX_IMAGE_BYTES:
        return too_large(request, limit=settings.VIDSEARCH_MAX_IMAGE_BYTES)
    try:
        result = selectors.search_image(data=image.read(), name=image.name, k=data["k"], threshold=data["threshold"],
                                        category=data["category"], min_confidence=data["min_confidence"])
    except ImageRejected as error:
        form.add_error("image", str(error))
        return render(request, "library/home.html", {"form": form}, status=400)
    return _example_results(request, form, result)


@require_POST
def search_clip(request: HttpRequest) -> HttpResponse:
    """A video clip chosen or dropped beside the search box: its results on the search page."""
    form = ClipSearchForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "library/home.html", {"form": form}, status=400)
    return _clip_results(request, form, form.cleaned_data["clip"], field="clip")


def _clip_results(request: HttpRequest, form: SearchForm, clip: UploadedFile, *, field: str) -> HttpResponse:
    """The results of the clip in the form's `field`; a refused clip's reason shown on that field."""
    if clip.size > settings.VIDSEARCH_MAX_CLIP_BYTES:
        return too_large(request, limit=settings.VIDSEARCH_MAX_CLIP_BYTES)
    data = form.cleaned_data
    try:
        result = selectors.search_clip(file=clip, name=clip.name, k=data["k"], threshold=data["threshold"],
                                       category=data["category"], min_confidence=data["min_confidence"])
    except ClipRejected as error:
        form.add_error(field, str(error))
        return render(request, "library/home.html", {"form": form}, status=400)
    except selectors.ClipsBusy as error:
        return busy(request, str(error))
    return _example_results(request, form, result)


@require_GET
def similar(request: HttpRequest, video_id: str) -> HttpResponse:
    """More like a moment ("more like this" on hits and in the player): the search page with its results."""
    form = SimilarForm(request.GET)
    if not form.is_valid():
        return render(request, "library/home.html", {"form": form}, status=400)
    data = form.cleaned_data
    result = selectors.similar_moments(video_id=video_id, start=data["start"], k=data["k"],
                                       threshold=data["threshold"], category=data["category"],
                                       min_confidence=data["min_confidence"])
    if result is None:
        raise Http404("no such video or moment")
    return _example_results(request, form, result)


def _example_results(request: HttpRequest, form: SearchForm, result: Any) -> HttpResponse:
    """The search page with the results of an example query (an image, a clip, a moment)."""
    return render(request, "library/home.html", {
        "form": form, "result": result, "hits": presenters.present_hits(result, state={}), "searched": True,
        "by_example": True, "query_label": result.query, "nearest_only": not result.confident})


@require_GET
def player(request: HttpRequest, video_id: str) -> HttpResponse:
    detail = selectors.video_detail(video_id=video_id)
    if detail is None:
        raise Http404("no such video")
    form = PlayerForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {}
    start, end = _moment(data, detail.duration)
    state = presenters.state_of(data)
    back = presenters.with_query(reverse("home"), state) if state.get("q") else reverse("home")
    return render(request, "library/player.html", {
        "video": detail, "start": start, "end": end, "back_url": back, "state": state,
        "moment_label": presenters.span_label(start, end) if start is not None else None,
        "video_url": reverse("video-file", args=[video_id]),
        "poster_url": presenters.thumbnail_url(video_id, 0),
        "segments": [s for s in presenters.segment_views(detail, state=state) if s.start is not None],
        "similar_url": presenters.similar_url(video_id, start),
    })


def _moment(data: dict[str, Any], duration: float | None) -> tuple[float | None, float | None]:
    """The moment to start at and mark, kept within the video; (None, None) without one."""
    start, end = data.get("t"), data.get("end")
    if start is None:
        return None, None
    limit = duration if duration else start
    start = min(start, limit)
    end = min(end, limit) if end is not None and end > start else limit
    return start, end


@require_http_methods(["GET", "HEAD"])
def video_file(request: HttpRequest, video_id: str) -> HttpResponse:
    recorded = selectors.video_file(video_id=video_id)
    opened = open_recorded(recorded) if recorded is not None else None
    if opened is None:
        raise Http404("no such video")
    return ranged_file_response(*opened, content_type=content_type_of(recorded.path),
                                range_header=request.META.get("HTTP_RANGE"))


@require_http_methods(["GET", "HEAD"])
def thumbnail(request: HttpRequest, video_id: str, index: int) -> HttpResponse:
    path = selectors.thumbnail_file(video_id=video_id, index=index)
    if path is None or not path.is_file():
        raise Http404("no such keyframe")
    response = FileResponse(path.open("rb"), content_type="image/jpeg")
    response["Cache-Control"] = "public, max-age=86400"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        file = form.cleaned_data["file"]
        if file.size > settings.VIDSEARCH_MAX_UPLOAD_BYTES:
            return too_large(request)
        try:
            job = services.create_upload(owner_id=request.user.id, upload=file,
                                         category=form.cleaned_data["category"],
                                         sentences=form.cleaned_data["sentences"])
        except services.TooManyUploads as error:
            form.add_error(None, str(error))
            return _upload_page(request, form, status=429)
        return redirect("upload-status", job_id=job.id)
    return _upload_page(request, form, status=400 if form.errors else 200)


def _upload_page(request: HttpRequest, form: UploadForm, *, status: int) -> HttpResponse:
    return render(request, "library/upload.html", {
        "form": form, "jobs": selectors.upload_jobs(owner_id=request.user.id),
        "limit_mb": settings.VIDSEARCH_MAX_UPLOAD_BYTES / 2**20}, status=status)


@login_required
@require_GET
def upload_status(request: HttpRequest, job_id: str) -> HttpResponse:
    job = selectors.upload_job(job_id=job_id, owner_id=request.user.id)
    if job is None:
        raise Http404("no such upload")
    return render(request, "library/upload_status.html", {"job": job})


class LoginView(auth_views.LoginView):
    """Django's login view with the throttled form: a refused attempt answers 429 with Retry-After."""

    form_class = LoginForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "createsuperuser": createsuperuser_command()}

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.refused():
            response.status_code = 429
            response["Retry-After"] = "60"
        return response


def createsuperuser_command() -> str:
    """The command that creates an uploader for the store this server serves, with this server's own Python (the
    virtualenv's, where vidsearch is installed); paths relative to the working directory when inside it."""
    python, store = (_shown_path(Path(path)) for path in (sys.executable, settings.VIDSEARCH_STORE or "STORE"))
    return shlex.join([python, "-m", "vidsearch.web.manage", "--store", store, "createsuperuser"])


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
