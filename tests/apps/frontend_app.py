"""One small app, as WSGI (``wsgi``) and as ASGI (``asgi``), for the checks every front end
passes (``tests/frontend_checks.py``).

Serve it with ``python -m fcgibridge tests/apps/frontend_app.py:wsgi`` (or ``:asgi``).
Routes, after the mount point (PATH_INFO, or ``scope["path"]`` minus ``root_path``):

``GET|HEAD /hello``
    ``Hello from WSGI`` / ``Hello from ASGI``, with Content-Length.
``POST /echo``
    Reads the body to its end; JSON with its ``length`` and ``sha256``.
``GET /big?n=N``
    N bytes of :func:`pattern`, in 64 KiB pieces, with Content-Length.
``GET /stream?gate=PATH``
    ``first`` at once, then waits (at most :data:`GATE_WAIT` s) until the file PATH exists,
    then ``last`` — or ``gate timed out`` when it never came, which is what a front end that
    holds the response back until its end makes happen.
``GET /boom``
    Raises an exception whose text (:data:`SECRET`) must never reach the client.
``GET /cookies``
    Two ``Set-Cookie`` headers.
``GET /where``
    JSON with the SCRIPT_NAME and PATH_INFO (``root_path`` and ``path``) the app saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

GATE_WAIT = 5.0
SECRET = "frontend-app-secret-4711"
CHUNK = 64 * 1024
COOKIES = ("first=1; Path=/", "second=2; Path=/; HttpOnly")


def pattern(size: int) -> bytes:
    """``size`` bytes of a repeating 0..250 pattern (251 is prime: no chunk lines up with it)."""
    block = bytes(range(251))
    return (block * (size // len(block) + 1))[:size]


def _query(query_string: str) -> dict[str, str]:
    return {name: values[-1] for name, values in parse_qs(query_string).items()}


def _size(query: dict[str, str]) -> int:
    return min(int(query.get("n", "0")), 64 * 1024 * 1024)


def _gate_opened(path: str, deadline: float) -> bool:
    return os.path.exists(path) or time.monotonic() >= deadline


# --------------------------------------------------------------------------- WSGI

StartResponse = Callable[..., Any]


def _wsgi_pieces(size: int) -> Iterator[bytes]:
    data = pattern(size)
    for start in range(0, size, CHUNK):
        yield data[start : start + CHUNK]


def _wsgi_stream(gate: str) -> Iterator[bytes]:
    yield b"first\n"
    deadline = time.monotonic() + GATE_WAIT
    while not _gate_opened(gate, deadline):
        time.sleep(0.01)
    yield b"last\n" if os.path.exists(gate) else b"gate timed out\n"


def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Any:
    path = environ.get("PATH_INFO", "")
    query = _query(environ.get("QUERY_STRING", ""))
    text = [("Content-Type", "text/plain")]
    if path == "/hello":
        body = b"Hello from WSGI"
        start_response("200 OK", [*text, ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo":
        digest, length, stream = hashlib.sha256(), 0, environ["wsgi.input"]
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            length += len(chunk)
        body = json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/big":
        size = _size(query)
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return _wsgi_pieces(size)
    if path == "/stream":
        start_response("200 OK", [*text, ("X-Accel-Buffering", "no")])
        return _wsgi_stream(query.get("gate", ""))
    if path == "/boom":
        raise RuntimeError(SECRET)
    if path == "/pause":  # a slow app: answers after ?s= seconds
        time.sleep(float(query.get("s", "0.01")))
        start_response("200 OK", text)
        return [b"paused"]
    if path == "/cookies":
        start_response("200 OK", [*text, *(("Set-Cookie", cookie) for cookie in COOKIES)])
        return [b"two cookies"]
    if path == "/where":
        body = json.dumps({"script_name": environ.get("SCRIPT_NAME", ""), "path_info": path}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    start_response("404 Not Found", text)
    return [b"not found: " + path.encode("latin-1", "replace")]


# --------------------------------------------------------------------------- ASGI

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _start(send: Send, status: int, headers: list[tuple[str, str]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(name.lower().encode(), value.encode()) for name, value in headers]})


async def _whole(send: Send, body: bytes, content_type: str = "text/plain", status: int = 200) -> None:
    await _start(send, status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    await send({"type": "http.response.body", "body": body})


async def _asgi_echo(receive: Receive, send: Send) -> None:
    digest, length = hashlib.sha256(), 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        digest.update(chunk)
        length += len(chunk)
        if not message.get("more_body", False):
            break
    await _whole(send, json.dumps({"length": length, "sha256": digest.hexdigest()}).encode(), "application/json")


async def _asgi_big(send: Send, size: int) -> None:
    await _start(send, 200, [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    data = pattern(size)
    for start in range(0, size, CHUNK):
        await send({"type": "http.response.body", "body": data[start : start + CHUNK], "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _asgi_stream(send: Send, gate: str) -> None:
    await _start(send, 200, [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])
    await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
    deadline = time.monotonic() + GATE_WAIT
    while not _gate_opened(gate, deadline):
        await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"last\n" if os.path.exists(gate) else b"gate timed out\n"})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def asgi(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    root_path: str = scope.get("root_path", "")
    path: str = scope["path"][len(root_path):] if scope["path"].startswith(root_path) else scope["path"]
    query = _query(scope.get("query_string", b"").decode("latin-1"))
    if path == "/hello":
        await _whole(send, b"Hello from ASGI")
    elif path == "/echo":
        await _asgi_echo(receive, send)
    elif path == "/big":
        await _asgi_big(send, _size(query))
    elif path == "/stream":
        await _asgi_stream(send, query.get("gate", ""))
    elif path == "/boom":
        raise RuntimeError(SECRET)
    elif path == "/pause":  # a slow app: answers after ?s= seconds
        await asyncio.sleep(float(query.get("s", "0.01")))
        await _whole(send, b"paused")
    elif path == "/cookies":
        await _start(send, 200, [("Content-Type", "text/plain"), *(("Set-Cookie", cookie) for cookie in COOKIES)])
        await send({"type": "http.response.body", "body": b"two cookies"})
    elif path == "/where":
        await _whole(send, json.dumps({"script_name": root_path, "path_info": path}).encode(), "application/json")
    else:
        await _whole(send, b"not found: " + path.encode("utf-8", "replace"), status=404)
