"""An accept-style script for the tests: every hook, and a path per failure mode.

Hooks note their calls in $HOOK_LOG ("<pid> <hook>"); start() returns $START_CODE
("raise" raises); stop() returns the number in the file $STOP_CODE_FILE (0 without it;
"raise" raises); restart() raises when $RESTART_RAISES is set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

state = {"count": 0, "generation": 0}


def _note(what: str) -> None:
    log = os.environ.get("HOOK_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {what}\n")


def start() -> int:
    _note("start")
    code = os.environ.get("START_CODE", "0")
    if code == "raise":
        raise RuntimeError("start failed on purpose")
    return int(code)


def restart() -> None:
    _note("restart")
    if os.environ.get("RESTART_RAISES"):
        raise RuntimeError("restart failed on purpose")
    state["generation"] += 1


def stop() -> int:
    path = os.environ.get("STOP_CODE_FILE")
    text = Path(path).read_text() if path and Path(path).exists() else "0"
    _note(f"stop {text}")
    if text == "raise":
        raise RuntimeError("stop failed on purpose")
    return int(text)


def accept() -> str | bytes | int:
    state["count"] += 1
    path = os.getenv("PATH_INFO") or os.getenv("SCRIPT_NAME") or "/"
    query = os.getenv("QUERY_STRING") or ""
    if path == "/print":
        print("a line printed by accept")
        sys.stdout.write("and one written to sys.stdout\n")
    elif path == "/slow":
        time.sleep(float(query.split("&")[0] or "1"))
    elif path == "/bad-type":
        return 42
    elif path == "/no-separator":
        return "Content-Type: text/plain"
    elif path == "/bad-status":
        return "Status: abc\r\n\r\nbody"
    elif path == "/raise":
        raise RuntimeError("accept failed on purpose")
    elif path == "/body":
        return "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n" + sys.stdin.read()
    elif path == "/redirect":
        return "Location: /elsewhere\n\n"
    elif path == "/bytes":
        return b"Status: 201 Created\nContent-Type: application/octet-stream\n\n\x00\xff"
    elif path == "/argv":
        return "Status: 200 OK\r\n\r\n" + ",".join(sys.argv[1:])
    elif path == "/env":
        names = query.split(",")
        return "Status: 200 OK\r\n\r\n" + "\n".join(f"{n}={os.getenv(n)}" for n in names)
    return (f"Status: 200 OK\r\nContent-Type: text/plain\r\nX-Pid: {os.getpid()}\r\n\r\n"
            f"uri={os.getenv('REQUEST_URI')} count={state['count']} generation={state['generation']}")
