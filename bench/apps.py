"""The apps every Python backend serves in the benchmark, one WSGI and one ASGI, three paths each.

- ``GET /hello``: the 13-byte ``Hello, World!`` (``text/plain``);
- ``GET /64k``: 64 KiB (``BIG_BODY``, a repeating ``0123456789abcdef``), in one piece;
- ``POST /echo``: the request body read whole, then sent back as the response body.

Every response has a Content-Length. Any other path gets a 404. They are deliberately
minimal so the numbers measure the server, not the app. ``bench/php/`` holds the same three
for PHP-FPM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

HELLO_BODY = b"Hello, World!"
BIG_BODY = b"0123456789abcdef" * 4096
NOT_FOUND = b"not found"

StartResponse = Callable[..., Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _fixed_answer(path: str) -> tuple[str, str, bytes]:
    """Status, content type and body of a path that needs no request body."""
    if path == "/hello":
        return "200 OK", "text/plain", HELLO_BODY
    if path == "/64k":
        return "200 OK", "application/octet-stream", BIG_BODY
    return "404 Not Found", "text/plain", NOT_FOUND


def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI app: /hello, /64k, and /echo (reads CONTENT_LENGTH bytes and returns them)."""
    path = environ.get("PATH_INFO", "")
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        status, content_type, body = "200 OK", "application/octet-stream", environ["wsgi.input"].read(length)
    else:
        status, content_type, body = _fixed_answer(path)
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI 3 app: the same three paths; it also completes the lifespan protocol."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']!r}")
    if scope["path"] == "/echo":
        status, content_type, body = "200 OK", "application/octet-stream", await _read_body(receive)
    else:
        status, content_type, body = _fixed_answer(scope["path"])
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": int(status.split()[0]), "headers": headers})
    await send({"type": "http.response.body", "body": body})
