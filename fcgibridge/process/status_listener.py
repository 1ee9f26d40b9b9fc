"""``--status-bind``: the master's own FastCGI listener for the status and ping pages.

The worker pages (``--status-path``, ``--ping-path``) are answered by a worker, so they
wait when every worker is busy — exactly when they are wanted. This listener (PHP-FPM's
``pm.status_listen``) lives in the supervisor process and answers from the scoreboard,
which every worker writes: any request is the status page (``?json``, ``?prometheus``,
... as on the worker page) unless its path is ``--ping-path``, which gets
``--ping-response``.

It must never hold up the supervisor loop, so it runs in a daemon thread with its own
small selector loop: non-blocking sockets, one buffer each way per connection, at most
:data:`MAX_CONNECTIONS` connections, :data:`MAX_REQUEST_SIZE` bytes per request, and
each exchange bounded in time: a connection has :data:`IDLE_TIMEOUT` seconds from its
start, or from its last answer sent whole, to send a request and take the answer, else it
is closed (a client trickling bytes or reading slowly cannot hold a connection). While an
answer waits to be sent nothing more is read, so a client that sends requests and never
reads the answers costs one answer's memory, not one per request. The FastCGI side is the
project's protocol core (:class:`~fcgibridge.protocol.ApplicationConnection`), the one
the workers use. :class:`StatusListenerEvents` binds the socket before the workers fork,
starts the thread as the supervisor starts, closes the workers' copies of its
sockets right after each fork, and shuts it down when the last worker is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..cgi import error_response, format_head
from ..config import Config
from ..protocol import ApplicationConnection, BadRecord, RemoteProtocolError, RequestStarted, Role
from .listeners import open_listeners
from .runtime import allowed_peers
from .scoreboard import Scoreboard
from .status import request_paths, status_page
from .supervisor import Supervisor, SupervisorEvents, WorkerProcess

log = logging.getLogger("fcgibridge.server")

#: Connections open at once; one more is closed as it arrives.
MAX_CONNECTIONS = 32
#: Bytes a connection may send for one request (records, params, body) before it is closed.
MAX_REQUEST_SIZE = 64 * 1024
#: Seconds a connection has, from its start or its last answer sent whole, to send a
#: request and take the answer (an idle kept-alive connection is closed after as long).
IDLE_TIMEOUT = 10.0
#: The loop's longest wait, so idle connections are swept and a stop is seen.
POLL_INTERVAL = 1.0

_HEADERS = ((b"Cache-Control", b"no-cache, no-store, must-revalidate"),)


def answer(config: Config, board: Scoreboard, params: dict[str, str]) -> bytes:
    """The whole CGI response (head and body) to one request on the status listener."""
    if config.ping_path and config.ping_path in request_paths(params):
        return format_head(200, ((b"Content-Type", b"text/plain; charset=utf-8"), *_HEADERS)) + (
            config.ping_response + "\n").encode()
    body, ctype = status_page(config, board, params.get("QUERY_STRING", ""))
    return format_head(200, ((b"Content-Type", ctype), *_HEADERS)) + body


class _Connection:
    """One client of the status listener: its socket, protocol core and buffers."""

    __slots__ = ("core", "last_seen", "outgoing", "received", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.core = ApplicationConnection(max_conns=MAX_CONNECTIONS, max_reqs=1, mpxs_conns=False,
                                          roles=(Role.RESPONDER,), max_params_size=MAX_REQUEST_SIZE)
        self.outgoing = bytearray()
        self.received = 0  # bytes since the last answer (MAX_REQUEST_SIZE)
        self.last_seen = now  # the start, or when the last answer was sent whole (IDLE_TIMEOUT)


class StatusServer:
    """The selector loop of the status listener, in its own daemon thread."""

    def __init__(self, sock: socket.socket, config: Config, board: Scoreboard,
                 allowed: Callable[[Any], bool] | None = None) -> None:
        self.sock = sock
        self.config = config
        self.board = board
        #: The workers' peer filter (``--allow-from``, else ``FCGI_WEB_SERVER_ADDRS``): the
        #: page names the requests in flight, so it is no more public than they are.
        self.allowed = allowed
        self.owner_pid = os.getpid()
        self.connections: dict[int, _Connection] = {}
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Connections closed as they came, past MAX_CONNECTIONS; when that was last logged.
        self.refused = 0
        self._refused_warned: float | None = None
        self.denied = 0  # connections from peers the filter refused
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fcgibridge-status", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the loop and close every socket (a unix socket loses its file). Master only."""
        if os.getpid() != self.owner_pid or self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        path = self.sock.getsockname() if self.sock.family == socket.AF_UNIX else None
        self._close_all()
        if isinstance(path, str) and path:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def close_in_child(self) -> None:
        """In a freshly forked worker: drop its copies of the listener's sockets (the
        thread is not there), so that a connection closes when the master closes it."""
        self._stopping = True
        self._close_all()

    def _close_all(self) -> None:
        for conn in list(self.connections.values()):
            conn.sock.close()
        self.connections.clear()
        self.selector.close()
        self.sock.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---------------------------------------------------------------- the loop

    def _run(self) -> None:
        while not self._stopping:
            try:
                ready = self.selector.select(POLL_INTERVAL)
            except (OSError, ValueError):  # closed under us: the listener is stopping
                return
            for key, mask in ready:
                if self._stopping:
                    return
                try:
                    self._handle(key, mask)
                except Exception:  # one bad connection must not end the listener
                    log.exception("status listener")
                    if isinstance(key.data, _Connection):
                        self._drop(key.data)
            self._sweep(time.monotonic())

    def _handle(self, key: selectors.SelectorKey, mask: int) -> None:
        conn = key.data
        if conn is None:
            if key.fileobj is self.sock:
                self._accept()
            return
        assert isinstance(conn, _Connection)
        if mask & selectors.EVENT_READ:
            self._read(conn)
        if mask & selectors.EVENT_WRITE and conn.sock.fileno() in self.connections:
            self._flush(conn)

    def _accept(self) -> None:
        for _ in range(16):  # a batch per turn
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("status listener: accept failed: %s", exc)
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                sock.close()
                self._refused_connection()
                continue
            if self.allowed is not None and not self._peer_allowed(sock):
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic())
            self.connections[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _peer_allowed(self, sock: socket.socket) -> bool:
        assert self.allowed is not None
        try:
            peer = sock.getpeername()
        except OSError:
            return False
        if self.allowed(peer):
            return True
        self.denied += 1
        if self.denied == 1 or self.denied % 1000 == 0:
            log.warning("status listener: refused a connection from %s: not in --allow-from "
                        "(or FCGI_WEB_SERVER_ADDRS); %d refused so far", peer[0], self.denied)
        return False

    def _refused_connection(self) -> None:
        """Count a connection closed past MAX_CONNECTIONS; warn once a minute at most (a
        client opening connections in a loop must not flood the log)."""
        self.refused += 1
        now = time.monotonic()
        if self._refused_warned is None or now - self._refused_warned >= 60:
            self._refused_warned = now
            log.warning("status listener: refused a connection, %d open (%d refused so far)",
                        len(self.connections), self.refused)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.received += len(data)
        if conn.received > MAX_REQUEST_SIZE:
            log.warning("status listener: closing a connection that sent more than %d bytes", MAX_REQUEST_SIZE)
            self._drop(conn)
            return
        try:
            events = conn.core.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning("status listener: closing a connection: %s", exc)
            self._drop(conn)
            return
        for event in events:
            if type(event) is RequestStarted:
                conn.outgoing += conn.core.end_request(event.request_id, stdout=self._answer(event.params))
                conn.received = 0
            elif type(event) is BadRecord and conn.core.state_of(event.request_id) is not None:
                conn.outgoing += conn.core.end_request(event.request_id, 1, stdout=error_response(400))
        conn.outgoing += conn.core.data_to_send()
        self._flush(conn)

    def _answer(self, params: dict[str, str]) -> bytes:
        try:
            return answer(self.config, self.board, params)
        except Exception:
            log.exception("status listener: rendering the status page")
            return error_response(500)

    def _flush(self, conn: _Connection) -> None:
        if conn.outgoing:
            try:
                sent = conn.sock.send(conn.outgoing)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                return
            del conn.outgoing[:sent]
            if not conn.outgoing:
                conn.last_seen = time.monotonic()  # an exchange done: the next one's time starts
        if conn.outgoing:  # read no more until the client takes this answer
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        if conn.core.should_close:
            self._drop(conn)
            return
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _sweep(self, now: float) -> None:
        for conn in list(self.connections.values()):
            if now - conn.last_seen >= IDLE_TIMEOUT:
                self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if self.connections.pop(fd, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()


class StatusListenerEvents(SupervisorEvents):
    """Binds ``--status-bind`` now (before any worker forks, so a bad address fails at
    startup), serves it from the supervisor's start to the last worker's exit."""

    def __init__(self, config: Config, board: Scoreboard) -> None:
        sock = open_listeners(replace(config, bind=[config.status_bind]))[0]
        self.server = StatusServer(sock, config, board, allowed_peers(config, os.environ))
        atexit.register(self.server.stop)  # a boot failure ends the master without a last exit event
        log.info("status listener on %s", config.status_bind)

    def starting(self, supervisor: Supervisor) -> None:
        self.server.start()  # before any worker: it answers while none serves yet (ondemand) too

    def stopping(self, supervisor: Supervisor) -> None:
        if not supervisor.workers:  # --pm ondemand with none: no exit event will come
            self.server.stop()

    def child_started(self, worker: WorkerProcess) -> None:
        self.server.close_in_child()

    def exited(self, supervisor: Supervisor, worker: WorkerProcess, code: int) -> None:
        if supervisor.stopping_since is not None and not supervisor.workers:
            self.server.stop()
