"""WSGI entry point for any WSGI server (`vidsearch serve` uses waitress): production settings by default."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vidsearch.web.settings.prod")
application = get_wsgi_application()
