"""The test suite: development settings with a file-backed test database (background threads share it)."""

import os
import tempfile

from vidsearch.web.settings.dev import *  # noqa: F401,F403
from vidsearch.web.settings.dev import DATABASES

DEBUG = False
DATABASES["default"]["NAME"] = ":memory:"
DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"vidsearch-test-{os.getpid()}.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
WHITENOISE_AUTOREFRESH = False
