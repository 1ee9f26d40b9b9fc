"""The apps every backend serves in the benchmark: a 13-byte ``Hello, World!``.

Both are deliberately minimal so the numbers measure the FastCGI server, not the app.
They answer every path the same way; the harness requests ``/hello``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

BODY = b"Hello, World!"
CONTENT_TYPE = "text/plain"

_WSGI_HEADERS = [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(BODY)))]
_ASGI_HEADERS = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(BODY)).encode())]

StartResponse = Callable[..., Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Plain WSGI hello."""
    start_response("200 OK", list(_WSGI_HEADERS))
    return [BODY]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Plain ASGI 3 hello; also completes the lifespan protocol (fcgisgi always runs it)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']!r}")
    await send({"type": "http.response.start", "status": 200, "headers": list(_ASGI_HEADERS)})
    await send({"type": "http.response.body", "body": BODY})
