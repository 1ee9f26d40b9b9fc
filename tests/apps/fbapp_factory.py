"""Application factories."""


def create_app(name="default", *, debug=False, options=None):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [name.encode()]

    app.name = name
    app.debug = debug
    app.options = options
    return app


def failing():
    raise RuntimeError("DATABASE_URL is not set")


def returns_none():
    return None


class api:  # a namespace, for module:api.create()
    @staticmethod
    def create():
        return create_app("from api")


not_callable = 42
