"""A minimal Django project, served by fcgibridge in tests/test_frameworks.py (WSGI and ASGI)."""
