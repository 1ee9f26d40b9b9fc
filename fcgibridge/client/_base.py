"""What the blocking and the asyncio client share: everything but the I/O.

A :class:`Channel` is the protocol state of one connection (the sans-IO
:class:`~fcgibridge.protocol.ClientConnection` plus one :class:`Exchange` per request
in flight); an :class:`Exchange` turns the events of one request into a CGI head (with
the package's one parser, :class:`fcgibridge.cgi.HeadParser`), body chunks, stderr and
the END_REQUEST statuses; an :class:`Upload` is the order of the writes that carry one
request (params, body pieces, the end of STDIN) and when to stop them.
:class:`ClientBase` holds the options, turns the arguments of ``request()``/``stream()``
(:class:`RequestOptions`) into a :class:`RequestSpec`, and keeps the pool of idle
connections and the keep-or-close decisions. The sync and async clients only connect,
move bytes between a socket and a channel, and wait.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Generic, Protocol, TypedDict, TypeVar
from urllib.parse import urlsplit

from ..addresses import UnixAddress, parse_connect
from ..cgi import CGIHead, CGIResponseError, HeadParser
from ..protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ClientConnection,
    LocalProtocolError,
    ProtocolStatus,
    RemoteProtocolError,
    RequestEnded,
    Role,
    Stderr,
    Stdout,
    ValuesResult,
)

#: Size of the STDIN pieces a body is sent in, and of one socket read.
CHUNK_SIZE = 64 * 1024

#: A body of bytes up to this size goes out in the same write as the params.
SMALL_BODY = 1024 * 1024

#: A response body buffered beyond this stops the reading until the caller catches up.
HIGH_WATER = 1024 * 1024

#: After an early close of a stream, how long to wait for the aborted request to end
#: before closing the connection instead of keeping it.
ABORT_GRACE = 2.0

#: What ``get_values()`` asks for when not told.
DEFAULT_VALUES = (FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS)


# --------------------------------------------------------------------------- errors


class FastCGIError(Exception):
    """Base class of client errors; the message names the address, ``address`` holds it."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address


class ConnectError(FastCGIError):
    """Could not connect to the FastCGI server."""


class RequestTimeout(FastCGIError):
    """Connecting, one read, or the whole request took longer than its timeout."""

    #: What ran out: "connect", "send" or "read" (one wait), or "total" (the whole request).
    waiting_for: str = "total"

    def __init__(self, address: str, message: str, waiting_for: str = "total") -> None:
        super().__init__(address, message)
        self.waiting_for = waiting_for


class ConnectionClosed(FastCGIError):
    """The server closed the connection before END_REQUEST."""


class ProtocolFailure(FastCGIError):
    """The server's bytes were not valid FastCGI, or its response not valid CGI."""


class RequestRefused(FastCGIError):
    """The server ended the request with a protocol status other than REQUEST_COMPLETE."""

    protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE


class Overloaded(RequestRefused):
    """FCGI_OVERLOADED: the server is out of a resource (too many requests)."""

    protocol_status = ProtocolStatus.OVERLOADED


class CantMultiplex(RequestRefused):
    """FCGI_CANT_MPX_CONN: the server takes one request at a time per connection."""

    protocol_status = ProtocolStatus.CANT_MPX_CONN


class UnknownRole(RequestRefused):
    """FCGI_UNKNOWN_ROLE: the server does not play the role asked for."""

    protocol_status = ProtocolStatus.UNKNOWN_ROLE


_REFUSALS: dict[int, type[RequestRefused]] = {
    int(ProtocolStatus.OVERLOADED): Overloaded,
    int(ProtocolStatus.CANT_MPX_CONN): CantMultiplex,
    int(ProtocolStatus.UNKNOWN_ROLE): UnknownRole,
}


def connect_error(address: str, exc: OSError) -> ConnectError:
    return ConnectError(address, f"cannot connect: {exc.strerror or exc}")


# ------------------------------------------------------------------------ addresses


