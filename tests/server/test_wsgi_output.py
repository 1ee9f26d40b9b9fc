"""The WSGI output state (Rules 1-5 of fcgibridge.server.wsgi) on a fake stream and a fake
event loop whose scheduled callbacks the test runs, and the head WSGIRequest formats."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fcgibridge.protocol import Role
from fcgibridge.server.connection import ClientDisconnected, FastCGIProtocol, RequestStream, WorkerState
from fcgibridge.server.wsgi import HIGH_WATER, Output, WSGIAdapter, WSGIRequest


class FakeStream(RequestStream):
    """A request stream that keeps what it is given instead of sending it."""

    writable = True  # the web server reads as fast as we write (a test may say otherwise)

    def __init__(self, adapter: WSGIAdapter) -> None:
        super().__init__(FastCGIProtocol(WorkerState(adapter)), 1, Role.RESPONDER, True, {"REQUEST_URI": "/x"})
        self.out: list[tuple[str, bytes, int]] = []
        self.drained = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.out.append(("write", data, 0))

    def end(self, data: bytes = b"", app_status: int = 0, head: bytes = b"") -> None:
        self.out.append(("end", head + data, app_status))

    async def drain(self) -> None:
        await self.drained.wait()


class FakeLoop(asyncio.AbstractEventLoop):
    """Keeps what the app thread schedules; the test runs it as the event loop would."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []
        self.tasks: list[Any] = []
        self.lock = threading.Lock()

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        with self.lock:
            self.calls.append(callback)

    def create_task(self, coro: Any) -> None:
        self.tasks.append(coro)

    def run_calls(self) -> None:
        with self.lock:
            calls, self.calls = self.calls, []
        for call in calls:
            call()


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.fixture
def adapter() -> Iterator[WSGIAdapter]:
    adapter = WSGIAdapter(lambda environ, start_response: [], threads=1, spool_threshold=1024 * 1024)
    yield adapter
    adapter.close()


def make(adapter: WSGIAdapter) -> tuple[WSGIRequest, FakeStream, FakeLoop]:
    stream, loop = FakeStream(adapter), FakeLoop()
    request = WSGIRequest(adapter, stream, loop)
    request.start_response("200 OK", [("A", "b")])
    return request, stream, loop


def output_of(request: WSGIRequest) -> Output:
    return request.output


def in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_writes_before_the_flush_leave_in_one_write_and_the_end_ends_the_request(adapter: WSGIAdapter) -> None:
    request, stream, loop = make(adapter)
    request._write(b"one")
    request._write(b"two")
    assert len(loop.calls) == 1  # one flush scheduled for both (Rule 2)
    request._send(b"", end=True)
    assert request.output is Output.ENDED
    loop.run_calls()
    assert stream.out == [("end", b"Status: 200 OK\r\nA: b\r\n\r\nonetwo", 0)]


def test_a_full_stream_blocks_the_app_thread_until_it_drains(adapter: WSGIAdapter) -> None:
    request, stream, loop = make(adapter)
    request._write(b"first")
    stream.writable = False
    loop.run_calls()
    assert request.output is Output.BLOCKED  # Rule 3
    thread, errors = in_thread(lambda: request._write(b"second"))
    wait_for(lambda: bool(loop.calls))
    time.sleep(0.05)
    assert thread.is_alive(), "the app thread did not wait"
    stream.writable = True
    stream.drained.set()
    loop.run_calls()
    for coro in loop.tasks:
        asyncio.run(coro)
    thread.join(5)
    assert not thread.is_alive() and not errors
    assert output_of(request) is Output.QUEUED  # drained (Rule 3)


def test_a_last_write_while_blocked_is_not_undone_by_the_drain(adapter: WSGIAdapter) -> None:
    request, stream, loop = make(adapter)
    request._write(b"first")
    stream.writable = False
    loop.run_calls()
    request._send(b"last", end=True)  # the end does not wait (Rule 4)
    stream.drained.set()
    for coro in loop.tasks:
        asyncio.run(coro)
    assert request.output is Output.ENDED
    loop.run_calls()
    assert stream.out[-1] == ("end", b"last", 0)


def test_a_disconnect_wakes_a_waiting_app_thread_and_drops_the_queue(adapter: WSGIAdapter) -> None:
    request, stream, loop = make(adapter)
    thread, errors = in_thread(lambda: request._write(b"x" * (HIGH_WATER + 1)))
    wait_for(lambda: bool(loop.calls))
    request.disconnect()
    thread.join(5)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [ClientDisconnected]
    assert request.output is Output.GONE
    loop.run_calls()
    assert stream.out == []
    with pytest.raises(ClientDisconnected):
        request._write(b"more")


@pytest.mark.parametrize("headers", [[("X-Bad", "a\r\nInjected: 1")], [("X-Bad", "a\nb")], [("X-Bad\r\n", "a")],
                                     [("X", "a\rb")]])
def test_a_header_with_a_line_break_is_refused(adapter: WSGIAdapter, headers: list[tuple[str, str]]) -> None:
    request, _, _ = make(adapter)
    request.status, request.headers = "200 OK", headers
    with pytest.raises(ValueError, match=r"^a WSGI header name or value contains a line break$"):
        request._head()


def test_the_head_is_the_cgi_formatters(adapter: WSGIAdapter) -> None:
    request, _, _ = make(adapter)
    request.status, request.headers = "404 Not Here", [("Content-Type", "text/plain"), ("X-Caf\u00e9", "\u00e9")]
    assert request._head() == b"Status: 404 Not Here\r\nContent-Type: text/plain\r\nX-Caf\xe9: \xe9\r\n\r\n"
    request.headers = [("X", "caf\u20ac")]
    with pytest.raises(ValueError, match=r"^a WSGI status or header must be latin-1 \(PEP 3333\), not 'caf\u20ac'$"):
        request._head()
    request.status, request.headers = "200 \u2713", []
    with pytest.raises(ValueError, match="must be latin-1"):
        request._head()
