"""A WSGI app in several shapes."""

from types import SimpleNamespace


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]


class CallableApp:
    def __call__(self, environ, start_response):
        return app(environ, start_response)


class ClassApp:
    """PEP 3333's class form: constructing it answers the request."""

    def __init__(self, environ, start_response):
        start_response("200 OK", [])

    def __iter__(self):
        yield b"class"


def with_default(environ, start_response, extra=None):
    return app(environ, start_response)


def ambiguous(a, b=None, c=None):
    return [b""]


def varargs(*args):
    return [b""]


def too_many(a, b, c, d):
    return [b""]


def keyword_only(environ, start_response, *, required):
    return [b""]


instance = CallableApp()
ns = SimpleNamespace(inner=SimpleNamespace(app=app))
settings = {"debug": True}
