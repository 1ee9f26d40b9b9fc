"""A file inside a package, loaded by path: its relative import must work."""

from .helpers import body


def app(environ, start_response):
    start_response("200 OK", [])
    return [body()]
