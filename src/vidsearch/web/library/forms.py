"""Request parameters, validated once for the pages and the API (limits from settings)."""

from __future__ import annotations

import math

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm

from vidsearch.web.library import throttle

MODES = [("vector", "vector"), ("text", "text"), ("hybrid", "hybrid")]
ON = frozenset({"1", "on", "true"})


def is_on(value: str | None) -> bool:
    """A switch parameter (`text=1`): on for 1, on, true; off for anything else or nothing."""
    return (value or "").lower() in ON


class SearchForm(forms.Form):
    """The search page's GET parameters: `q` may be empty (a random caption is searched then)."""

    # lengths count the text as sent (stripped afterwards), as the OpenAPI description says
    q = forms.CharField(required=False, strip=False, max_length=settings.VIDSEARCH_MAX_QUERY_CHARS)
    text = forms.CharField(required=False, max_length=8)  # the thesis' text-match mode, a switch
    k = forms.IntegerField(required=False, min_value=1, max_value=settings.VIDSEARCH_MAX_K)
    threshold = forms.FloatField(required=False, min_value=-1.0, max_value=1.0)
    min_confidence = forms.FloatField(required=False, min_value=0.0, max_value=1.0)
    category = forms.CharField(required=False, strip=False, max_length=100)

    def clean_q(self) -> str:
        return self.cleaned_data["q"].strip()

    def clean_text(self) -> bool:
        return is_on(self.cleaned_data["text"])

    def clean_k(self) -> int:
        return self.cleaned_data["k"] or settings.VIDSEARCH_DEFAULT_K

    def clean_category(self) -> str | None:
        return self.cleaned_data["category"].strip() or None


class OneValueEach(forms.Form):
    """Each parameter (and file) at most once: Django would keep the last of `k=1&k=2` silently."""

    def clean(self) -> dict:
        cleaned = super().clean()
        for source in (self.data, self.files):
            for name in self.fields:
                if hasattr(source, "getlist") and len(source.getlist(name)) > 1:
                    self.add_error(name, forms.ValidationError("given more than once", code="repeated"))
        return cleaned


class TypedParameters(OneValueEach):
    """An API parameter given must have a value (a page's empty field is absent): `TYPED` names them."""

    TYPED: tuple[str, ...] = ()

    def clean(self) -> dict:
        cleaned = super().clean()
        for name in self.TYPED:
            if name in self.data and not self.data[name].strip():
                self.add_error(name, forms.ValidationError("a value is required when the parameter is given",
                                                           code="empty"))
        return cleaned


class ApiSearchForm(TypedParameters, SearchForm):
    """`GET /api/search`: `q` is required; `mode` picks vector, caption (text) or hybrid search."""

    mode = forms.ChoiceField(required=False, choices=MODES)
    TYPED = ("k", "threshold", "min_confidence", "mode")

    def clean_q(self) -> str:
        query = super().clean_q()
        if not query:
            raise forms.ValidationError("a query is required", code="required")
        return query

    def clean_mode(self) -> str:
        return self.cleaned_data["mode"] or "vector"


class ImageSearchForm(TypedParameters, SearchForm):
    """Search by an example image (`POST /api/search/image`, the page's image search): the image and the filters."""

    image = forms.FileField(allow_empty_file=False)
    TYPED = ("k", "threshold", "min_confidence")


class ClipSearchForm(TypedParameters, SearchForm):
    """Search by an example video clip (`POST /api/search/clip`, the page's search by example): the clip and the
    filters."""

    clip = forms.FileField(allow_empty_file=False)
    TYPED = ("k", "threshold", "min_confidence")


class SimilarForm(TypedParameters, SearchForm):
    """More like a moment: `start` (seconds) picks it among the video's moments (none: the first)."""

    start = forms.FloatField(required=False, min_value=0.0, max_value=1e9)
    TYPED = ("k", "threshold", "min_confidence", "start")


class PlayerForm(SearchForm):
    """The player page: the moment to start at and mark, plus the search it came from (for the back link)."""

    t = forms.FloatField(required=False, min_value=0.0)
    end = forms.FloatField(required=False, min_value=0.0)


class UploadForm(forms.Form):
    file = forms.FileField(help_text="MP4, WebM, MKV, MOV, AVI or MPEG-TS")
    category = forms.CharField(required=False, max_length=100)
    sentences = forms.CharField(required=False, max_length=10_000, widget=forms.Textarea(attrs={"rows": 4}),
                                label="Captions", help_text="optional, one per line: they feed the text match")


def errors_text(form: forms.Form) -> str:
    """A form's errors as one line: 'k: Ensure this value is less than or equal to 100.'"""
    return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in form.errors.items())


class LoginForm(AuthenticationForm):
    """Django's login form behind the login throttle (`throttle`): a locked account or address, or a login while
    another password is being checked, is refused before any password is hashed."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "The user name and password do not match.",
        "throttled": "Too many failed logins: try again in %(minutes)d minutes.",
        "busy": "The server is checking another login: try again in a moment.",
    }
    REFUSED = ("throttled", "busy")

    def clean(self) -> dict:
        attempt = throttle.Attempt.of(self.cleaned_data.get("username") or "", self.request.META["REMOTE_ADDR"])
        wait = attempt.locked_for()
        if wait:
            raise forms.ValidationError(self.error_messages["throttled"], code="throttled",
                                        params={"minutes": math.ceil(wait / 60)})
        with throttle.password_check_slot() as may_check:
            if not may_check:
                raise forms.ValidationError(self.error_messages["busy"], code="busy")
            try:
                cleaned = super().clean()
            except forms.ValidationError as error:
                if error.code == "invalid_login":
                    attempt.failed()
                raise
        attempt.succeeded()
        return cleaned

    def refused(self) -> bool:
        """The login was refused by the throttle (not checked)."""
        return any(error.code in self.REFUSED for error in self.errors.as_data().get("__all__", []))
