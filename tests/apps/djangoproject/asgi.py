"""ASGI entry point of the test Django project: ``fcgibridge tests.apps.djangoproject.asgi:application``.

Django's ASGI handler raises on the lifespan scope; the server must serve it anyway.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoproject.settings")
application = get_asgi_application()
