"""CGI mode: serve the one request of a CGI invocation, then exit.

When a CGI server runs fcgibridge (``GATEWAY_INTERFACE`` set and stdin not a socket), or
with ``--cgi``, the request is the process environment plus ``CONTENT_LENGTH`` bytes of
stdin, and the response goes to stdout. It is also the way to try a script on the
command line::

    GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET REQUEST_URI=/ fcgibridge app.lua

The request runs through the very same server stack as under FastCGI: a worker (with
the WSGI, ASGI, accept-style or Lua adapter, and the app's ``start`` hook) serves a
private unix socket in a thread, and the package's blocking client core
(:class:`fcgibridge.client._sync.Connection` around a channel) sends it the request, so
the STDOUT stream it receives — already a CGI response — goes to stdout unchanged, as
it arrives.

While the app runs, file descriptor 1 points at stderr: nothing the app prints, not even
from C code, can get into the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client._base import CHUNK_SIZE, Deadline, FastCGIError, RequestSpec, Timeout
from .client._sync import Connection
from .config import Config
from .errors import UserError
from .protocol import Role

if TYPE_CHECKING:
    from .importer import LoadedApp

__all__ = ["is_cgi_invocation", "run"]

log = logging.getLogger("fcgibridge.cgi")

#: Seconds to wait for the worker to get ready (the app's import and start hook).
START_TIMEOUT = 60.0


def is_cgi_invocation(environ: Mapping[str, str], stdin_fd: int = 0) -> bool:
    """A CGI server started us: ``GATEWAY_INTERFACE`` is set and stdin is not a socket."""
    if not environ.get("GATEWAY_INTERFACE"):
        return False
    try:
        return not stat.S_ISSOCK(os.fstat(stdin_fd).st_mode)
    except OSError:  # stdin closed
        return True


def run(config: Config, *, app: LoadedApp | None = None) -> int:
    """Answer the request in ``os.environ`` and stdin; returns the exit status. *app*: an
    app object the caller already has, served in place of importing ``config.app``."""
    from .importer import load
    from .process.runtime import Runtime
    from .process.worker import Worker, new_event_loop

    if config.log_level == "info":  # "worker ready" for every request would fill the web server's log
        logging.getLogger("fcgibridge.server").setLevel(logging.WARNING)
    sys.stdout.flush()
    out = os.dup(1)  # the response goes here ...
    os.dup2(2, 1)  # ... and whatever the app prints to fd 1 (sys.stdout included) goes to stderr
    params = dict(os.environ)
    # httpoxy: a "Proxy:" request header arrives as HTTP_PROXY, which libraries would
    # take as a proxy setting. The app still sees it in the request's variables.
    os.environ.pop("HTTP_PROXY", None)
    try:
        try:
            loaded = app if app is not None else load(config)
        except UserError as exc:
            print(f"fcgibridge: error: {exc}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="fcgibridge-cgi-") as directory:
            path = str(Path(directory, "fcgi.sock"))
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(path)
            listener.listen(1)
            listener.setblocking(False)
            worker = Worker(loaded, [listener], Runtime(replace(config, workers=1)))
            server = _ServerThread(worker, new_event_loop(config.loop))
            try:
                if not server.start():
                    return server.code if server.code else 1
                return _exchange(path, params, out)
            finally:
                server.stop()
                listener.close()
    finally:
        sys.stdout.flush()
        os.close(out)


class _ServerThread:
    def __init__(self, worker: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.worker = worker
        self.loop = loop
        self.ready = threading.Event()
        self.code = 0
        self.finished = False
        self.thread = threading.Thread(target=self._run, name="fcgibridge-cgi")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.code = self.loop.run_until_complete(self.worker.serve(self.ready.set))
        except Exception:
            log.exception("the server failed")
            self.code = 1
        finally:
            self.finished = True
            self.ready.set()
            self.loop.close()

    def start(self) -> bool:
        """Start serving; False when the worker ended before it was ready (a start hook)."""
        self.thread.start()
        self.ready.wait(START_TIMEOUT)
        return not self.finished

    def stop(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self.worker.stop)
            self.thread.join()


def _exchange(path: str, params: dict[str, str], out: int) -> int:
    """One FastCGI request with the CGI variables (as they are) and stdin; STDOUT to *out*
    as it arrives, unparsed, and STDERR to stderr."""
    deadline = Deadline(path, Timeout(None, None, None))  # as long as the app takes
    try:
        conn = Connection(path, socket.AF_UNIX, path, deadline)
    except FastCGIError as exc:
        print(f"fcgibridge: error: {exc}", file=sys.stderr)
        return 1
    spec = RequestSpec(params, Role.RESPONDER, _request_body(params))
    exchange, upload = conn.channel.begin(spec, keep_conn=False, parse_head=False)
    try:
        conn.upload(upload, deadline)
        while True:
            _write_all(out, exchange.pop_body())
            for piece in exchange.stderr:
                sys.stderr.buffer.write(piece)
                sys.stderr.flush()
            exchange.stderr.clear()  # written: not kept for the rest of the request
            if exchange.done:
                break
            conn.read_once(deadline)
    except FastCGIError:
        pass  # the connection broke: said below, as for a close before END_REQUEST
    finally:
        conn.close()
    if exchange.ended is None:
        print("fcgibridge: error: the server closed the connection before the response ended", file=sys.stderr)
        return 1
    return 0


def _request_body(params: Mapping[str, str]) -> Iterator[bytes] | None:
    """``CONTENT_LENGTH`` bytes of stdin, in pieces; None when there is no body."""
    try:
        length = int(params.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stdin = sys.stdin.buffer if sys.stdin is not None else None
    if length <= 0 or stdin is None:
        return None
    return _read_stdin(stdin, length)


def _read_stdin(stdin: Any, length: int) -> Iterator[bytes]:
    while length > 0:
        chunk = stdin.read(min(CHUNK_SIZE, length))
        if not chunk:
            return
        length -= len(chunk)
        yield chunk


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
