"""The connection layer: one asyncio protocol per web-server connection.

It feeds the protocol core, creates a :class:`RequestStream` per request id, enforces
the limits, applies backpressure both ways, and always ends a request with END_REQUEST:
after success, app error, abort, or a lost connection (then there is nobody to tell).
It does not know whether a WSGI or an ASGI app is behind the :class:`AppAdapter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from mypy_extensions import mypyc_attr

from ..cgi import error_response, format_head
from ..protocol import (
    DEFAULT_MAX_PARAMS_SIZE,
    ApplicationConnection,
    BadRecord,
    RemoteProtocolError,
    RequestAborted,
    RequestBody,
    RequestBodyEnd,
    RequestData,
    RequestDataEnd,
    RequestRejected,
    RequestStarted,
    Role,
)

log = logging.getLogger("fcgibridge.server")

#: How long a connection without KEEP_CONN keeps reading a request body nobody wants
#: before it closes anyway (see :meth:`FastCGIProtocol._half_close`).
DRAIN_TIMEOUT = 10.0

#: The answer to a request past --limit-concurrency: a whole 503 with Retry-After, made
#: once. A 503 the web server passes on, rather than END_REQUEST's FCGI_OVERLOADED with no
#: output, which nginx turns into a bare 502 that no HTTP client can tell from a crash.
OVERLOADED_RESPONSE = format_head(503, ((b"Content-Type", b"text/plain; charset=utf-8"), (b"Retry-After", b"1"))
                                  ) + b"Service Unavailable: too many requests in flight\n"

#: Seconds between two rounds of :class:`ConnectionSweeper` (the timeouts' resolution).
SWEEP_INTERVAL = 1.0

# What a connection is doing, as ConnectionSweeper sees it (FastCGIProtocol._phase).
_HEAD = 0  # waiting for a whole request head: a new connection, or PARAMS still arriving
_IDLE = 1  # kept alive, nothing in flight
_BUSY = 2  # requests in flight


@mypyc_attr(native_class=False)  # compiled, a class can only derive from a few built-in exceptions
class ClientDisconnected(OSError):
    """The web server aborted the request or dropped the connection."""


class RequestHandler(Protocol):
    """What an app adapter gives back for each request: where its body goes."""

    def receive_body(self, data: bytes) -> None: ...

    def end_body(self) -> None: ...

    def receive_data(self, data: bytes) -> None:
        """A piece of the FILTER role's data stream (FCGI_DATA), which follows the body."""

    def end_data(self) -> None:
        """The FILTER role's data stream is complete."""

    def disconnect(self) -> None:
        """The request is gone (abort, lost connection): stop, output is dropped."""

    def cancel(self) -> bool:
        """Stop the app call (past ``--timeout``); False when it cannot be stopped (a WSGI
        thread), so the worker has to be replaced to get rid of it."""

    def current_stack(self) -> str | None:
        """The Python stack of the app call right now (the slow log); None when unknown."""


class AppAdapter(Protocol):
    """ASGI, WSGI or anything else that serves requests."""

    @property
    def capacity(self) -> int:
        """How many requests it serves at once (the status page's measure of busy)."""

    def start(self, stream: RequestStream) -> RequestHandler: ...

    async def drain(self, timeout: float) -> None:
        """After the last response of a stopping worker: let the calls still running
        finish within ``timeout`` seconds, then release the threads or tasks."""


class RequestObserver(Protocol):
    """Status page, ping and access log (:mod:`fcgibridge.process.status`); None when all are off."""

    stream_class: type[RequestStream]

    def connection_made(self) -> None: ...

    def request_started(self, stream: RequestStream) -> bool:
        """Book a request; True when the observer answered it itself (status, ping)."""

    def request_done(self, stream: RequestStream) -> None: ...

    def request_refused(self, stream: RequestStream) -> None:
        """The request was answered 503 past --limit-concurrency (before it ends)."""


