"""The connection layer in memory: FastCGIProtocol on a real event loop, a fake transport
that records what the protocol does to it, and the package's sans-IO client core as the
web server (it builds the records and parses the replies).

No sockets and no sleeps: a test feeds bytes, steps the loop with ``asyncio.sleep(0)``
where the protocol defers work to the loop, and looks at what was written and called.
The socket tests (test_server_wsgi.py, test_server_asgi.py) cover the same paths over
real connections and with real apps.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from fcgibridge.cgi import error_response, split_response
from fcgibridge.client import build_params
from fcgibridge.protocol import (
    FCGI_MAX_REQS,
    ClientConnection,
    Event,
    ProtocolStatus,
    RecordType,
    RequestEnded,
    Role,
    Stdout,
    ValuesResult,
    pack_record,
    pack_stream,
)
from fcgibridge.protocol.records import pack_begin_request
from fcgibridge.server import connection
from fcgibridge.server.connection import ClientDisconnected, FastCGIProtocol, RequestStream, WorkerState

RESPONSE = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (fixtures still reach it)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


async def step(turns: int = 3) -> None:
    """Let the loop run what the protocol scheduled (call_soon, call_later(0), futures)."""
    for _ in range(turns):
        await asyncio.sleep(0)


# ------------------------------------------------------------------ the fake transport


class FakeTransport(asyncio.Transport):
    """The asyncio transport methods FastCGIProtocol uses, recording every call in order.

    Like asyncio's socket transports, ``close`` and ``abort`` call the protocol's
    ``connection_lost`` on a later loop turn, and writing after ``write_eof`` or
    ``close`` is an error.
    """

    def __init__(self, peer: Any = ("127.0.0.1", 40000)) -> None:
        super().__init__()
        self.protocol: FastCGIProtocol | None = None
        self.peer = peer
        self.written = bytearray()
        self.calls: list[str] = []  # "write", "write_eof", "close", "abort", "pause_reading", ...
        self.closing = False
        self.eof = False
        self.reading = True
        self.buffered = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof or self.closing:
            raise RuntimeError("write after write_eof() or close()")
        self.calls.append("write")
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append("close")
        self._lost()

    def abort(self) -> None:
        self.calls.append("abort")
        self._lost()

    def _lost(self) -> None:
        if not self.closing:
            self.closing = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.calls.append("write_eof")
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return self.buffered  # what a test says the web server has not taken yet

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default  # no "socket": no TCP_CORK here


# ----------------------------------------------------------------------- the app stub


class Handler:
    """A RequestHandler that keeps what it was given."""

    def __init__(self, app: App, stream: RequestStream) -> None:
        self.app = app
        self.stream = stream
        self.body = bytearray()
        self.chunks = 0
        self.body_ended = False
        self.disconnected = False

    def receive_body(self, data: bytes) -> None:
        self.body += data
        self.chunks += 1
        if self.app.on_body is not None:
            self.app.on_body(self, data)

    def end_body(self) -> None:
        self.body_ended = True
        if self.app.respond_on_end:
            self.stream.end(RESPONSE)

    def disconnect(self) -> None:
        self.disconnected = True

    def cancel(self) -> bool:
        return False

    def current_stack(self) -> str | None:
        return None


class App:
    """An AppAdapter stub: answers ``RESPONSE`` once the body is complete (unless told
    not to), keeps every handler by request id."""

    capacity = 10

    def __init__(self, *, respond_on_end: bool = True, on_start: Callable[[RequestStream], None] | None = None,
                 on_body: Callable[[Handler, bytes], None] | None = None) -> None:
        self.respond_on_end = respond_on_end
        self.on_start = on_start
        self.on_body = on_body
        self.handlers: dict[int, Handler] = {}
        self.started = 0

    def start(self, stream: RequestStream) -> Handler:
        self.started += 1
        handler = self.handlers[stream.request_id] = Handler(self, stream)
        if self.on_start is not None:
            self.on_start(stream)
        return handler

    async def drain(self, timeout: float) -> None:
        return None


# ------------------------------------------------------------------ the web server side


class Wire:
    """One connection: the protocol under test, its fake transport and the web server's
    client core, which builds the records sent and parses what was written back."""

    def __init__(self, state: WorkerState, peer: Any = ("127.0.0.1", 40000)) -> None:
        self.state = state
        self.conn = FastCGIProtocol(state)
        self.transport = FakeTransport(peer)
        self.transport.protocol = self.conn
        self.conn.connection_made(self.transport)
        self.web = ClientConnection()
        self._read = 0
        self.stdout: dict[int, bytearray] = {}
        self.ended: dict[int, RequestEnded] = {}

    @property
    def app(self) -> App:
        app = self.state.adapter
        assert isinstance(app, App)
        return app

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def begin(self, path: str = "/", *, keep_conn: bool = True, body: bytes | None = b"",
              params: dict[str, str] | None = None, send: bool = True) -> tuple[int, bytes]:
        """BEGIN_REQUEST and PARAMS, and the whole body unless ``body`` is None (then it
        comes later, by hand). Sent at once unless ``send`` is False; returns the id and
        the bytes."""
        all_params = build_params("POST" if body else "GET", path,
                                  content_length=len(body) if body else None, extra=params)
        request_id, data = self.web.begin_request(all_params, keep_conn=keep_conn)
        self.stdout[request_id] = bytearray()
        self.ended.pop(request_id, None)
        if body is not None:
            data += self.web.end_stdin(request_id, body)
        if send:
            self.send(data)
        return request_id, data

    def read(self) -> list[Event]:
        """Parse what the protocol wrote since the last read."""
        data = bytes(self.transport.written[self._read :])
        self._read = len(self.transport.written)
        events = self.web.receive_data(data)
        for event in events:
            if isinstance(event, Stdout):
                self.stdout[event.request_id] += event.data
            elif isinstance(event, RequestEnded):
                self.ended[event.request_id] = event
        return events

    def response(self, request_id: int) -> tuple[int, bytes]:
        """``(status, body)`` of an ended request."""
        self.read()
        assert request_id in self.ended, f"no END_REQUEST for request {request_id}"
        head, body = split_response(bytes(self.stdout[request_id]))
        return head.status, body


def worker_state(app: App, **options: Any) -> WorkerState:
    """A WorkerState as the worker builds it, with small limits where a test asks."""
    values: dict[str, Any] = {"max_connections": 8, "max_reqs": 8, "max_params_size": 64 * 1024,
                              "max_body_size": 0, **options}
    state = WorkerState(app, **values)
    state.idle.set()
    return state


def wire(app: App | None = None, **options: Any) -> Wire:
    return Wire(worker_state(app or App(), **options))


def two_in_flight() -> tuple[Wire, Handler, Handler]:
    """A connection with two requests whose bodies are complete and that the app has
    not answered yet."""
    w = wire(App(respond_on_end=False))
    first, _ = w.begin()
    second, _ = w.begin()
    return w, w.app.handlers[first], w.app.handlers[second]


# ----------------------------------------------------------------------- KEEP_CONN


@in_loop
async def test_keep_conn_serves_request_after_request_on_one_connection() -> None:
    w = wire()
    for _ in range(3):
        request_id, _ = w.begin("/hello")
        assert w.response(request_id) == (200, b"hello")
        assert w.ended[request_id].app_status == 0
        assert w.ended[request_id].protocol_status == ProtocolStatus.REQUEST_COMPLETE
    assert not w.transport.closing
    assert "write_eof" not in w.transport.calls
    assert (w.state.requests_served, w.state.active_requests, w.state.idle.is_set()) == (3, 0, True)
    assert w.state.connections == {w.conn}


@in_loop
async def test_without_keep_conn_the_connection_closes_after_the_response() -> None:
    w = wire()
    request_id, _ = w.begin("/hello", keep_conn=False)
    assert w.response(request_id) == (200, b"hello")
    assert w.transport.calls == ["write", "close"]  # the whole response in one write, then close
    await step()
    assert not w.state.connections
    assert w.state.no_connections.is_set()


@in_loop
async def test_one_write_per_response() -> None:
    w = wire()
    w.begin("/hello")
    assert w.transport.calls == ["write"]


# ------------------------------------------------------------------ multiplexing


@in_loop
async def test_two_requests_interleaved_on_one_connection() -> None:
    w = wire(App(respond_on_end=False))
    first, begin_first = w.begin("/one", body=None, send=False)
    second, begin_second = w.begin("/two", body=None, send=False)
    assert (first, second) == (1, 2)
    w.send(begin_first + begin_second + w.web.send_stdin(second, b"B1") + w.web.send_stdin(first, b"A1")
           + w.web.end_stdin(second, b"B2") + w.web.send_stdin(first, b"A2"))
    handlers = w.app.handlers
    assert (bytes(handlers[first].body), handlers[first].body_ended) == (b"A1A2", False)
    assert (bytes(handlers[second].body), handlers[second].body_ended) == (b"B1B2", True)
    # The second answers first, in two writes; the first in between.
    handlers[second].stream.write(b"Status: 200 OK\r\n\r\ntw")
    handlers[first].stream.end(b"Status: 201 Created\r\n\r\none")
    handlers[second].stream.end(b"o")
    assert w.response(second) == (200, b"two")
    assert w.response(first) == (201, b"one")
    # The first's body ends after its response (the client core forgot the id): drained.
    w.send(pack_record(RecordType.STDIN, first))
    assert handlers[first].body_ended is False
    assert not w.transport.closing
    assert w.state.requests_served == 2


@in_loop
async def test_too_many_requests_on_a_connection_are_refused_by_the_core() -> None:
    w = wire(App(respond_on_end=False), max_reqs=1)
    first, _ = w.begin(body=None)
    second, _ = w.begin()
    w.read()
    assert w.ended[second].protocol_status == ProtocolStatus.OVERLOADED
    assert first not in w.ended
    assert w.app.started == 1
    w.send(w.web.get_values([FCGI_MAX_REQS]))  # a management record, answered by the core
    assert [e.values for e in w.read() if isinstance(e, ValuesResult)] == [{FCGI_MAX_REQS: "1"}]


# --------------------------------------------------------------------------- abort


@in_loop
async def test_abort_request_disconnects_the_handler_and_ends_the_request() -> None:
    w = wire(App(respond_on_end=False))
    request_id, _ = w.begin("/slow", body=None)
    handler = w.app.handlers[request_id]
    handler.stream.write(b"Status: 200 OK\r\n\r\npart")
    w.send(w.web.abort_request(request_id))
    assert handler.disconnected
    w.read()
    assert w.ended[request_id].app_status == 1
    assert bytes(w.stdout[request_id]) == b"Status: 200 OK\r\n\r\npart"
    with pytest.raises(ClientDisconnected):
        handler.stream.write(b"more")
    handler.stream.end(b"late")  # ending again is a no-op
    assert w.state.active_requests == 0
    # an abort for a request that is over is ignored (Rule 1: the id is inactive)
    written = len(w.transport.written)
    w.send(pack_record(RecordType.ABORT_REQUEST, request_id))
    assert len(w.transport.written) == written
    assert not w.transport.closing


@in_loop
async def test_a_lost_connection_disconnects_every_request() -> None:
    w, first, second = two_in_flight()
    w.transport.abort()
    await step()
    assert first.disconnected and second.disconnected
    assert first.stream.closed and second.stream.closed
    assert (w.state.active_requests, w.state.requests_served, w.state.connections) == (0, 2, set())


# -------------------------------------------------------------------- flow control


def pausing_app(pause_on: set[int]) -> App:
    """An app that pauses reading on the given body chunks (1 = the first), as ASGI does
    when its queue is full."""

    def on_body(handler: Handler, data: bytes) -> None:
        if handler.chunks in pause_on:
            handler.stream.pause_reading()

    return App(on_body=on_body)


@in_loop
async def test_reading_pauses_while_the_app_does_not_take_the_body() -> None:
    w = wire(pausing_app({1}))
    request_id, data = w.begin(body=None, send=False)
    chunks = b"".join(w.web.send_stdin(request_id, b"x" * 10) for _ in range(3))
    w.send(data + chunks + w.web.end_stdin(request_id))
    handler = w.app.handlers[request_id]
    assert (handler.chunks, w.transport.calls) == (1, ["pause_reading"])  # the rest waits, unread
    assert w.conn.flow.paused_by == {handler.stream}
    handler.stream.resume_reading()
    assert handler.chunks == 1  # not from inside the app's call: on the next loop turn
    await step()
    assert (handler.chunks, handler.body_ended) == (3, True)
    assert w.transport.calls == ["pause_reading", "write", "resume_reading"]
    assert w.response(request_id) == (200, b"hello")


@in_loop
async def test_reading_stays_paused_while_what_was_read_before_is_handled() -> None:
    w = wire(pausing_app({1, 3}))
    request_id, data = w.begin(body=None, send=False)
    w.send(data + b"".join(w.web.send_stdin(request_id, b"x") for _ in range(4)))
    stream = w.app.handlers[request_id].stream
    stream.resume_reading()
    await step()
    assert w.app.handlers[request_id].chunks == 3
    assert w.transport.calls == ["pause_reading"]  # no resume and pause again in between
    stream.resume_reading()
    await step()
    assert w.app.handlers[request_id].chunks == 4
    assert w.transport.calls == ["pause_reading", "resume_reading"]


@in_loop
async def test_a_request_that_ends_while_pausing_lets_reading_resume() -> None:
    w = wire(pausing_app({1}))
    request_id, data = w.begin(body=None, send=False)
    w.send(data + w.web.send_stdin(request_id, b"x"))
    w.app.handlers[request_id].stream.end(RESPONSE)
    assert w.transport.calls == ["pause_reading", "write", "resume_reading"]
    assert not w.conn.flow.paused_by


@in_loop
async def test_writers_wait_until_the_web_server_takes_the_output() -> None:
    w = wire(App(respond_on_end=False))
    request_id, _ = w.begin()
    stream = w.app.handlers[request_id].stream
    stream.write(b"Status: 200 OK\r\n\r\n")
    w.conn.pause_writing()  # what asyncio calls above the transport's high-water mark
    assert not stream.writable
    writers = [asyncio.ensure_future(stream.drain()) for _ in range(2)]
    await step()
    assert not any(writer.done() for writer in writers)
    w.conn.resume_writing()
    await step()
    assert all(writer.done() for writer in writers)
    assert stream.writable
    await stream.drain()  # not paused: returns at once


@in_loop
async def test_a_waiting_writer_is_released_when_its_request_ends_or_the_connection_is_lost() -> None:
    w, first, second = two_in_flight()
    w.conn.pause_writing()
    waiting = [asyncio.ensure_future(handler.stream.drain()) for handler in (first, second)]
    await step()
    first.stream.end(RESPONSE)  # still paused: the waiter sees its request is over
    await step()
    assert waiting[0].done() and not waiting[1].done()
    w.transport.abort()
    await step()
    assert waiting[1].done()


# ---------------------------------------------------------- half-close and drain


@in_loop
async def test_half_close_after_the_response_while_the_body_is_still_coming() -> None:
    w = wire(App(respond_on_end=False, on_start=lambda stream: stream.end(RESPONSE)))
    request_id, data = w.begin(keep_conn=False, body=None, send=False)
    w.send(data + w.web.send_stdin(request_id, b"part of a body nobody reads"))
    # The response is out and our FIN with it; the connection stays open for the body.
    assert w.response(request_id) == (200, b"hello")
    assert w.transport.calls == ["write", "write_eof"]
    assert w.state.active_requests == 0
    w.send(pack_stream(RecordType.STDIN, request_id, b"more"))  # drained: nothing written back
    assert w.transport.calls == ["write", "write_eof"]
    w.send(pack_record(RecordType.STDIN, request_id))  # the end of the body: now close
    assert w.transport.calls == ["write", "write_eof", "close"]


@in_loop
async def test_a_half_closed_connection_is_dropped_when_the_body_never_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "DRAIN_TIMEOUT", 0.0)
    w = wire(App(respond_on_end=False, on_start=lambda stream: stream.end(RESPONSE)))
    w.begin(keep_conn=False, body=None)
    assert w.transport.calls == ["write", "write_eof"]
    for _ in range(10):
        if w.transport.closing:
            break
        await asyncio.sleep(0)
    assert w.transport.calls == ["write", "write_eof", "abort"]


@in_loop
async def test_a_stopping_worker_closes_after_the_last_response_with_its_fin() -> None:
    w, first, second = two_in_flight()
    w.state.stopping = True
    w.conn.close_if_idle()  # a graceful stop: two requests in flight, so not yet
    assert not w.transport.closing
    first.stream.end(RESPONSE)
    assert w.transport.calls == ["write"]
    second.stream.end(RESPONSE)
    assert w.transport.calls == ["write", "write", "write_eof", "close"]  # END_REQUEST, then FIN
    w.read()
    assert set(w.ended) == {first.stream.request_id, second.stream.request_id}


@in_loop
async def test_a_stopping_worker_closes_an_idle_connection_at_once() -> None:
    w = wire()
    w.state.stopping = True
    w.conn.close_if_idle()
    assert w.transport.calls == ["write_eof", "close"]


# --------------------------------------------------------------------------- limits


@in_loop
async def test_params_too_large_is_a_400_and_the_connection_goes_on() -> None:
    w = wire(max_params_size=1000)
    request_id, _ = w.begin(params={"HTTP_COOKIE": "c" * 2000})
    assert w.response(request_id) == (400, b"Bad Request\n")
    assert w.ended[request_id].app_status == 1
    assert w.app.started == 0
    request_id, _ = w.begin("/next")
    assert w.response(request_id) == (200, b"hello")


@in_loop
async def test_a_bad_record_for_a_running_request_fails_it_with_a_400() -> None:
    w = wire(App(respond_on_end=False))
    request_id, data = w.begin(body=None, send=False)
    w.send(data)
    w.send(pack_begin_request(request_id, Role.RESPONDER, True))  # BEGIN_REQUEST for an active request
    app = w.app
    assert app.handlers[request_id].disconnected
    assert w.response(request_id) == (400, b"Bad Request\n")


@in_loop
async def test_body_larger_than_the_limit_is_a_413() -> None:
    w = wire(App(respond_on_end=False), max_body_size=10)
    announced, _ = w.begin(body=b"x" * 11)  # CONTENT_LENGTH says so: the app never starts
    assert w.response(announced) == (413, b"Request body too large\n")
    assert w.app.started == 0
    unannounced, data = w.begin(body=None, send=False)  # no length: stopped as the body passes the limit
    w.send(data + w.web.send_stdin(unannounced, b"y" * 6) + w.web.send_stdin(unannounced, b"y" * 6))
    assert w.app.handlers[unannounced].disconnected
    assert bytes(w.app.handlers[unannounced].body) == b"y" * 6
    assert w.response(unannounced) == (413, b"Request body too large\n")


@in_loop
async def test_connections_over_the_limit_are_refused_while_every_one_is_busy() -> None:
    state = worker_state(App(respond_on_end=False), max_connections=1)
    first = Wire(state)
    request_id, _ = first.begin()
    second = Wire(state)
    assert second.transport.calls == ["abort"]
    await step()
    assert state.connections == {first.conn}
    first.app.handlers[request_id].stream.end(RESPONSE)
    assert first.response(request_id) == (200, b"hello")


@in_loop
async def test_at_the_limit_the_connection_idle_longest_makes_room() -> None:
    state = worker_state(App(), max_connections=3)
    waiting = Wire(state)  # a request head half sent: closed only when no connection is idle
    waiting.send(waiting.begin(send=False)[1][:20])
    older, newer = Wire(state), Wire(state)
    for w in (newer, older):  # newer finishes first, so older has waited longer
        request_id, _ = w.begin()
        assert w.response(request_id) == (200, b"hello")
        older.conn.phase_since = newer.conn.phase_since = asyncio.get_running_loop().time()
    older.conn.phase_since -= 5  # idle for 5 s
    newcomer = Wire(state)
    assert older.transport.calls[-1] == "close" and "abort" not in newcomer.transport.calls
    assert state.connections == {waiting.conn, newer.conn, newcomer.conn}
    request_id, _ = newcomer.begin()
    assert newcomer.response(request_id) == (200, b"hello")
    newcomer.conn.phase_since = newer.conn.phase_since + 1
    Wire(state)
    assert newer.transport.calls[-1] == "close" and "close" not in waiting.transport.calls


@in_loop
async def test_at_the_limit_a_connection_still_sending_its_head_makes_room_when_none_is_idle() -> None:
    state = worker_state(App(), max_connections=1)
    waiting = Wire(state)
    waiting.send(waiting.begin(send=False)[1][:20])
    newcomer = Wire(state)
    assert waiting.transport.calls == ["close"]
    request_id, _ = newcomer.begin()
    assert newcomer.response(request_id) == (200, b"hello")


@in_loop
async def test_a_peer_not_allowed_is_refused() -> None:
    state = worker_state(App(), allowed=lambda peer: peer[0] == "127.0.0.1")
    refused = Wire(state, peer=("192.0.2.1", 5000))
    allowed = Wire(state)
    assert refused.transport.calls == ["abort"]
    await step()
    assert state.connections == {allowed.conn}


@in_loop
async def test_records_for_an_inactive_request_id_are_ignored() -> None:
    w = wire()
    w.send(pack_stream(RecordType.STDIN, 9, b"who?") + pack_record(RecordType.STDIN, 9)
           + pack_record(RecordType.ABORT_REQUEST, 9))
    assert w.transport.calls == []
    assert w.app.started == 0
    request_id, _ = w.begin()
    assert w.response(request_id) == (200, b"hello")


@in_loop
async def test_garbage_closes_the_connection() -> None:
    w = wire(App(respond_on_end=False))
    request_id, _ = w.begin(body=None)
    w.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")  # version byte 71: not FastCGI
    assert w.transport.calls == ["abort"]
    await step()
    app = w.app
    assert app.handlers[request_id].disconnected
    assert (w.state.active_requests, w.state.connections) == (0, set())


@in_loop
async def test_an_app_that_cannot_start_gets_the_one_500() -> None:
    def fail(stream: RequestStream) -> None:
        raise RuntimeError("boom")

    w = wire(App(on_start=fail))
    request_id, _ = w.begin()
    w.read()
    assert bytes(w.stdout[request_id]) == error_response(500)
    assert w.ended[request_id].app_status == 1
    assert not w.transport.closing


# ------------------------------------------------------------------------ timeouts
# check_deadlines(now) is what ConnectionSweeper calls every second; the tests call it
# with the times they choose, so nothing sleeps.


def clock(w: Wire) -> float:
    return w.conn.phase_since  # the loop time the connection opened


@in_loop
async def test_a_connection_that_never_sends_a_request_is_closed_after_the_header_timeout() -> None:
    w = wire(header_timeout=30)
    opened = clock(w)
    w.conn.check_deadlines(opened + 29)
    assert w.transport.calls == []
    w.conn.check_deadlines(opened + 30)
    assert w.transport.calls == ["close"]
    assert w.state.connections == set()


@in_loop
async def test_params_trickled_a_byte_at_a_time_do_not_keep_the_connection_open() -> None:
    w = wire(header_timeout=30)
    opened = clock(w)
    _, data = w.begin(send=False)
    for second, byte in enumerate(data[:40]):
        w.send(bytes([byte]))
        w.conn.check_deadlines(opened + second)
    assert w.transport.calls == ["close"]  # at 30 s, though bytes kept coming
    assert w.app.started == 0


@in_loop
async def test_a_kept_alive_connection_is_closed_after_the_idle_timeout_and_a_request_restarts_the_clock() -> None:
    w = wire(idle_timeout=90, header_timeout=30)
    opened = clock(w)
    request_id, _ = w.begin()
    assert w.response(request_id) == (200, b"hello")
    w.conn.check_deadlines(opened + 1)  # idle from here
    w.conn.check_deadlines(opened + 80)
    request_id, _ = w.begin()  # a second request at 80 s
    assert w.response(request_id) == (200, b"hello")
    w.conn.check_deadlines(opened + 81)
    w.conn.check_deadlines(opened + 170)
    assert w.transport.calls.count("close") == 0  # past the header timeout, within the idle one
    w.conn.check_deadlines(opened + 171)
    assert w.transport.calls[-1] == "close"


@in_loop
async def test_a_request_in_flight_is_not_an_idle_connection() -> None:
    w = wire(App(respond_on_end=False), idle_timeout=5, header_timeout=5)
    opened = clock(w)
    request_id, _ = w.begin()
    w.conn.check_deadlines(opened + 1000)
    assert "close" not in w.transport.calls
    w.app.handlers[request_id].stream.end(RESPONSE)
    assert w.response(request_id) == (200, b"hello")


@in_loop
async def test_a_body_that_stops_arriving_fails_with_408_after_the_body_timeout() -> None:
    w = wire(App(respond_on_end=False), body_timeout=60)
    opened = clock(w)
    request_id, _ = w.begin(body=None, params={"CONTENT_LENGTH": "100"})
    w.send(w.web.send_stdin(request_id, b"x" * 50))
    w.conn.check_deadlines(opened + 1)
    w.conn.check_deadlines(opened + 50)
    w.send(w.web.send_stdin(request_id, b"x" * 10))  # still arriving at 50 s
    w.conn.check_deadlines(opened + 51)
    w.conn.check_deadlines(opened + 110)
    assert request_id not in w.ended and not w.app.handlers[request_id].disconnected
    w.conn.check_deadlines(opened + 111)
    assert w.app.handlers[request_id].disconnected
    assert w.response(request_id) == (408, b"Request Timeout\n")
    assert not w.transport.closing  # KEEP_CONN: the connection serves on
    w.send(pack_stream(RecordType.STDIN, request_id, b"x" * 40))  # a late rest of the body is dropped
    assert w.app.handlers[request_id].body == b"x" * 60


@in_loop
async def test_a_body_the_server_stopped_reading_is_not_a_stalled_body() -> None:
    w = wire(App(respond_on_end=False), body_timeout=60)
    opened = clock(w)
    request_id, _ = w.begin(body=None)
    w.send(w.web.send_stdin(request_id, b"x"))
    w.app.handlers[request_id].stream.pause_reading()  # the app is behind
    for second in range(1, 200, 10):
        w.conn.check_deadlines(opened + second)
    assert not w.app.handlers[request_id].disconnected


@in_loop
async def test_a_web_server_that_takes_no_output_is_closed_after_the_send_timeout() -> None:
    w = wire(App(respond_on_end=False), send_timeout=60)
    opened = clock(w)
    request_id, _ = w.begin()
    w.conn.pause_writing()
    w.transport.buffered = 1_000_000
    w.conn.check_deadlines(opened + 1)
    w.transport.buffered = 900_000  # it took some at 30 s
    w.conn.check_deadlines(opened + 30)
    w.conn.check_deadlines(opened + 89)
    assert w.transport.calls == []
    w.conn.check_deadlines(opened + 90)
    assert w.transport.calls == ["abort"]
    await step()
    assert w.app.handlers[request_id].disconnected


@in_loop
async def test_a_drained_buffer_restarts_the_send_clock() -> None:
    w = wire(App(respond_on_end=False), send_timeout=60)
    opened = clock(w)
    w.begin()
    w.transport.buffered = 500
    w.conn.pause_writing()
    w.conn.check_deadlines(opened + 1)
    w.conn.resume_writing()
    w.conn.pause_writing()
    w.conn.check_deadlines(opened + 70)
    w.conn.check_deadlines(opened + 129)
    assert w.transport.calls == []


@in_loop
async def test_the_sweeper_checks_every_connection_about_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "SWEEP_INTERVAL", 0.01)
    state = worker_state(App(), header_timeout=0.05)
    sweeper = connection.ConnectionSweeper(state, asyncio.get_running_loop())
    sweeper.start()
    silent = Wire(state)
    await asyncio.sleep(0.2)
    sweeper.close()
    assert silent.transport.calls == ["close"]
    assert not connection.ConnectionSweeper(worker_state(App()), asyncio.get_running_loop()).needed


# ------------------------------------------------------- management replies, half-close


@in_loop
async def test_management_replies_stop_the_reading_while_the_web_server_is_not_reading() -> None:
    w = wire()
    w.conn.pause_writing()  # the web server stopped reading
    w.send(w.web.get_values([FCGI_MAX_REQS]) * 100)
    assert w.transport.calls == ["write", "pause_reading"]
    w.send(w.web.get_values([FCGI_MAX_REQS]))  # what one read held still gets its answer
    w.conn.resume_writing()
    assert w.transport.calls[-1] == "resume_reading"
    assert sum(isinstance(event, ValuesResult) for event in w.read()) == 101


@in_loop
async def test_requests_written_whole_before_a_half_close_are_answered() -> None:
    w = wire(App(respond_on_end=False))
    first, _ = w.begin()
    second, _ = w.begin()
    assert w.conn.eof_received() is True  # keep the transport open for the answers
    w.app.handlers[first].stream.end(RESPONSE)
    assert w.response(first) == (200, b"hello")
    assert "close" not in w.transport.calls
    w.app.handlers[second].stream.end(RESPONSE)
    assert w.response(second) == (200, b"hello")
    assert w.transport.calls[-1] == "close"


@in_loop
async def test_a_half_close_mid_body_ends_that_request() -> None:
    w = wire(App(respond_on_end=False))
    request_id, _ = w.begin(body=None)
    w.send(w.web.send_stdin(request_id, b"part"))
    assert not w.conn.eof_received()
    assert w.app.handlers[request_id].disconnected
    w.read()
    assert w.ended[request_id].app_status == 1
    assert w.transport.calls[-1] == "close"


@in_loop
async def test_a_half_close_with_nothing_in_flight_closes() -> None:
    w = wire()
    request_id, _ = w.begin()
    assert w.response(request_id) == (200, b"hello")
    assert not w.conn.eof_received()
