"""An app loaded by file path, from a directory that is not a package."""


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"file"]


application = app
