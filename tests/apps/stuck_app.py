"""Apps for the hard-kill tests: ``/stuck`` holds the caller (the event loop with
``--sync`` or in ASGI) in :func:`stuck_in_the_app`, forever or ``?s=N`` seconds;
anything else answers ``pid=<worker>``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def stuck_in_the_app(query: str) -> None:
    """Blocks without giving the loop back: the name the slow log's stack must show."""
    seconds = float(parse_qs(query).get("s", ["inf"])[0])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")) == "/stuck":
        stuck_in_the_app(environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid={os.getpid()}".encode()]


async def asgi_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stuck":
        stuck_in_the_app(scope["query_string"].decode())  # time.sleep in async def: the loop is held
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"pid={os.getpid()}".encode()})
