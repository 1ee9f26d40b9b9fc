"""An ASGI 3 app in several shapes."""

import functools


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi3"})


class CallableApp:
    async def __call__(self, scope, receive, send):
        await app(scope, receive, send)


async def handler(greeting, scope, receive, send):
    await app(scope, receive, send)


def sync_wrapper(scope, receive, send):
    """A plain function returning the coroutine, as some middleware does."""
    return app(scope, receive, send)


async def wrong_arity(scope, receive):
    pass


instance = CallableApp()
partial_app = functools.partial(handler, "hello")
partial_instance = functools.partial(instance)