def parse_address(text: str) -> tuple[int, Any]:
    """``(family, sockaddr)`` to connect to ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:PATH``
    (the grammar of :mod:`fcgibridge.addresses`; ``:PORT`` is ``127.0.0.1:PORT``).
    A malformed address is a :class:`ValueError` (an :class:`~fcgibridge.addresses.AddressError`)."""
    address = parse_connect(text)
    if isinstance(address, UnixAddress):
        return socket.AF_UNIX, address.path
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    return family, (address.host, address.port)


# ------------------------------------------------------------------------- timeouts


@dataclass(frozen=True)
class Timeout:
    """Seconds allowed to connect, for each read, and for the whole request (None: no limit)."""

    connect: float | None = 10.0
    read: float | None = 60.0
    total: float | None = None

    @classmethod
    def of(cls, value: float | Timeout | None) -> Timeout:
        """A :class:`Timeout` as given, or one number for both connect and each read."""
        if isinstance(value, Timeout):
            return value
        return cls(value, value, None)


class Deadline:
    """The time left of a :class:`Timeout` for the next wait."""

    def __init__(self, address: str, timeout: Timeout) -> None:
        self.address = address
        self.timeout = timeout
        self.end = None if timeout.total is None else time.monotonic() + timeout.total

    def next_wait(self, step: float | None, what: str = "read") -> float | None:
        """Seconds the next wait may take; raises :class:`RequestTimeout` once the total is spent."""
        if self.end is None:
            return step
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left if step is None else min(step, left)

    @classmethod
    def for_abort(cls, address: str) -> Deadline:
        """The time an aborted request gets to end (:data:`ABORT_GRACE`) before its connection is closed."""
        return cls(address, Timeout(None, ABORT_GRACE, ABORT_GRACE))

    def expired(self) -> RequestTimeout:
        return RequestTimeout(self.address, f"the request did not finish within {self.timeout.total} s")

    def error(self, what: str) -> RequestTimeout:
        """The timeout error after a wait of ``what`` ("read", "connect", "send") ran out."""
        if self.end is not None and time.monotonic() >= self.end:
            return self.expired()
        limit = self.timeout.connect if what == "connect" else self.timeout.read
        return RequestTimeout(self.address, f"timed out after {limit} s waiting to {what}", what)


# -------------------------------------------------------------------------- headers


class Headers(list[tuple[str, str]]):
    """Response headers: ordered ``(name, value)`` pairs, repeated names kept, looked up
    case-insensitively with :meth:`get` and :meth:`get_all`."""

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any case), or ``default``."""
        lowered = name.lower()
        return next((value for key, value in self if key.lower() == lowered), default)

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (any case), in order."""
        lowered = name.lower()
        return [value for key, value in self if key.lower() == lowered]

    def has(self, name: str) -> bool:
        lowered = name.lower()
        return any(key.lower() == lowered for key, _ in self)


@dataclass
class Response:
    """A whole FastCGI response."""

    status: int
    reason: str
    headers: Headers
    body: bytes
    stderr: bytes = b""
    #: The application's exit status from END_REQUEST (``appStatus``).
    app_status: int = 0
    #: ``protocolStatus`` from END_REQUEST (0, REQUEST_COMPLETE, for any response).
    protocol_status: int = 0
    #: How many requests the connection had carried before this one (0: a new connection).
    reuse_count: int = 0
    #: The CGI head as the application sent it (header lines and the blank line).
    raw_head: bytes = field(default=b"", repr=False)

    @property
    def raw(self) -> bytes:
        """The whole STDOUT stream as sent: the CGI head, then the body."""
        return self.raw_head + self.body

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        return self.headers.get(name, default)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")


# --------------------------------------------------------------------------- params

Body = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes] | None


