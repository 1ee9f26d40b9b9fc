"""Settings of the test Django project: no database, no templates, no CSRF."""

from __future__ import annotations

SECRET_KEY = "fcgibridge-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.apps.djangoproject.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
USE_I18N = False
APPEND_SLASH = False
# Leave the logging of the pytest process alone (the tests read fcgibridge's log records).
LOGGING_CONFIG = None
