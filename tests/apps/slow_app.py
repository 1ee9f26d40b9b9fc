"""A WSGI app for process tests: /pid names the worker, /slow?s=N takes N seconds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/slow":
        seconds = float(parse_qs(environ["QUERY_STRING"]).get("s", ["1"])[0])
        time.sleep(seconds)
        body = f"slept {seconds} in {os.getpid()}".encode()
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
