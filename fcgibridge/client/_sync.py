"""The blocking client: a socket and a selector around the shared :class:`Channel`;
everything else is :class:`~fcgibridge.client._base.ClientBase`'s."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Unpack

from ..protocol import FCGI_MPXS_CONNS
from ._base import (
    CHUNK_SIZE,
    DEFAULT_VALUES,
    Channel,
    ClientBase,
    ConnectionClosed,
    Deadline,
    Exchange,
    FastCGIError,
    RequestOptions,
    RequestSpec,
    Response,
    StreamedHead,
    Timeout,
    Upload,
    connect_error,
)


class Connection:
    """One non-blocking socket and its channel: the blocking client's I/O loop (also
    CGI mode's, :mod:`fcgibridge.cgi_mode`)."""

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

    def upload(self, upload: Upload, deadline: Deadline) -> None:
        """Send the request's writes in order (as long as the server has not answered)."""
        for data in upload.writes():
            self.send(data, upload.exchange, deadline)

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

    def __init__(self, client: FastCGIClient, conn: Connection, exchange: Exchange, deadline: Deadline) -> None:
        super().__init__(exchange)
        self._client = client
        self._conn: Connection | None = conn
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


class FastCGIClient(ClientBase[Connection]):
    """A blocking FastCGI client for one server address.

    ``timeout`` is one number for connecting and for each read, or a :class:`Timeout`
    (connect, read, total). With ``keep_alive`` requests ask for FCGI_KEEP_CONN and
    finished connections wait in a pool (at most ``pool_size``, each for
    ``idle_timeout`` seconds); close the client (or use it as a context manager) to
    close them. ``root`` and ``script_filename`` are the defaults of every request's;
    ``params`` are added to every request's CGI variables. The client may be shared by
    threads: each request holds its own connection.
    """

    # ------------------------------------------------------------------ public API

    def request(self, method: str = "GET", path: str = "/", **options: Unpack[RequestOptions]) -> Response:
        """Send one request and read the whole response.

        The options are ``params``, ``headers``, ``body``, ``data``, ``script_filename``,
        ``root``, ``role`` and ``timeout`` (:class:`~fcgibridge.client._base.RequestOptions`).
        ``body`` is bytes, a binary file, or an iterable of bytes (streamed in STDIN
        records; give a ``Content-Length`` header when its size is not known). ``data``
        (the same kinds) makes it a FILTER request: its data stream, sent after the body.
        """
        conn, exchange, deadline = self._start(self._spec(method, path, **options), keep_raw=True)
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
    def stream(self, method: str = "GET", path: str = "/",
               **options: Unpack[RequestOptions]) -> Iterator[StreamingResponse]:
        """Send a request (the options of :meth:`request`); yields a
        :class:`StreamingResponse` as soon as its head arrived.

        Leaving the block before the body's end aborts the request (FCGI_ABORT_REQUEST)
        and keeps the connection only if the server ends it promptly.
        """
        conn, exchange, deadline = self._start(self._spec(method, path, **options))
        response = StreamingResponse(self, conn, exchange, deadline)
        try:
            yield response
        finally:
            response.close()

    def get_values(self, names: Iterable[str] = DEFAULT_VALUES, *,
                   timeout: float | Timeout | None = None) -> dict[str, str]:
        """FCGI_GET_VALUES on a connection of its own (PHP-FPM closes it after answering)."""
        deadline = Deadline(self.address, self._timeout(timeout))
        conn = Connection(self.address, self.family, self.sockaddr, deadline)
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(deadline.next_wait(deadline.timeout.read))
            try:
                conn.sock.sendall(conn.channel.ask_values(names))
            except OSError as exc:
                raise ConnectionClosed(self.address, f"the connection broke: {exc}") from None
            conn.sock.setblocking(False)
            while (values := conn.channel.values_answer()) is None:
                conn.read_once(deadline)
            return values
        finally:
            conn.close()

    def ping(self, *, timeout: float | Timeout | None = None) -> float:
        """Seconds a FCGI_GET_VALUES round trip took; raises if the server does not answer."""
        start = time.monotonic()
        self.get_values((FCGI_MPXS_CONNS,), timeout=timeout)
        return time.monotonic() - start

    def close(self) -> None:
        """Close every pooled connection."""
        for conn in self._take_all_idle():
            conn.close()

    def __enter__(self) -> FastCGIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------- internals

    def _acquire(self, deadline: Deadline) -> Connection:
        """A pooled connection that is still open, else a new one."""
        conn, stale = self._take_idle(Connection.is_alive)
        for old in stale:
            old.close()
        return conn or Connection(self.address, self.family, self.sockaddr, deadline)

    def _start(self, spec: RequestSpec, keep_raw: bool = False) -> tuple[Connection, Exchange, Deadline]:
        deadline = Deadline(self.address, spec.timeout)
        conn = self._acquire(deadline)
        try:
            exchange, upload = conn.channel.begin(spec, keep_conn=self.keep_alive, keep_raw=keep_raw)
            conn.upload(upload, deadline)
            while not exchange.head_ready:
                conn.read_once(deadline)
            exchange.raise_error()
        except BaseException:
            conn.close()
            raise
        return conn, exchange, deadline

    def _finish(self, conn: Connection, exchange: Exchange) -> None:
        """The caller is done with ``exchange``: pool the connection if it can be reused."""
        try:
            if conn.channel.abort_first(exchange, self.keep_alive):
                grace = Deadline.for_abort(self.address)
                conn.send(conn.channel.abort(exchange), exchange, grace)
                while not exchange.done:
                    conn.read_once(grace)
        except (FastCGIError, OSError):
            conn.close()
            return
        if not self._keep(conn, exchange):
            conn.close()
