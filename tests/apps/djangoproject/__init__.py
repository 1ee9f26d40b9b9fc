"""A minimal Django project, served by fcgibridge in tests/server/test_frameworks.py (WSGI and ASGI)."""
