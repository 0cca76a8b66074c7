"""WSGI entry point (gunicorn skincare_site.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skincare_site.settings")

application = get_wsgi_application()
