"""A module with only `application` (Django's wsgi.py style): found without :NAME."""


def application(environ, start_response):
    start_response("200 OK", [])
    return [b"default"]