@dataclass
class WorkerState:
    """What every connection of one worker process shares."""

    adapter: AppAdapter
    max_connections: int = 1024
    max_reqs: int = 1024
    max_params_size: int = DEFAULT_MAX_PARAMS_SIZE
    max_body_size: int = 0
    allowed: Callable[[Any], bool] | None = None
    #: The roles served; the rest get FCGI_UNKNOWN_ROLE. FILTER needs an adapter whose
    #: handlers take the data stream (``receive_data``/``end_data``; WSGI and ASGI do).
    roles: tuple[Role, ...] = (Role.RESPONDER, Role.AUTHORIZER, Role.FILTER)
    connections: set[FastCGIProtocol] = field(default_factory=set)
    active_requests: int = 0
    requests_served: int = 0
    stopping: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    observer: RequestObserver | None = None  # status, ping, access log
    #: The worker's per-request hooks (--timeout, --max-requests): called as a request
    #: starts (before the app) and once it is over.
    on_start: Callable[[RequestStream], None] | None = None
    on_done: Callable[[RequestStream], None] | None = None
    #: Set whenever the last connection closed (a stopping worker waits for it).
    no_connections: asyncio.Event = field(default_factory=asyncio.Event)
    #: Connection deadlines in seconds, 0 for none (--header-timeout, --idle-timeout,
    #: --body-timeout, --send-timeout); :class:`ConnectionSweeper` enforces them.
    header_timeout: float = 0.0
    idle_timeout: float = 0.0
    body_timeout: float = 0.0
    send_timeout: float = 0.0
    #: --limit-concurrency: past this many requests in flight new ones get
    #: :data:`OVERLOADED_RESPONSE` at once (0: no limit); ``refused`` counts them.
    limit_concurrency: int = 0
    refused: int = 0

    def request_done(self, stream: RequestStream | None = None) -> None:
        self.active_requests -= 1
        self.requests_served += 1
        if self.active_requests == 0:
            self.idle.set()
        if self.on_done is not None and stream is not None:
            self.on_done(stream)


