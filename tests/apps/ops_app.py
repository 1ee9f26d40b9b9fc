"""A WSGI app for the operations tests: /pid names the worker, /slow?s=N takes N
seconds, /status/N answers with status N, /redirect answers 302 with a Location."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if path == "/slow":
        time.sleep(float(parse_qs(environ["QUERY_STRING"]).get("s", ["1"])[0]))
    if path.startswith("/code/"):
        code = path.removeprefix("/code/")
        start_response(f"{code} Whatever", [("Content-Type", "text/plain"), ("X-Code", code)])
        return [code.encode()]
    if path == "/redirect":
        start_response("302 Found", [("Location", "/elsewhere")])
        return []
    body = f"app {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
