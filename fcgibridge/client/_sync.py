"""The blocking client: sockets and a selector around the shared :class:`Channel`."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..protocol import FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, Role
from ._base import (
    CHUNK_SIZE,
    Channel,
    ConnectionClosed,
    Deadline,
    Exchange,
    FastCGIError,
    RequestSpec,
    Response,
    StreamedHead,
    Timeout,
    connect_error,
    iter_body,
    make_spec,
    parse_address,
)

#: After an early close of a stream, how long to wait for the aborted request to end
#: before closing the connection instead of keeping it.
ABORT_GRACE = 2.0

DEFAULT_VALUES = (FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS)


class _Connection:
    """One non-blocking socket and its channel."""

    def __init__(self, address: str, family: int, sockaddr: Any, deadline: Deadline) -> None:
        self.address = address
        self.channel = Channel(address)
        self.idle_since = time.monotonic()
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.next_wait(deadline.timeout.connect, "connect"))
            sock.connect(sockaddr)
        except TimeoutError:
            sock.close()
            raise deadline.error("connect") from None
        except OSError as exc:
            sock.close()
            raise connect_error(address, exc) from None
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)

    def close(self) -> None:
        self.channel.reusable = False
        self.selector.close()
        self.sock.close()

    def is_alive(self) -> bool:
        """False when the server closed the idle connection (or sent something unasked)."""
        if self.channel.closed:
            return False
        if not self.selector.select(0):
            return True
        try:  # readable while idle: end of file, a reset, or bytes nobody asked for
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            pass
        return False

    def read_once(self, deadline: Deadline) -> list[Exchange]:
        """Wait for bytes (a read timeout at most) and feed them to the channel."""
        wait = deadline.next_wait(deadline.timeout.read)
        if not self.selector.select(wait):
            raise deadline.error("read")
        try:
            data = self.sock.recv(CHUNK_SIZE)
        except BlockingIOError:
            return []
        except OSError as exc:
            self.channel.eof()
            raise ConnectionClosed(self.address, f"the connection broke: {exc.strerror or exc}") from None
        if not data:
            self.channel.eof()
            return list(self.channel.exchanges.values())
        return self.channel.feed(data)

    def send(self, data: bytes, exchange: Exchange, deadline: Deadline) -> None:
        """Send ``data``, reading the server's output meanwhile (it may answer before the
        body is in, and a server blocked writing would otherwise never read our body).
        Stops early once ``exchange`` has ended."""
        view = memoryview(data)
        both = selectors.EVENT_READ | selectors.EVENT_WRITE
        self.selector.modify(self.sock, both)
        try:
            while view and not exchange.done:
                wait = deadline.next_wait(deadline.timeout.read)
                ready = self.selector.select(wait)
                if not ready:
                    raise deadline.error("send")
                mask = ready[0][1]
                if mask & selectors.EVENT_READ:
                    self.read_once(deadline)
                if mask & selectors.EVENT_WRITE and not exchange.done:
                    try:
                        sent = self.sock.send(view)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        self.channel.reusable = False
                        if exchange.done:
                            return
                        raise ConnectionClosed(self.address, f"the connection broke while sending: "
                                                             f"{exc.strerror or exc}") from None
                    view = view[sent:]
        finally:
            if self.sock.fileno() != -1:
                self.selector.modify(self.sock, selectors.EVENT_READ)


class StreamingResponse(StreamedHead):
    """A response whose head has arrived; the body is read as it comes.

    ``status``, ``reason`` and ``headers`` are there at once; iterate over
    :meth:`iter_bytes` (or call :meth:`read`) for the body. ``stderr``, ``app_status`` and
    ``protocol_status`` are complete once the body was read to the end.
    """

    def __init__(self, client: FastCGIClient, conn: _Connection, exchange: Exchange, deadline: Deadline) -> None:
        super().__init__(exchange)
        self._client = client
        self._conn: _Connection | None = conn
        self._deadline = deadline

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, chunk by chunk as the server sends it; memory stays bounded."""
        exchange = self._exchange
        while True:
            chunk = exchange.pop_body()
            if chunk:
                yield chunk
                continue
            if exchange.done:
                break
            if self._conn is None:
                raise RuntimeError("the response was closed")
            try:
                self._conn.read_once(self._deadline)
            except FastCGIError:
                self.close()
                raise
        exchange.raise_error()
        self.close()

    def read(self) -> bytes:
        """The rest of the body."""
        return b"".join(self.iter_bytes())

    def close(self) -> None:
        """End the request: kept if it completed, else aborted (or the connection closed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._finish(conn, self._exchange)

    def __enter__(self) -> StreamingResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FastCGIClient:
    """A blocking FastCGI client for one server address.

    ``timeout`` is one number for connecting and for each read, or a :class:`Timeout`
    (connect, read, total). With ``keep_alive`` requests ask for FCGI_KEEP_CONN and
    finished connections wait in a pool (at most ``pool_size``, each for
    ``idle_timeout`` seconds); close the client (or use it as a context manager) to
    close them. ``params`` are defaults added to every request's CGI variables.
    The client may be shared by threads: each request holds its own connection.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float | Timeout | None = 10.0,
        keep_alive: bool = False,
        pool_size: int = 8,
        idle_timeout: float = 60.0,
        root: str | None = None,
        script_filename: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> None:
        self.address = address
        self.family, self.sockaddr = parse_address(address)
        self.timeout = Timeout.of(timeout)
        self.keep_alive = keep_alive
        self.pool_size = pool_size
        self.idle_timeout = idle_timeout
        self.root = root
        self.script_filename = script_filename
        self.params = dict(params or {})
        self._pool: deque[_Connection] = deque()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public API

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        params: Mapping[str, str] | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: Any = b"",
        script_filename: str | None = None,
        root: str | None = None,
        role: Role = Role.RESPONDER,
        timeout: float | Timeout | None = None,
    ) -> Response:
        """Send one request and read the whole response.

        ``body`` is bytes, a binary file, or an iterable of bytes (streamed in STDIN
        records; give a ``Content-Length`` header when its size is not known).
        """
        spec = self._spec(method, path, params, headers, body, script_filename, root, role)
        conn, exchange, deadline = self._start(spec, timeout, keep_raw=True)
        try:
            while not exchange.done:
                conn.read_once(deadline)
            response = exchange.finish()
        except BaseException:
            conn.close()
            raise
        self._finish(conn, exchange)
        return response

    @contextmanager
    def stream(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        params: Mapping[str, str] | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: Any = b"",
        script_filename: str | None = None,
        root: str | None = None,
        role: Role = Role.RESPONDER,
        timeout: float | Timeout | None = None,
    ) -> Iterator[StreamingResponse]:
        """Send a request; yields a :class:`StreamingResponse` as soon as its head arrived.

        Leaving the block before the body's end aborts the request (FCGI_ABORT_REQUEST)
        and keeps the connection only if the server ends it promptly.
        """
        spec = self._spec(method, path, params, headers, body, script_filename, root, role)
        conn, exchange, deadline = self._start(spec, timeout)
        response = StreamingResponse(self, conn, exchange, deadline)
        try:
            yield response
        finally:
            response.close()

    def get_values(self, names: Iterable[str] = DEFAULT_VALUES, *,
                   timeout: float | Timeout | None = None) -> dict[str, str]:
        """FCGI_GET_VALUES on a connection of its own (PHP-FPM closes it after answering)."""
        deadline = Deadline(self.address, self._timeout(timeout))
        conn = _Connection(self.address, self.family, self.sockaddr, deadline)
        try:
            data = conn.channel.core.get_values(names)
            conn.sock.setblocking(True)
            conn.sock.settimeout(deadline.next_wait(deadline.timeout.read))
            try:
                conn.sock.sendall(data)
            except OSError as exc:
                raise ConnectionClosed(self.address, f"the connection broke: {exc}") from None
            conn.sock.setblocking(False)
            while conn.channel.values is None:
                conn.read_once(deadline)
                if conn.channel.closed:
                    raise ConnectionClosed(self.address, "the server closed the connection without "
                                                         "answering FCGI_GET_VALUES")
            return conn.channel.values
        finally:
            conn.close()

    def ping(self, *, timeout: float | Timeout | None = None) -> float:
        """Seconds a FCGI_GET_VALUES round trip took; raises if the server does not answer."""
        start = time.monotonic()
        self.get_values((FCGI_MPXS_CONNS,), timeout=timeout)
        return time.monotonic() - start

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool."""
        return len(self._pool)

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            pool, self._pool = self._pool, deque()
        for conn in pool:
            conn.close()

    def __enter__(self) -> FastCGIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------- internals

    def _timeout(self, timeout: float | Timeout | None) -> Timeout:
        return self.timeout if timeout is None else Timeout.of(timeout)

    def _spec(self, method: str, path: str, params: Mapping[str, str] | None,
              headers: Iterable[tuple[str, str]] | Mapping[str, str], body: Any,
              script_filename: str | None, root: str | None, role: Role) -> RequestSpec:
        return make_spec(method, path, params=params, headers=headers, body=body,
                         script_filename=script_filename or self.script_filename, root=root or self.root,
                         role=role, defaults=self.params)

    def _acquire(self, deadline: Deadline) -> _Connection:
        """A pooled connection that is still open, else a new one.

        A pooled connection the server closed meanwhile is found here, before any byte
        of the request was sent on it, and replaced.
        """
        now = time.monotonic()
        while True:
            with self._lock:
                conn = self._pool.pop() if self._pool else None
            if conn is None:
                return _Connection(self.address, self.family, self.sockaddr, deadline)
            if now - conn.idle_since < self.idle_timeout and conn.is_alive():
                return conn
            conn.close()

    def _start(self, spec: RequestSpec, timeout: float | Timeout | None,
               keep_raw: bool = False) -> tuple[_Connection, Exchange, Deadline]:
        deadline = Deadline(self.address, self._timeout(timeout))
        conn = self._acquire(deadline)
        try:
            exchange, data, body_sent = conn.channel.begin(spec, keep_conn=self.keep_alive, keep_raw=keep_raw)
            conn.send(data, exchange, deadline)
            if not body_sent:
                for chunk in iter_body(spec.body):
                    out = conn.channel.stdin(exchange, chunk)
                    if out is None:
                        break
                    conn.send(out, exchange, deadline)
                else:
                    out = conn.channel.end_stdin(exchange)
                    if out is not None:
                        conn.send(out, exchange, deadline)
            while exchange.head is None and not exchange.done:
                conn.read_once(deadline)
            exchange.raise_error()
        except BaseException:
            conn.close()
            raise
        return conn, exchange, deadline

    def _finish(self, conn: _Connection, exchange: Exchange) -> None:
        """The caller is done with ``exchange``: pool the connection if it can be reused."""
        channel = conn.channel
        try:
            if not exchange.done and self.keep_alive and channel.reusable:
                data = channel.abort(exchange)
                grace = Deadline(self.address, Timeout(None, ABORT_GRACE, ABORT_GRACE))
                conn.send(data, exchange, grace)
                while not exchange.done:
                    conn.read_once(grace)
        except (FastCGIError, OSError):
            conn.close()
            return
        channel.forget(exchange)
        if not channel.keepable(exchange, self.keep_alive):
            conn.close()
            return
        conn.idle_since = time.monotonic()
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(conn)
                return
        conn.close()



