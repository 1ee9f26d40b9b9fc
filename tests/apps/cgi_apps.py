"""WSGI and ASGI apps that echo the request, for the CGI-mode tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def wsgi_echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    print("printed by the WSGI app")  # must not reach the response
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Kind", "wsgi")])
    return [f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {environ['QUERY_STRING']} ".encode(), body]


async def asgi_echo(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"text/plain"), (b"x-kind", b"asgi")]})
    text = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode()
    await send({"type": "http.response.body", "body": text + body})
