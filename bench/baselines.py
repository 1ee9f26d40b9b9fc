"""Launcher for the reference FastCGI servers that fcgibridge is compared with.

    python bench/baselines.py flup         --bind /path/to.sock [--workers N]
    python bench/baselines.py fcgisgi-wsgi --bind /path/to.sock [--workers N] [--loop asyncio|uvloop]
    python bench/baselines.py fcgisgi-asgi --bind /path/to.sock [--workers N] [--loop asyncio|uvloop]

All of them serve the apps in ``apps.py``.

* ``flup``: flup 1.0.3's threaded ``flup.server.fcgi.WSGIServer`` (one thread per FastCGI connection).
* ``fcgisgi-wsgi`` / ``fcgisgi-asgi``: ``fcgisgi.run_wsgi_server`` / ``run_asgi_server``, run the way its
  README shows (``asyncio.run(...)``). ``--loop uvloop`` runs the same coroutine on uvloop instead.

With ``--workers 1`` the server binds the unix socket itself (flup ``bindAddress=PATH``, fcgisgi
``bind_address=PATH``). Neither has a multi-process mode for these servers, so with ``--workers N > 1`` this
script binds the socket and starts N copies that inherit it as fd 0 -- how a web server spawns a FastCGI
app, and what both do when given no bind address. It forwards SIGTERM/SIGINT to those copies (by pid).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from types import FrameType
from typing import Any

from apps import asgi_app, wsgi_app

SERVERS = ("flup", "fcgisgi-wsgi", "fcgisgi-asgi")


def serve_flup(bind: str | None) -> None:
    from flup.server.fcgi import WSGIServer  # type: ignore[import-untyped]

    # bindAddress=None: flup uses the listening socket on fd 0 (FCGI_LISTENSOCK_FILENO).
    WSGIServer(wsgi_app, bindAddress=bind).run()


def serve_fcgisgi(server: str, bind: str | None, loop: str) -> None:
    import fcgisgi  # type: ignore[import-untyped]

    if server == "fcgisgi-asgi":
        coro: Coroutine[Any, Any, None] = fcgisgi.run_asgi_server(asgi_app, bind_address=bind)
    else:
        coro = fcgisgi.run_wsgi_server(wsgi_app, bind_address=bind)
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)


def serve(server: str, bind: str | None, loop: str) -> None:
    try:
        if server == "flup":
            serve_flup(bind)
        else:
            serve_fcgisgi(server, bind, loop)
    except KeyboardInterrupt:
        pass


def prefork(args: argparse.Namespace) -> int:
    """Bind ``args.bind`` here and run ``args.workers`` servers that inherit it as fd 0."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.bind)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.bind)
    listener.listen(socket.SOMAXCONN)

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    children: list[subprocess.Popen[bytes]] = []
    try:
        cmd = [sys.executable, os.path.abspath(__file__), args.server, "--inherited", "--loop", args.loop]
        for _ in range(args.workers):
            children.append(subprocess.Popen(cmd, stdin=listener.fileno()))
        listener.close()
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.bind)
    return 0 if stopping else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=SERVERS)
    parser.add_argument("--bind", help="unix socket path to listen on")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop for fcgisgi")
    parser.add_argument("--inherited", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.inherited:
        serve(args.server, None, args.loop)
        return 0
    if not args.bind:
        parser.error("--bind is required")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.workers == 1:
        serve(args.server, args.bind, args.loop)
        return 0
    return prefork(args)


if __name__ == "__main__":
    sys.exit(main())