def build_params(
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    content_length: int | None = None,
    script_filename: str | None = None,
    document_root: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """CGI variables for an HTTP request, the way nginx's ``fastcgi_params`` sends them.

    ``target`` is the path with its query string. With ``document_root`` the script is
    the path under that root (``SCRIPT_FILENAME`` = root + path); ``script_filename``
    names it directly. HTTP headers become ``HTTP_*`` variables, except ``Content-Type``
    and ``Content-Length``, which have CGI names. ``extra`` is applied last and wins.
    """
    target = target if target.startswith("/") else "/" + target
    parts = urlsplit(target)
    path = parts.path or "/"
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "fcgibridge",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": method.upper(),
        "REQUEST_URI": target,
        "DOCUMENT_URI": path,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": parts.query,
        "SERVER_NAME": "localhost",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "HTTP_HOST": "localhost",
    }
    if document_root is not None:
        root = document_root.rstrip("/")
        params["DOCUMENT_ROOT"] = root or "/"
        if script_filename is None:
            script_filename = root + path
    if script_filename is not None:
        params["SCRIPT_FILENAME"] = script_filename
        params["SCRIPT_NAME"], params["PATH_INFO"] = path, ""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            params[key] = value
        elif "HTTP_" + key in params and key != "HOST":  # repeated header: joined, as nginx does
            params["HTTP_" + key] += ", " + value
        else:
            params["HTTP_" + key] = value
    if content_length is not None:
        params["CONTENT_LENGTH"] = str(content_length)
    if "HTTP_HOST" in params and "SERVER_NAME" not in (extra or {}):
        params["SERVER_NAME"] = params["HTTP_HOST"].rsplit(":", 1)[0] or "localhost"
    if extra:
        params.update(extra)
    return params


def body_length(body: Body) -> int | None:
    """The byte length of a body when it is known in advance: bytes, or a seekable file
    (from its position to its end)."""
    if body is None:
        return None
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    handle: Any = body
    seekable = getattr(handle, "seekable", None)
    try:
        if seekable is None or not seekable():
            return None
        position = handle.tell()
        end = handle.seek(0, os.SEEK_END)
        handle.seek(position)
    except (OSError, ValueError):
        return None
    return int(end - position)


def data_params(data: Body) -> dict[str, str]:
    """The FILTER role's params for its data stream (spec 6.4): ``FCGI_DATA_LENGTH`` when
    the length is known (bytes, a seekable file), ``FCGI_DATA_LAST_MOD`` (seconds since
    the epoch) when it is a file on disk."""
    params: dict[str, str] = {}
    length = body_length(data)
    if length is not None:
        params["FCGI_DATA_LENGTH"] = str(length)
    fileno = getattr(data, "fileno", None)
    if fileno is not None:
        with contextlib.suppress(OSError, ValueError):  # a file-like with no file behind it
            params["FCGI_DATA_LAST_MOD"] = str(int(os.fstat(fileno()).st_mtime))
    return params


