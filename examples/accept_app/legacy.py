"""An accept-style script as such scripts were written: request variables from
os.getenv, the body from sys.stdin, the whole response returned as a string.

Run it on its own:  fcgibridge examples/accept_app/legacy.py -b 127.0.0.1:9000
"""

from __future__ import annotations

import html
import os
import sys
from urllib.parse import parse_qs

notes: list[str] = []
greeting = "Notes"


def start() -> int:
    """Once per worker, before it serves: read the configuration."""
    global greeting
    greeting = os.environ.get("NOTES_TITLE", greeting)
    return 0


def restart() -> None:
    """SIGHUP: forget what was posted."""
    notes.clear()


def accept() -> str:
    if os.getenv("REQUEST_METHOD") == "POST":
        fields = parse_qs(sys.stdin.read())
        notes.extend(fields.get("note", []))
        print(f"legacy: {len(notes)} notes")  # goes to the error log, not to the browser
        return "Status: 303 See Other\r\nLocation: {}\r\n\r\n".format(os.getenv("SCRIPT_NAME") or "/")
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return (
        "Status: 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"<h1>{html.escape(greeting)}</h1><ul>{items}</ul>"
        '<form method="post"><input name="note"><button>Add</button></form>'
    )
