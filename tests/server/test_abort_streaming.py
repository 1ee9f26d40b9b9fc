"""FCGI_ABORT_REQUEST during a slowly streamed response is answered at once, in every
mode: WSGI in the pool (the default), WSGI with --sync (where the app runs on the event
loop thread, and a stream that goes on is handed to the pool thread so the loop can
read the abort), and ASGI. Through a real socket; the app would stream for 5 s."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import RawConnection, serve

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

CHUNKS = 100
PAUSE = 0.05  # CHUNKS * PAUSE: the 5 s the whole response would take
BOUND = 0.5  # END_REQUEST must follow the abort within this


class SlowStream:
    """A WSGI app that streams a chunk every PAUSE seconds; ``closed`` is set when the
    server closes its iterable."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        if environ["PATH_INFO"] == "/hello":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"hello"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        try:
            for number in range(CHUNKS):
                yield b"chunk %d\n" % number
                time.sleep(PAUSE)
        finally:
            self.closed.set()


async def slow_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    if scope["path"] == "/hello":
        await send({"type": "http.response.body", "body": b"hello"})
        return
    for number in range(CHUNKS):
        await send({"type": "http.response.body", "body": b"chunk %d\n" % number, "more_body": True})
        await asyncio.sleep(PAUSE)
    await send({"type": "http.response.body", "body": b""})


def abort_after_first_stdout(conn: RawConnection) -> float:
    """Start the stream, abort it once its first STDOUT is in; the seconds from the
    abort to END_REQUEST (app status 1), then a request on the same connection."""
    request_id = conn.begin("GET", "/stream", body=b"")
    conn.wait_for(lambda: b"chunk 0\n" in conn.stdout[request_id], timeout=5)
    conn.abort(request_id)
    aborted = time.monotonic()
    ended = conn.wait_end(request_id, timeout=CHUNKS * PAUSE + 5)
    took = time.monotonic() - aborted
    assert ended.app_status == 1
    assert b"chunk %d\n" % (CHUNKS - 1) not in conn.stdout[request_id]
    after = conn.begin("GET", "/hello", body=b"")  # the connection is still usable
    assert conn.wait_end(after, timeout=5).app_status == 0
    assert conn.response(after)[1] == b"hello"
    return took


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "thread-pool"])
def test_a_wsgi_stream_aborted_after_its_first_stdout_ends_at_once(sync: bool) -> None:
    app = SlowStream()
    with serve(app, sync=sync) as server, RawConnection(server.address) as conn:
        took = abort_after_first_stdout(conn)
        assert app.closed.wait(2), "the iterable was not closed"
    assert took < BOUND, f"END_REQUEST came {took:.2f} s after the abort"


def test_sync_mode_aborts_many_streams_promptly() -> None:
    """Each of a row of streams, aborted after its first STDOUT, ends promptly; before,
    each ran its whole response first (the abort waited on the loop thread)."""
    app = SlowStream()
    with serve(app, sync=True) as server, RawConnection(server.address) as conn:
        started = time.monotonic()
        for _ in range(10):
            took = abort_after_first_stdout(conn)
            assert took < BOUND, f"END_REQUEST came {took:.2f} s after the abort"
        assert time.monotonic() - started < 10 * BOUND + 2


def test_an_asgi_stream_aborted_after_its_first_stdout_ends_at_once() -> None:
    with serve(slow_asgi, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        took = abort_after_first_stdout(conn)
    assert took < BOUND, f"END_REQUEST came {took:.2f} s after the abort"


def test_a_quick_sync_stream_stays_on_the_loop_thread() -> None:
    """Responses of a few quick chunks are not handed to the pool thread (--sync's speed)."""
    threads: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for part in (b"a", b"b", b"c"):
            threads.append(threading.current_thread().name)
            yield part

    with serve(app, sync=True) as server, RawConnection(server.address) as conn:
        for _ in range(5):
            request_id = conn.begin("GET", "/", body=b"")
            conn.wait_end(request_id)
            assert conn.response(request_id)[1] == b"abc"
    assert not any(name.startswith("fcgibridge-wsgi") for name in threads), threads
