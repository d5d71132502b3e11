"""Local development: DEBUG on, a fixed development key, any local host."""

from vidsearch.web.settings.base import *  # noqa: F401,F403

DEBUG = True
SECRET_KEY = "django-insecure-vidsearch-development-key-not-for-serving"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]
WHITENOISE_AUTOREFRESH = True
