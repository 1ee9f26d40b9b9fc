"""A WSGI app for the status page tests: /burn?s=N spins the CPU for N seconds,
/alloc?mb=N touches N MiB and lets them go, /sleep?s=N sleeps, anything else names the pid."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def _arg(environ: dict[str, Any], name: str) -> float:
    return float(parse_qs(environ.get("QUERY_STRING", "")).get(name, ["0"])[0])


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if path == "/burn":
        end = time.process_time() + _arg(environ, "s")
        while time.process_time() < end:
            pass
    elif path == "/alloc":
        block = bytearray(int(_arg(environ, "mb")) << 20)
        for offset in range(0, len(block), 4096):  # touch every page, so it is resident
            block[offset] = 1
        del block
    elif path == "/sleep":
        time.sleep(_arg(environ, "s"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{path} {os.getpid()}".encode()]