def iter_body(body: Body) -> Iterator[bytes]:
    """The pieces of a body given as bytes, a binary file, or an iterable of bytes."""
    if body is None:
        return
    if isinstance(body, bytes | bytearray | memoryview):
        view = memoryview(body)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start : start + CHUNK_SIZE])
        return
    read = getattr(body, "read", None)
    if read is not None:
        while chunk := read(CHUNK_SIZE):
            yield chunk
        return
    for chunk in body:
        if chunk:
            yield bytes(chunk)


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of ``request()`` and ``stream()``, the same for both clients.

    ``params``: CGI variables applied last (they win over everything); ``headers``: pairs
    or a mapping, sent as :func:`build_params` says; ``body``: bytes, a binary file, an
    iterable of bytes (or, for the asyncio client, an async iterable); ``data``: the
    FILTER role's data stream (FCGI_DATA, sent after the body), as ``body``;
    ``script_filename`` and ``root``: as for :func:`build_params`, default the client's;
    ``role``: the FastCGI role (RESPONDER; FILTER when ``data`` is given); ``timeout``:
    one number or a :class:`Timeout`, default the client's.
    """

    params: Mapping[str, str] | None
    headers: Iterable[tuple[str, str]] | Mapping[str, str]
    body: Any
    data: Any
    script_filename: str | None
    root: str | None
    role: Role | None
    timeout: float | Timeout | None


class ClientOptions(TypedDict, total=False):
    """The keyword arguments both clients take (see :class:`ClientBase`)."""

    timeout: float | Timeout | None
    keep_alive: bool
    pool_size: int
    idle_timeout: float
    root: str | None
    script_filename: str | None
    params: Mapping[str, str] | None


@dataclass
class RequestSpec:
    """One request, ready to send: its params, role, body, timeout and (FILTER role) data."""

    params: dict[str, str]
    role: Role
    body: Any
    timeout: Timeout = field(default_factory=Timeout)
    #: The FILTER role's data stream, sent after the body; None for the other roles.
    data: Any = None


# ------------------------------------------------------------------------ exchanges


class Exchange:
    """One request's answer as it arrives: head, body chunks, stderr, END_REQUEST."""

    def __init__(self, address: str, request_id: int, reuse_count: int, *, parse_head: bool = True) -> None:
        self.address = address
        self.request_id = request_id
        self.reuse_count = reuse_count
        #: None: STDOUT is not parsed, it all goes to :attr:`body` as it came (CGI mode
        #: passes the CGI response on unchanged).
        self.head_parser = HeadParser() if parse_head else None
        self.head: CGIHead | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.stderr: list[bytes] = []
        self.raw: list[bytes] | None = None
        self.ended: RequestEnded | None = None
        self.error: FastCGIError | None = None
        #: The input was sent whole (the closing empty STDIN went out; for a FILTER
        #: request, the closing empty DATA).
        self.body_sent = False
        #: The caller stopped listening; further output is dropped.
        self.abandoned = False

    @property
    def done(self) -> bool:
        return self.ended is not None or self.error is not None

    @property
    def head_ready(self) -> bool:
        """The head has arrived, or the request is over: the caller need not wait any more."""
        return self.head is not None or self.done

    def on_stdout(self, data: bytes) -> None:
        if self.abandoned:
            return
        if self.head is None and self.head_parser is not None:
            if self.raw is not None:
                self.raw.append(data)
            try:
                data = self.head_parser.feed(data)
            except CGIResponseError as exc:
                self.fail(ProtocolFailure(self.address, f"invalid CGI response: {exc}"))
                return
            self.head = self.head_parser.head
            if self.head is not None and self.raw is not None and data:
                self.raw[-1] = self.raw[-1][: len(self.raw[-1]) - len(data)]  # the head's part only
        if data:
            self.body.append(data)
            if self.raw is None:  # a whole response is wanted anyway: no backpressure
                self.buffered += len(data)

    def on_end(self, event: RequestEnded) -> None:
        self.ended = event
        refusal = _REFUSALS.get(event.protocol_status)
        if refusal is not None:
            name = ProtocolStatus(event.protocol_status).name
            self.error = refusal(self.address, f"the server refused the request: FCGI_{name}")
        elif self.head is None and self.head_parser is not None and self.error is None and not self.abandoned:
            # Headers without the blank line (or no output at all) still make a head.
            try:
                self.head_parser.feed(b"\r\n\r\n")
            except CGIResponseError as exc:
                self.fail(ProtocolFailure(self.address, f"invalid CGI response: {exc}"))
            self.head = self.head_parser.head

    def fail(self, error: FastCGIError) -> None:
        if self.error is None:
            self.error = error

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def pop_body(self) -> bytes:
        """Every body byte that has arrived and not been taken yet."""
        if not self.body:
            return b""
        data = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        return data

    def finish(self) -> Response:
        """The whole response once END_REQUEST arrived."""
        self.raise_error()
        assert self.head is not None and self.ended is not None
        return Response(self.head.status, self.head.reason, Headers(self.head.headers), self.pop_body(),
                        b"".join(self.stderr), self.ended.app_status, self.ended.protocol_status,
                        self.reuse_count, raw_head=b"".join(self.raw or ()))


