"""Apps for the process-manager tests (reload, recycling, timeouts, slow log, preload).

``/pid``: ``pid=<worker> import=<pid that imported this module> version=<...>``, where the
version is what ``$PM_VERSION_FILE`` held at import time (a reload imports it afresh).
``/slow?s=N`` sleeps N seconds; ``/crash`` ends the worker at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

IMPORT_PID = os.getpid()
_version_file = os.environ.get("PM_VERSION_FILE", "")
VERSION = Path(_version_file).read_text().strip() if _version_file else "-"


def _path(environ: dict[str, Any]) -> str:
    return str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))


def _seconds(query: str) -> float:
    return float(parse_qs(query).get("s", ["1"])[0])


def ident() -> bytes:
    return f"pid={os.getpid()} import={IMPORT_PID} version={VERSION}".encode()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = _path(environ)
    if path == "/crash":
        os._exit(1)
    if path == "/slow":
        time.sleep(_seconds(environ["QUERY_STRING"]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [ident()]


async def asgi_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(_seconds(scope["query_string"].decode()))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": ident()})
