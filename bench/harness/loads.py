"""The tests (the table's columns): what wrk sends, and the one checked request before measuring."""

from __future__ import annotations

import http.client
import os
from dataclasses import dataclass
from pathlib import Path

HELLO_BODY = b"Hello, World!"
BIG_BODY = b"0123456789abcdef" * 4096  # what bench/apps.py and bench/php/64k.php send for /64k
ECHO_SIZE = 64 * 1024


@dataclass(frozen=True)
class Load:
    name: str  # what --tests takes
    title: str  # the column heading
    method: str
    path: str
    body_size: int  # request body bytes (0: none)

    def lua_script(self) -> str:
        """The wrk script of this test ('' for a plain GET)."""
        if not self.body_size:
            return ""
        repeat = self.body_size // 16
        return (f'wrk.method = "{self.method}"\n'
                f'wrk.body = string.rep("0123456789abcdef", {repeat})\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')


LOADS = (
    Load("hello", "GET /hello (13 B)", "GET", "/hello", 0),
    Load("64k", "GET 64 KiB", "GET", "/64k", 0),
    Load("echo", "POST 64 KiB echo", "POST", "/echo", ECHO_SIZE),
)
LOAD_NAMES = tuple(load.name for load in LOADS)


def select_loads(names: list[str]) -> list[Load]:
    if not names:
        return list(LOADS)
    unknown = [name for name in names if name not in LOAD_NAMES]
    if unknown:
        raise SystemExit(f"--tests {', '.join(unknown)}: unknown; choose from {', '.join(LOAD_NAMES)}")
    return [load for load in LOADS if load.name in names]


def write_script(load: Load, directory: Path) -> Path | None:
    script = load.lua_script()
    if not script:
        return None
    path = directory / f"{load.name}.lua"
    path.write_text(script)
    return path


def check(load: Load, port: int, *, echoes: bool = True) -> None:
    """One request through HTTP with the stdlib client; raise RuntimeError unless the answer is right.

    The echo is checked with a random body, so an app that answers a fixed 64 KiB would fail.
    ``echoes=False`` (nginx by itself) only wants a 64 KiB answer to the POST.
    """
    body = os.urandom(load.body_size) if load.body_size else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(load.method, load.path, body=body, headers=headers)
        response = conn.getresponse()
        got = response.read()
    finally:
        conn.close()
    problem = answer_problem(load, response.status, got, body, echoes=echoes)
    if problem:
        raise RuntimeError(f"{load.method} {load.path}: {problem}")


def answer_problem(load: Load, status: int, got: bytes, sent: bytes | None, *, echoes: bool = True) -> str:
    """Why this answer is wrong, or '' when it is right."""
    if status != 200:
        return f"status {status}, body {got[:80]!r}"
    if load.name == "hello" and got != HELLO_BODY:
        return f"body {got[:80]!r}, want {HELLO_BODY!r}"
    if load.name == "64k" and got != BIG_BODY:
        return f"{len(got)} bytes that are not the 64 KiB pattern"
    if load.name == "echo":
        if echoes and got != sent:
            return f"{len(got)} bytes that are not the {load.body_size} bytes sent"
        if not echoes and len(got) != load.body_size:
            return f"{len(got)} bytes, want {load.body_size}"
    return ""