@mypyc_attr(allow_interpreted_subclasses=True)  # the status page's ObservedStream
class RequestStream:
    """One request on one connection, as the app adapters see it (event-loop side)."""

    __slots__ = ("_conn", "_handler", "body_ended", "body_received", "closed", "keep_conn", "params",
                 "request_id", "role", "started", "watch_mark", "watch_since")

    def __init__(self, conn: FastCGIProtocol, request_id: int, role: Role, keep_conn: bool,
                 params: dict[str, str]) -> None:
        self._conn = conn
        self.request_id = request_id
        self.role = role
        self.keep_conn = keep_conn
        self.params = params
        self.closed = False  # ended by us, aborted, or the connection is gone
        self.started = False  # response bytes were sent
        self.body_received = 0
        #: The empty STDIN arrived (an authorizer gets no body at all: spec 6.3; a
        #: filter's input ends with its empty DATA).
        self.body_ended = role is Role.AUTHORIZER
        # --body-timeout (ConnectionSweeper): body_received when last seen, and since when.
        self.watch_mark = -1
        self.watch_since = 0.0
        self._handler: RequestHandler | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop serving the request."""
        return self._conn.running_loop()

    @property
    def handler(self) -> RequestHandler | None:
        """What the app adapter gave back for this request; None once it was let go."""
        return self._handler

    # -- output (call from the event loop thread)

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ClientDisconnected("the request was aborted or its connection closed")
        if data:
            self.started = True
            self._conn.send_parts(self._conn.core.send_stdout_parts(self.request_id, data))

    def write_stderr(self, data: bytes) -> None:
        if not self.closed and data:
            self._conn.send(self._conn.core.send_stderr(self.request_id, data))

    def end(self, data: bytes = b"", app_status: int = 0, head: bytes = b"") -> None:
        """Send the last bytes (after ``head``, a response head not joined to a large
        ``data``) and END_REQUEST, in one write."""
        if self.closed:
            return
        self.started = self.started or bool(data) or bool(head)
        self.closed = True
        parts = self._conn.core.end_request_parts(self.request_id, app_status, stdout=data, head=head)
        self._conn.finish(self, parts)

    def respond_error(self, status: int, message: str) -> None:
        """A whole plain-text error response, unless the response had started already."""
        if self.started:
            self.end(app_status=1)
        else:
            self.end(error_response(status, message), app_status=1)

    @property
    def writable(self) -> bool:
        return not self._conn.flow.write_paused

    async def drain(self) -> None:
        """Wait until the web server has taken enough of what was written, or the
        request is over (aborted, failed, connection lost): then return at once."""
        flow = self._conn.flow
        while flow.write_paused and not self.closed:
            await flow.wait_writable()

    def pause_reading(self) -> None:
        self._conn.pause_for(self, True)

    def resume_reading(self) -> None:
        self._conn.pause_for(self, False)

    # -- input (called by the connection)

    def _body(self, data: bytes, limit: int) -> None:
        if not self._over(data, limit) and self._handler is not None:
            self._handler.receive_body(data)

    def _data(self, data: bytes, limit: int) -> None:
        """A filter's FCGI_DATA, counted with its body against ``--max-body-size``."""
        if not self._over(data, limit) and self._handler is not None:
            self._handler.receive_data(data)

    def _over(self, data: bytes, limit: int) -> bool:
        """Count ``data`` in; past ``limit`` the app is stopped and 413 answered."""
        self.body_received += len(data)
        if limit and self.body_received > limit:
            self.fail(413, "Request body too large")
            return True
        return False

    def fail(self, status: int, message: str) -> None:
        """Stop the app (if any) and answer ``status`` if nothing was sent yet."""
        self.disconnect_handler()
        self.respond_error(status, message)

    def disconnect_handler(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.disconnect()


class FlowControl:
    """Backpressure on one connection, both ways.

    Reading: a request whose app has more body queued than it takes (ASGI) pauses
    reading from the web server; reading resumes once no request on the connection
    asks for the pause. Writing: while the transport holds more than its high-water
    mark (asyncio's ``pause_writing``), writers wait in :meth:`wait_writable` until it
    drains, or until the connection wakes them because their request is over.

    Both at once: replies the protocol core writes by itself (GET_VALUES answers,
    rejected requests) have no app to wait in :meth:`wait_writable`; when one is
    written while the web server is behind, reading pauses too (``hold_input``) until
    it drains, so a peer that sends management records and never reads cannot make
    the buffer grow past one read's worth of answers.
    """

    __slots__ = ("_reading_paused", "_writers", "hold_input", "paused_by", "write_paused")

    def __init__(self) -> None:
        #: The requests that asked for reading to pause (their app is behind).
        self.paused_by: set[RequestStream] = set()
        self._reading_paused = False
        #: The web server reads slower than we write.
        self.write_paused = False
        #: Core replies were written while write_paused: read nothing until it drains.
        self.hold_input = False
        self._writers: list[asyncio.Future[None]] = []

    # ------------------------------------------------ reading: the app is behind

    def pause_reading_for(self, stream: RequestStream, pause: bool) -> None:
        """Note that ``stream`` asks for reading to pause (or no longer does); the
        transport follows at :meth:`apply_reading`."""
        if pause:
            self.paused_by.add(stream)
        else:
            self.paused_by.discard(stream)

    def apply_reading(self, transport: asyncio.Transport) -> None:
        """Pause or resume ``transport``'s reading as the requests ask (once per change)."""
        paused = bool(self.paused_by) or self.hold_input
        if paused != self._reading_paused:
            self._reading_paused = paused
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # ------------------------------------------ writing: the web server is behind

    def pause_writing(self) -> None:
        """The transport's buffer is above its high-water mark: writers should wait."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """The buffer drained below its low-water mark: release the waiting writers."""
        self.write_paused = False
        self.hold_input = False
        self.wake_writers()

    async def wait_writable(self) -> None:
        """Until the next wake-up: the buffer drained, or a request ended (the caller
        checks which and may wait again)."""
        waiter = asyncio.get_running_loop().create_future()
        self._writers.append(waiter)
        await waiter

    def wake_writers(self) -> None:
        """Release every writer waiting in :meth:`wait_writable`."""
        waiters, self._writers = self._writers, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class FastCGIProtocol:
    """One connection from a web server: bytes in, protocol events out, requests started
    and finished; closed when a request without KEEP_CONN, the protocol or a stopping
    worker says so.

    An asyncio protocol by its methods (the event loops call them by name), not by
    deriving from ``asyncio.Protocol``: compiled, a class with no Python base is a native
    one, whose attributes and calls to itself skip the dictionary lookups.
    """

    def __init__(self, state: WorkerState) -> None:
        self.state = state
        self.core = ApplicationConnection(
            max_conns=state.max_connections,
            max_reqs=state.max_reqs,
            mpxs_conns=True,
            max_params_size=state.max_params_size,
            roles=state.roles,
        )
        self.streams: dict[int, RequestStream] = {}
        self.transport: asyncio.Transport | None = None
        self.flow = FlowControl()
        # Events read but not handled yet: while reading is paused, the rest of what one
        # read returned waits here, so an app's queue grows by at most one record.
        self._backlog: deque[Any] = deque()
        self._dispatch_handle: asyncio.Handle | None = None
        # Closing (close_if_idle): a request without KEEP_CONN has ended; the timer that
        # bounds reading a body nobody wants after a half-close; our FIN is queued.
        self._close_pending = False
        self._drain_timer: asyncio.TimerHandle | None = None
        self._eof_sent = False
        #: The loop serving the connection, from connection_made on. Asked once: on
        #: Python 3.11, asyncio.get_running_loop() costs a getpid() system call each time.
        self.loop: asyncio.AbstractEventLoop | None = None
        # The timeouts (check_deadlines): what the connection is doing (_HEAD, _IDLE,
        # _BUSY) and since when (loop time); the pending output when last seen and since when.
        self.requests_seen = 0
        self.phase = _HEAD
        self._phase_mark = 0
        self.phase_since = 0.0
        self._send_mark = 0
        self._send_since = 0.0
        #: The web server shut its sending side (eof_received): nothing more will arrive.
        self._peer_eof = False

    # ------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop = asyncio.get_running_loop()
        self.phase_since = self.loop.time()
        self.transport = transport = cast(asyncio.Transport, transport)
        if not self._admit(transport):
            transport.abort()
            return
        self.state.connections.add(self)
        if self.state.observer is not None:
            self.state.observer.connection_made()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.core.receive_data(data)
        except RemoteProtocolError as exc:
            log.warning("closing connection from %s: %s", self._peer(), exc)
            self.drop()
            return
        self._backlog.extend(events)
        self._dispatch()

    def eof_received(self) -> bool | None:
        """The web server shut down its sending side. What it sent whole is still
        answered, over the half that is open (PHP-FPM does the same); a request whose
        body was still arriving will never get the rest, so it ends now. Returns
        whether the transport stays open (for the responses still to come)."""
        self._peer_eof = True
        self._after_eof()
        transport = self.transport
        return transport is not None and not transport.is_closing() and bool(self.streams)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        if not self.state.connections:
            self.state.no_connections.set()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        if self._dispatch_handle is not None:
            self._dispatch_handle.cancel()
        self._backlog.clear()
        if self.streams:
            for stream in list(self.streams.values()):
                stream.closed = True
                stream.disconnect_handler()
                self._forget(stream)
        self.flow.wake_writers()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        held = self.flow.hold_input
        self.flow.resume_writing()
        self._send_since = 0.0
        if held:
            self._update_reading()

    def _admit(self, transport: asyncio.Transport) -> bool:
        """The peer filter (FCGI_WEB_SERVER_ADDRS, --allow-from) and --max-connections."""
        state = self.state
        if state.allowed is not None and not state.allowed(transport.get_extra_info("peername")):
            log.warning("refused connection from %s: not in FCGI_WEB_SERVER_ADDRS",
                        transport.get_extra_info("peername"))
            return False
        # A stopping worker still serves a connection accepted as it closed its listeners
        # (asyncio accepts a batch at a time): it was taken off the shared listen queue, so
        # no other worker will see it.
        if len(state.connections) >= state.max_connections:
            # Make room as nginx does with its keep-alive cache: close the connection that
            # has been waiting longest with nothing in flight; refuse only when none is.
            victim = _longest_waiting(state.connections)
            if victim is None:
                log.warning("refused connection: %d connections open, all busy (--max-connections)",
                            len(state.connections))
                return False
            log.info("closing an idle connection from %s to make room for a new one (--max-connections %d)",
                     victim._peer(), state.max_connections)
            victim.close_now()
        return True

    # ------------------------------------------------------------- events → requests

    def _dispatch(self) -> None:
        self._dispatch_handle = None
        backlog = self._backlog
        paused_by = self.flow.paused_by
        while backlog and not paused_by:
            event = backlog.popleft()
            if type(event) is RequestBody:
                stream = self.streams.get(event.request_id)
                if stream is not None:
                    stream._body(event.data, self.state.max_body_size)
            elif type(event) is RequestStarted:
                self._start(event)
            elif type(event) is RequestBodyEnd:
                stream = self.streams.get(event.request_id)
                if stream is not None:
                    stream.body_ended = stream.role is not Role.FILTER  # a filter's input ends with its DATA
                    if stream._handler is not None:
                        stream._handler.end_body()
            elif type(event) is RequestData:
                stream = self.streams.get(event.request_id)
                if stream is not None:
                    stream._data(event.data, self.state.max_body_size)
            elif type(event) is RequestDataEnd:
                stream = self.streams.get(event.request_id)
                if stream is not None:
                    stream.body_ended = True
                    if stream._handler is not None:
                        stream._handler.end_data()
            elif type(event) is RequestAborted:
                self._abort(event.request_id, "aborted by the web server")
            elif type(event) is BadRecord:
                self._bad_record(event)
            elif type(event) is RequestRejected:
                log.warning("rejected request %d: %s (role %d)", event.request_id, event.protocol_status.name,
                            event.role)
        replies = self.core.data_to_send()
        if replies:
            self.send(replies)
            if self.flow.write_paused:
                self.flow.hold_input = True  # see FlowControl
        if self._peer_eof:
            self._after_eof()
        self.close_if_idle()
        self._update_reading()

    def _start(self, event: RequestStarted) -> None:
        observer = self.state.observer
        stream = (RequestStream if observer is None else observer.stream_class)(
            self, event.request_id, event.role, event.keep_conn, event.params)
        self.streams[event.request_id] = stream
        self.requests_seen += 1
        self.state.active_requests += 1
        self.state.idle.clear()
        if self.state.on_start is not None:
            self.state.on_start(stream)
        if observer is not None and observer.request_started(stream):
            return  # the status and ping pages answer past --limit-concurrency too
        if self.state.limit_concurrency and self.state.active_requests > self.state.limit_concurrency:
            self._refuse(stream)
            return
        limit = self.state.max_body_size
        if limit and _declared_input(event.params) > limit:
            stream.respond_error(413, "Request body too large")
            return
        try:
            stream._handler = self.state.adapter.start(stream)
        except Exception:
            log.exception("could not start request %s", event.params.get("REQUEST_URI", "?"))
            stream.respond_error(500, "Internal Server Error")

    def _refuse(self, stream: RequestStream) -> None:
        """Answer a request past --limit-concurrency with a 503 without starting the app:
        a worker that has fallen behind says so at once instead of queueing without bound."""
        state = self.state
        state.refused += 1
        level = logging.WARNING if state.refused == 1 else logging.DEBUG
        log.log(level, "refused request %s: %d requests in flight (--limit-concurrency %d); %d refused so far",
                stream.params.get("REQUEST_URI", stream.request_id), state.active_requests - 1,
                state.limit_concurrency, state.refused)
        if state.observer is not None:  # the status page counts them
            state.observer.request_refused(stream)
        stream.end(OVERLOADED_RESPONSE, app_status=1)

    def _abort(self, request_id: int, why: str) -> None:
        stream = self.streams.get(request_id)
        if stream is None:
            return
        log.info("request %s %s", stream.params.get("REQUEST_URI", request_id), why)
        stream.disconnect_handler()
        stream.end(app_status=1)

    def _bad_record(self, event: BadRecord) -> None:
        log.warning("bad record from %s for request %d: %s", self._peer(), event.request_id, event.reason)
        stream = self.streams.get(event.request_id)
        if stream is not None:
            stream.fail(400, "Bad Request")
        else:  # the app never started: answer so the web server is not left waiting
            self.send(self.core.end_request(event.request_id, 1, stdout=error_response(400)))

    # ------------------------------------------------------------ the end of a request

    def finish(self, stream: RequestStream, parts: list[bytes | memoryview]) -> None:
        """Called by :meth:`RequestStream.end` with the final bytes of a request."""
        # A stopping worker closes the connection after its last response. The FIN goes
        # out in the same segment as END_REQUEST (TCP_CORK), which narrows the moment in
        # which nginx has put the connection back in its keep-alive cache unaware of the
        # FIN and sends it a new request (it then retries it: docs/operations.md).
        last = self.state.stopping and len(self.streams) == 1
        if last:
            self._cork(True)
        self.send_parts(parts)
        if self.flow.write_paused:
            self.flow.wake_writers()  # a writer waiting in drain() for this request must see it is over
        if not stream.keep_conn:
            self._close_pending = True
        self._forget(stream)
        self.close_if_idle()
        if last and not self._eof_sent:
            # With the FIN queued, stay corked: closing the socket sends both at once.
            # Uncorking now would let END_REQUEST out alone when the loop (uvloop) sends
            # the FIN only on a later turn, and nginx would reuse the connection meanwhile.
            self._cork(False)

    def _forget(self, stream: RequestStream) -> None:
        if self.streams.pop(stream.request_id, None) is not None:
            self.state.request_done(stream)
            if self.state.observer is not None:
                self.state.observer.request_done(stream)
        if stream in self.flow.paused_by:
            self.pause_for(stream, False)

    # ---------------------------------------------------------------- deadlines

    def check_deadlines(self, now: float) -> None:
        """Close or fail what has waited too long on the web server (ConnectionSweeper
        calls this about once a second): a request head not sent (--header-timeout),
        a kept-alive connection unused (--idle-timeout), a body that stopped arriving
        (--body-timeout), output it does not take (--send-timeout)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        state = self.state
        if self.flow.write_paused and state.send_timeout and self._send_stalled(now, transport):
            log.warning("closing connection from %s: the web server took none of the response for %g s "
                        "(--send-timeout)", self._peer(), state.send_timeout)
            self.drop()
            return
        if self.streams:
            self._set_phase(_BUSY, now)
            if state.body_timeout:
                self._check_bodies(now, state.body_timeout)
            return
        phase = _IDLE if self.requests_seen and not self.core.active_requests else _HEAD
        self._set_phase(phase, now)
        limit = state.idle_timeout if phase == _IDLE else state.header_timeout
        if limit and now - self.phase_since >= limit:
            what = "idle" if phase == _IDLE else "without a whole request head"
            option = "--idle-timeout" if phase == _IDLE else "--header-timeout"
            log.info("closing connection from %s: %s for %g s (%s)", self._peer(), what, limit, option)
            self.close_now()

    def _set_phase(self, phase: int, now: float) -> None:
        if phase != self.phase or self.requests_seen != self._phase_mark:
            self.phase, self._phase_mark, self.phase_since = phase, self.requests_seen, now

    def _send_stalled(self, now: float, transport: asyncio.Transport) -> bool:
        """No byte of the pending output left for ``send_timeout`` seconds."""
        size = transport.get_write_buffer_size()
        if not self._send_since or size < self._send_mark:
            self._send_since, self._send_mark = now, size
            return False
        return now - self._send_since >= self.state.send_timeout

    def _check_bodies(self, now: float, limit: float) -> None:
        # A body we stopped reading ourselves (the app is behind) is not the web server's stall.
        ours = bool(self.flow.paused_by) or self.flow.hold_input
        for stream in list(self.streams.values()):
            if stream.body_ended or stream.closed:
                continue
            if ours or stream.body_received != stream.watch_mark:
                stream.watch_mark, stream.watch_since = stream.body_received, now
            elif now - stream.watch_since >= limit:
                log.warning("request %s failed: its body stopped arriving for %g s (--body-timeout)",
                            stream.params.get("REQUEST_URI", stream.request_id), limit)
                stream.fail(408, "Request Timeout")

    def close_now(self) -> None:
        """Close a connection with nothing in flight (a timeout, room for a newcomer);
        it no longer counts against --max-connections from this moment."""
        self.state.connections.discard(self)
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ closing

    def close_if_idle(self) -> None:
        """Close the connection once nothing on it needs it any more: after a request
        without KEEP_CONN, when the protocol says so, or when the worker is stopping
        (a graceful stop calls this too: now if no request is in flight, else after the
        last one). Called after every batch of events and every finished request."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if (self.core.should_close or (self._peer_eof and not self.streams)
                or (self.state.stopping and not self.streams and not self.core.active_requests)):
            self._close(transport)
        elif self._close_pending and not self.streams and self._drain_timer is None:
            self._half_close(transport)

    def _after_eof(self) -> None:
        """After the web server's EOF, once what it sent before is handled: end the
        requests whose body will never be complete."""
        if self._backlog:
            return  # their body may be in there (reading was paused): after the dispatch
        for stream in list(self.streams.values()):
            if not stream.body_ended:
                self._abort(stream.request_id, "lost its body: the web server shut its side of the connection")

    def _close(self, transport: asyncio.Transport) -> None:
        if self.state.stopping and transport.can_write_eof() and not self._eof_sent:
            transport.write_eof()  # with the last response (see finish)
            self._eof_sent = True
        transport.close()

    def _half_close(self, transport: asyncio.Transport) -> None:
        # The response is out but the web server is still sending the body. Half-close:
        # our FIN tells a web server without KEEP_CONN (nginx) that the response is
        # complete — it waits for it — while we read the rest of the body to its end (the
        # core discards it), so the web server never writes into a closed socket and
        # turns the answer into a 502. Its EOF then closes us, or the timer does.
        if transport.can_write_eof():
            transport.write_eof()
            self._eof_sent = True
        self._drain_timer = self.running_loop().call_later(DRAIN_TIMEOUT, self.drop)

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop serving the connection (the running one, for a connection no loop made)."""
        return self.loop if self.loop is not None else asyncio.get_running_loop()

    def drop(self) -> None:
        """Drop the connection at once (a broken protocol, a drain that took too long,
        a fast stop)."""
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------- reading pauses

    def pause_for(self, stream: RequestStream, pause: bool) -> None:
        """Pause reading while any request on this connection has more body queued
        than its app takes (ASGI backpressure)."""
        if self.transport is None:
            return
        self.flow.pause_reading_for(stream, pause)
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._backlog and not self.flow.paused_by:
            # Handle what was read before the pause first; not from here (an app's
            # receive() may be the caller), and reading stays paused until it is done.
            if self._dispatch_handle is None:
                self._dispatch_handle = self.running_loop().call_soon(self._dispatch)
            return
        self.flow.apply_reading(transport)

    # ------------------------------------------------------------- transport glue

    def send_parts(self, parts: list[bytes | memoryview]) -> None:
        """:meth:`send` for what the core gave as pieces: one ``writelines``, which
        uvloop passes to one ``writev`` without copying them."""
        if len(parts) == 1:
            self.send(parts[0])
            return
        transport = self.transport
        if parts and transport is not None and not transport.is_closing() and not self._eof_sent:
            transport.writelines(parts)

    def send(self, data: bytes | memoryview) -> None:
        """Write ``data``, unless the connection is closing or our FIN is out (nobody
        would read it)."""
        transport = self.transport
        if data and transport is not None and not transport.is_closing() and not self._eof_sent:
            transport.write(data)

    def _cork(self, on: bool) -> None:
        """TCP_CORK: hold what is written (and a FIN) until uncorked, then send it as one."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer) if peer else "unix socket"


def _declared_input(params: dict[str, str]) -> int:
    """The request's input as its params declare it: CONTENT_LENGTH, plus a filter's
    FCGI_DATA_LENGTH (each only when it is a plain decimal)."""
    total = 0
    for name in ("CONTENT_LENGTH", "FCGI_DATA_LENGTH"):
        value = params.get(name, "")
        if value.isascii() and value.isdigit():
            total += int(value)
    return total


def _longest_waiting(connections: set[FastCGIProtocol]) -> FastCGIProtocol | None:
    """The connection to close for a newcomer: the one idle longest, else the one
    waiting longest for a request head; None when every one has requests in flight."""
    best: FastCGIProtocol | None = None
    best_key = (2, 0.0)
    for conn in connections:
        if conn.streams:
            continue
        key = (1 if conn.core.active_requests else 0, conn.phase_since)
        if best is None or key < best_key:
            best, best_key = conn, key
    return best


class ConnectionSweeper:
    """The deadlines of one worker's connections (:meth:`FastCGIProtocol.check_deadlines`),
    checked every :data:`SWEEP_INTERVAL` seconds by one timer: nothing is timed per
    record or per request, so the timeouts cost the serving path nothing."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None

    @property
    def needed(self) -> bool:
        state = self.state
        return bool(state.header_timeout or state.idle_timeout or state.body_timeout or state.send_timeout)

    def start(self) -> None:
        if self.needed and self._timer is None:
            self._timer = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.state.connections):
            try:
                conn.check_deadlines(now)
            except Exception:  # a bug here must not stop the timeouts of every other connection
                log.exception("checking the timeouts of a connection")
        self._timer = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
