"""An ASGI 2 (double callable) app: constructed with the scope, then awaited."""


class App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2"})


def factory_style(scope):
    return App(scope)


class Uninstantiated:
    """An ASGI 3 class given without creating an instance."""

    async def __call__(self, scope, receive, send):
        pass
