"""A small plain ASGI 3 app for the end-to-end tests behind nginx.

Serve it with ``python -m fcgibridge tests/apps/asgi_e2e.py:app -b ADDRESS``.

Routes (the path is taken after the mount point, i.e. ``scope["path"]`` minus ``root_path``):

``GET /hello``
    ``Hello, ASGI!``
``POST /echo``
    Reads the whole body; JSON with its ``length`` and ``sha256``, the ``content_length``
    CGI variable exactly as the web server sent it (None when absent), and the
    ``content-length`` request header the app saw.
``GET /stream?n=N&delay=SECONDS``
    N lines ``line i of N``, one ``http.response.body`` message each.
``POST /early``
    Answers 200 at once without reading the request body.
``GET /scope``
    JSON with ``path``, ``root_path``, ``method`` and ``query_string``.
``GET /pid``
    The worker's process id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_STREAM_LINES = 100_000
MAX_STREAM_DELAY = 2.0


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, data: object, status: int = 200) -> None:
    await _respond(send, status, json.dumps(data).encode(), b"application/json")


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    digest = hashlib.sha256()
    length = 0
    messages = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk: bytes = message.get("body", b"")
        digest.update(chunk)
        length += len(chunk)
        messages += 1
        if not message.get("more_body", False):
            break
    params: dict[str, str] = scope.get("extensions", {}).get("fastcgi", {}).get("params", {})
    headers = dict(scope["headers"])
    header = headers.get(b"content-length")
    await _json(send, {
        "length": length,
        "sha256": digest.hexdigest(),
        "messages": messages,
        "content_length": params.get("CONTENT_LENGTH"),
        "content_length_header": header.decode("latin-1") if header is not None else None,
    })


async def _stream(scope: Scope, send: Send) -> None:
    query = parse_qs(scope["query_string"].decode("latin-1"))
    try:
        count = int(query.get("n", ["5"])[0])
        delay = float(query.get("delay", ["0"])[0])
    except ValueError:
        await _respond(send, 400, b"bad n or delay\n")
        return
    if not (0 <= count <= MAX_STREAM_LINES and 0 <= delay <= MAX_STREAM_DELAY):
        await _respond(send, 400, b"n or delay out of range\n")
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"x-accel-buffering", b"no")],
    })
    for i in range(1, count + 1):
        if delay and i > 1:
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": f"line {i} of {count}\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']!r}")
    root: str = scope.get("root_path", "")
    path: str = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    route = (scope["method"], path)
    if route == ("GET", "/hello"):
        await _respond(send, 200, b"Hello, ASGI!")
    elif route == ("POST", "/echo"):
        await _echo(scope, receive, send)
    elif route == ("GET", "/stream"):
        await _stream(scope, send)
    elif route == ("POST", "/early"):
        await _respond(send, 200, b"answered without reading the body\n")
    elif route == ("GET", "/scope"):
        await _json(send, {
            "path": scope["path"],
            "root_path": root,
            "method": scope["method"],
            "query_string": scope["query_string"].decode("latin-1"),
        })
    elif route == ("GET", "/pid"):
        await _respond(send, 200, str(os.getpid()).encode())
    else:
        await _respond(send, 404, b"not found\n")