class StreamedHead:
    """What a streamed response shows at once (status, reason, headers) and, once its
    body was read to the end, its stderr and END_REQUEST statuses. Shared by the
    blocking and the asyncio streaming responses."""

    def __init__(self, exchange: Exchange) -> None:
        assert exchange.head is not None
        self._exchange = exchange
        self.status = exchange.head.status
        self.reason = exchange.head.reason
        self.headers = Headers(exchange.head.headers)
        #: How many requests the connection had carried before this one.
        self.reuse_count = exchange.reuse_count

    @property
    def stderr(self) -> bytes:
        """What the application wrote to FCGI_STDERR so far."""
        return b"".join(self._exchange.stderr)

    @property
    def app_status(self) -> int | None:
        return None if self._exchange.ended is None else self._exchange.ended.app_status

    @property
    def protocol_status(self) -> int | None:
        return None if self._exchange.ended is None else self._exchange.ended.protocol_status

    @property
    def complete(self) -> bool:
        """END_REQUEST arrived (the whole body has been received)."""
        return self._exchange.ended is not None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


class Channel:
    """The protocol state of one client connection: the core and its exchanges."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.core = ClientConnection()
        self.exchanges: dict[int, Exchange] = {}
        #: Requests started on this connection so far.
        self.uses = 0
        self.values: dict[str, str] | None = None
        self.closed = False
        #: The connection broke (closed by the server, or not FastCGI): nothing more on it.
        self.failed = False
        #: The connection is in a state where another request may follow on it.
        self.reusable = True

    @property
    def reuse_count(self) -> int:
        """How many times the connection was reused (requests after the first)."""
        return max(self.uses - 1, 0)

    @property
    def idle(self) -> bool:
        return not self.exchanges and self.core.active_requests == 0

    def begin(self, spec: RequestSpec, *, keep_conn: bool, keep_raw: bool = False,
              parse_head: bool = True) -> tuple[Exchange, Upload]:
        """Start a request: its exchange, and the writes that carry it (a small body of
        bytes goes out in the first one)."""
        request_id, data = self.core.begin_request(spec.params, role=spec.role, keep_conn=keep_conn)
        exchange = Exchange(self.address, request_id, self.uses, parse_head=parse_head)
        if keep_raw:
            exchange.raw = []
        self.uses += 1
        if not keep_conn:
            self.reusable = False
        self.exchanges[request_id] = exchange
        body = spec.body
        if not _small(body):
            return exchange, Upload(self, exchange, data, body, spec.data)
        data += self.core.end_stdin(request_id, bytes(body) if body else b"")
        if not _small(spec.data):  # the body went with the params, the data follows
            return exchange, Upload(self, exchange, data, None, spec.data)
        if spec.data is not None:
            data += self.core.end_data(request_id, bytes(spec.data))
        exchange.body_sent = True
        return exchange, Upload(self, exchange, data, None)

    def keepable(self, exchange: Exchange, keep_alive: bool) -> bool:
        """After ``exchange``: may the connection wait in the pool for another request?"""
        return keep_alive and self.reusable and not self.closed and self.idle and exchange.ended is not None

    def abort_first(self, exchange: Exchange, keeping: bool) -> bool:
        """Whether the caller, done with an unfinished ``exchange``, should send
        ABORT_REQUEST and wait (a little) for its END_REQUEST: only on a connection it
        means to keep (``keeping``) and that can still be reused; otherwise it closes."""
        return keeping and not exchange.done and self.reusable

    def ask_values(self, names: Iterable[str]) -> bytes:
        """The bytes of FCGI_GET_VALUES; the answer arrives in :meth:`values_answer`."""
        return self.core.get_values(names)

    def values_answer(self) -> dict[str, str] | None:
        """The FCGI_GET_VALUES_RESULT once it arrived, None before; raises
        :class:`ConnectionClosed` when the server closed the connection without one."""
        if self.values is None and self.closed:
            raise ConnectionClosed(self.address, "the server closed the connection without answering "
                                                 "FCGI_GET_VALUES")
        return self.values

    def abort(self, exchange: Exchange) -> bytes:
        """Bytes of ABORT_REQUEST for a request the caller walked away from."""
        exchange.abandoned = True
        exchange.body.clear()
        exchange.buffered = 0
        if not self.core.is_active(exchange.request_id):
            return b""
        try:
            return self.core.abort_request(exchange.request_id)
        except LocalProtocolError:
            return b""

    def forget(self, exchange: Exchange) -> None:
        """The caller is done with the exchange; output still arriving for it is dropped."""
        if self.exchanges.get(exchange.request_id) is exchange:
            if exchange.ended is None:
                exchange.abandoned = True
            else:
                del self.exchanges[exchange.request_id]

    def feed(self, data: bytes) -> list[Exchange]:
        """Take bytes from the server; returns the exchanges they touched."""
        try:
            events = self.core.receive_data(data)
        except RemoteProtocolError as exc:
            self.fail_all(ProtocolFailure(self.address, f"broke the FastCGI protocol: {exc}"))
            return list(self.exchanges.values())
        touched: list[Exchange] = []
        for event in events:
            if isinstance(event, Stdout | Stderr | RequestEnded):
                exchange = self.exchanges.get(event.request_id)
                if exchange is None:
                    continue
                if isinstance(event, Stdout):
                    exchange.on_stdout(event.data)
                elif isinstance(event, Stderr):
                    exchange.stderr.append(event.data)
                else:
                    exchange.on_end(event)
                    if not exchange.body_sent:
                        self.reusable = False  # an early answer: the body was not finished
                    if exchange.abandoned:
                        del self.exchanges[event.request_id]
                if exchange not in touched:
                    touched.append(exchange)
            elif isinstance(event, ValuesResult):
                self.values = event.values
        return touched

    def eof(self) -> None:
        """The server closed the connection."""
        self.closed = True
        self.reusable = False
        self.fail_all(ConnectionClosed(self.address, "the server closed the connection before END_REQUEST"))

    def fail_all(self, error: FastCGIError) -> None:
        self.reusable = False
        self.failed = True
        for exchange in self.exchanges.values():
            if exchange.ended is None:
                exchange.fail(error)


def _small(stream: Any) -> bool:
    """A body (or data stream) that goes out in the first write: none, or small bytes."""
    return stream is None or (isinstance(stream, bytes | bytearray | memoryview) and len(stream) <= SMALL_BODY)


# -------------------------------------------------------------------------- uploads


class Upload:
    """The writes that carry one request, in order: :attr:`first` (BEGIN_REQUEST and the
    params; the whole body too when it is small bytes), then one STDIN write per body
    piece (:meth:`push`), then the empty STDIN that ends it (:meth:`end`); for a FILTER
    request then the same for its data stream (:meth:`push_data`, :meth:`end_data`),
    which spec 6.4 sends after the body.

    Once the server has answered (or the request is no longer active) the rest is not
    sent, and the connection is not reused: the server may still wait for the body.
    """

    def __init__(self, channel: Channel, exchange: Exchange, first: bytes, body: Any, data: Any = None) -> None:
        self.channel = channel
        self.exchange = exchange
        self.first = first
        #: The body still to send after :attr:`first`; None when it went out with it.
        self.body = body
        #: The FILTER role's data stream still to send after the body; None when there
        #: is none, or it went out with :attr:`first`.
        self.data = data

    def push(self, chunk: bytes) -> bytes | None:
        """The write of one body piece; None: stop sending."""
        if self._cut_short():
            return None
        if not chunk:
            return b""  # an empty STDIN record would end the stream
        return self.channel.core.send_stdin(self.exchange.request_id, bytes(chunk))

    def end(self) -> bytes | None:
        """The write that ends the body; None: nothing more to send."""
        if self.body is None or self._cut_short():
            return None
        self.exchange.body_sent = self.data is None
        return self.channel.core.end_stdin(self.exchange.request_id)

    def push_data(self, chunk: bytes) -> bytes | None:
        """The write of one piece of the data stream; None: stop sending."""
        if self._cut_short():
            return None
        if not chunk:
            return b""
        return self.channel.core.send_data(self.exchange.request_id, bytes(chunk))

    def end_data(self) -> bytes | None:
        """The write that ends the data stream; None: nothing more to send."""
        if self.data is None or self._cut_short():
            return None
        self.exchange.body_sent = True
        return self.channel.core.end_data(self.exchange.request_id)

    def writes(self) -> Iterator[bytes]:
        """Every write in order, for a body (and data) of bytes, a binary file or an
        iterable of bytes."""
        yield self.first
        if self.body is not None:
            for chunk in iter_body(self.body):
                if (data := self.push(chunk)) is None:
                    return
                yield data
            if (data := self.end()) is None:
                return
            yield data
        if self.data is not None:
            for chunk in iter_body(self.data):
                if (data := self.push_data(chunk)) is None:
                    return
                yield data
            if (data := self.end_data()) is not None:
                yield data

    def _cut_short(self) -> bool:
        exchange = self.exchange
        if exchange.done or not self.channel.core.is_active(exchange.request_id):
            self.channel.reusable = False
            return True
        return False


# -------------------------------------------------------------------------- clients


class Pooled(Protocol):
    """What the pool needs of a connection: its channel and since when it is idle."""

    channel: Channel
    idle_since: float


C = TypeVar("C", bound=Pooled)


class ClientBase(Generic[C]):
    """What both clients are, but for their I/O: the options, the request arguments
    turned into a :class:`RequestSpec`, and the pool of idle connections of type ``C``.

    ``timeout`` is one number for connecting and for each read, or a :class:`Timeout`
    (connect, read, total). With ``keep_alive`` requests ask for FCGI_KEEP_CONN and
    finished connections wait in a pool (at most ``pool_size``, each for
    ``idle_timeout`` seconds). ``root`` and ``script_filename`` are the defaults of every
    request's, and ``params`` are added to every request's CGI variables.
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
        self._pool: deque[C] = deque()
        self._lock = threading.Lock()  # the blocking client may be shared by threads

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool."""
        return len(self._pool)

    def _spec(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: Any = b"",
        data: Any = None,
        script_filename: str | None = None,
        root: str | None = None,
        role: Role | None = None,
        timeout: float | Timeout | None = None,
    ) -> RequestSpec:
        """The request that ``request(method, path, **options)`` sends (see :class:`RequestOptions`)."""
        role = role if role is not None else Role.FILTER if data is not None else Role.RESPONDER
        if data is not None and role is not Role.FILTER:
            raise ValueError(f"data= is the FILTER role's data stream; a {role.name} request has none")
        if role is Role.FILTER and data is None:
            data = b""  # the stream is still sent, empty: the server waits for its end
        length = body_length(body) if not (isinstance(body, bytes) and not body) else None
        extra = {**(data_params(data) if role is Role.FILTER else {}), **self.params, **(params or {})}
        all_params = build_params(method, path, headers=headers, content_length=length,
                                  script_filename=script_filename or self.script_filename,
                                  document_root=root or self.root, extra=extra)
        return RequestSpec(all_params, role, body, self._timeout(timeout), data)

    def _timeout(self, timeout: float | Timeout | None) -> Timeout:
        return self.timeout if timeout is None else Timeout.of(timeout)

    def _take_idle(self, alive: Callable[[C], bool]) -> tuple[C | None, list[C]]:
        """The newest pooled connection still fit for a request (None: open one), and the
        stale ones passed over (expired, or ``alive`` says the server closed them) for the
        caller to close. A closed one is found here, before any byte of a request was
        sent on it."""
        now = time.monotonic()
        stale: list[C] = []
        while True:
            with self._lock:
                conn = self._pool.pop() if self._pool else None
            if conn is None or (now - conn.idle_since < self.idle_timeout and conn.channel.reusable and alive(conn)):
                return conn, stale
            stale.append(conn)

    def _keep(self, conn: C, exchange: Exchange) -> bool:
        """The caller is done with ``exchange``: True when ``conn`` went back to the pool,
        False when the caller must close it (not reusable, or the pool is full)."""
        channel = conn.channel
        channel.forget(exchange)
        if not channel.keepable(exchange, self.keep_alive):
            return False
        conn.idle_since = time.monotonic()
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(conn)
                return True
        return False

    def _take_all_idle(self) -> list[C]:
        """Every pooled connection, the pool left empty (to close them)."""
        with self._lock:
            pool, self._pool = self._pool, deque()
        return list(pool)
