"""Settings shared by every environment.

The site reads one feature store, named by the environment variable VIDSEARCH_STORE; its SQLite database (the
thesis' caption database, users, upload jobs) lives inside that store as `site.sqlite3` unless VIDSEARCH_DB names
another file. Uploaded videos go to `uploads/` inside the store unless VIDSEARCH_UPLOADS names another directory.
VIDSEARCH_UPLOADS_PER_USER (default 2) is how many unfinished uploads one user may have. A video clip searched by
example may have VIDSEARCH_MAX_CLIP_BYTES (default 50 MiB) and VIDSEARCH_MAX_CLIP_SECONDS (default 120); its
decoding child process is killed after VIDSEARCH_CLIP_DECODE_SECONDS (default 60); VIDSEARCH_CLIP_DECODES (default 2)
clips are decoded at once. VIDSEARCH_EXAMPLE_VIEWS (9 or 1, default 9) is how many shifted views an example image or
clip is encoded in (`vidsearch.store.indexer.encode_image`, `encode_clip`: 9 passes of the tower, or 1).
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_DIR = Path(os.environ["VIDSEARCH_STORE"]).resolve() if os.environ.get("VIDSEARCH_STORE") else None
SITE_DB = "site.sqlite3"


def _store_path(variable: str, name: str) -> Path | None:
    if os.environ.get(variable):
        return Path(os.environ[variable]).resolve()
    return STORE_DIR / name if STORE_DIR else None


VIDSEARCH_STORE = STORE_DIR
VIDSEARCH_UPLOADS = _store_path("VIDSEARCH_UPLOADS", "uploads")
VIDSEARCH_MAX_UPLOAD_BYTES = int(os.environ.get("VIDSEARCH_MAX_UPLOAD_BYTES") or 200 * 2**20)
VIDSEARCH_MAX_QUERY_CHARS = 200
VIDSEARCH_MAX_IMAGE_BYTES = 10 * 2**20  # an image searched by example (larger: 413 before it is read)
VIDSEARCH_MAX_IMAGE_PIXELS = 40_000_000  # its declared width × height (larger: 400 before its pixels are decoded)
# A clip searched by example: larger, 413 before it is decoded (bodies over the upload limit never reach a view);
# longer, 400; its decoding child process is killed after CLIP_DECODE_SECONDS; at most CLIP_DECODES decode at once
VIDSEARCH_MAX_CLIP_BYTES = int(os.environ.get("VIDSEARCH_MAX_CLIP_BYTES") or 50 * 2**20)
VIDSEARCH_MAX_CLIP_SECONDS = float(os.environ.get("VIDSEARCH_MAX_CLIP_SECONDS") or 120.0)
VIDSEARCH_CLIP_DECODE_SECONDS = float(os.environ.get("VIDSEARCH_CLIP_DECODE_SECONDS") or 60.0)
VIDSEARCH_CLIP_DECODES = int(os.environ.get("VIDSEARCH_CLIP_DECODES") or 2)  # more at once: 429


def _example_views() -> int:
    value = os.environ.get("VIDSEARCH_EXAMPLE_VIEWS") or "9"
    if value.strip() not in ("1", "9"):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"VIDSEARCH_EXAMPLE_VIEWS must be 1 or 9, not {value!r}")
    return int(value)


VIDSEARCH_EXAMPLE_VIEWS = _example_views()  # an example image or clip: 9 shifted views (9 tower passes) or 1
VIDSEARCH_MAX_K = 100
VIDSEARCH_DEFAULT_K = 20
VIDSEARCH_REFRESH_SECONDS = 1.0  # how often a request checks the store for a newly published version
VIDSEARCH_UPLOAD_CHECK_SECONDS = 120.0  # time limit of the decoding check of one upload
VIDSEARCH_UPLOAD_MAX_PACKETS = 500_000  # packets of all streams of one upload (about 2 h of 30 fps video and audio)
VIDSEARCH_UPLOAD_MAX_PACKETS_PER_SECOND = 250.0  # per second of the file's timestamps (120 fps video + audio + more)
VIDSEARCH_UPLOADS_PER_USER = int(os.environ.get("VIDSEARCH_UPLOADS_PER_USER") or 2)  # unfinished uploads per user

ROOT_URLCONF = "vidsearch.web.urls"
WSGI_APPLICATION = "vidsearch.web.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "vidsearch.web.library",  # first: its createsuperuser (password validators under --noinput) replaces auth's
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "vidsearch.web.library.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "vidsearch.web.library.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "vidsearch.web.library.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _store_path("VIDSEARCH_DB", SITE_DB) or ":memory:",
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "upload"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
WHITENOISE_USE_FINDERS = True  # static files come from the installed package: no collectstatic step

# Uploads stream to a temporary file past 2.5 MB; the form fields beside a file stay small.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy of every answer: nothing from other origins, no inline script, no framing, no plugins.
VIDSEARCH_CSP = {
    "default-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "vidsearch": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
