"""Serving (`vidsearch serve`): DEBUG off, the secret key from the environment, HTTPS settings unless told otherwise.

DJANGO_SECRET_KEY is required. VIDSEARCH_ALLOWED_HOSTS is a comma-separated list (default: the loopback names).
VIDSEARCH_HTTPS=1 (the default) means the site is reached over HTTPS, directly or through a proxy that sets
X-Forwarded-Proto: secure cookies, HSTS and redirects to https. `vidsearch serve` sets VIDSEARCH_HTTPS=0 when it
serves plain HTTP on its own (a local library) unless `--behind-https-proxy` is given.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from vidsearch.web.settings.base import *  # noqa: F401,F403

DEBUG = False
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to a random string of at least 50 characters")
ALLOWED_HOSTS = os.environ.get("VIDSEARCH_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

HTTPS = os.environ.get("VIDSEARCH_HTTPS", "1") == "1"
SECURE_SSL_REDIRECT = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = 31_536_000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
