"""An app that breaks its interface's rules for the response (a body that is not bytes,
a bad status, malformed headers) gets a 500 if nothing was sent yet, else its response
cut short (app status 1); always END_REQUEST, one ERROR line naming the mistake, its
iterable closed, and the connection kept for the next request. WSGI in both modes and
ASGI, through a real socket."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import pytest
from support import RawConnection, serve

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
TEXT = [("Content-Type", "text/plain")]


def app_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fcgibridge.app" and r.levelno >= logging.ERROR]


def one_then_fine(server_address: str, path: str) -> tuple[Any, bytes, int]:
    """GET ``path`` on a kept connection, then ``/fine`` on the same one (which must
    succeed); the first one's head, body and app status."""
    with RawConnection(server_address, timeout=5) as conn:
        first = conn.begin("GET", path, body=b"")
        app_status = conn.wait_end(first).app_status
        head, body = conn.response(first)
        second = conn.begin("GET", "/fine", body=b"")
        assert conn.wait_end(second).app_status == 0
        assert conn.response(second)[1] == b"fine"
    return head, body, app_status


def assert_one_line(caplog: pytest.LogCaptureFixture, message: str) -> None:
    (record,) = app_errors(caplog)
    assert record.getMessage() == message
    assert record.exc_info is None  # one line: no traceback into the server


# --------------------------------------------------------------------------- WSGI


class Mistakes:
    """A WSGI app whose path says which mistake it makes; ``closed`` counts the
    iterables the server closed."""

    def __init__(self) -> None:
        self.closed = 0
        self.lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        path = environ["PATH_INFO"]
        if path == "/fine":
            start_response("200 OK", TEXT)
            return [b"fine"]
        if path == "/write-str":
            write = start_response("200 OK", TEXT)
            write("text")
            return []
        start_response("200 OK", TEXT)
        if path == "/list-str":
            return ["text"]
        return self._chunks(path)

    def _chunks(self, path: str) -> Iterator[Any]:
        try:
            if path == "/str-after-bytes":
                yield b"first"
                yield "second"
            elif path == "/str-first":
                yield "first"
            elif path == "/int-first":
                yield 42
            elif path == "/buffers":
                yield bytearray(b"byte")
                yield memoryview(b"array")
        finally:
            with self.lock:
                self.closed += 1


@pytest.fixture(params=[False, True], ids=["thread-pool", "sync"])
def wsgi_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Mistakes]]:
    app = Mistakes()
    with serve(app, sync=request.param) as server:
        yield server.address, app


def test_a_wsgi_str_chunk_after_bytes_cuts_the_response(wsgi_server: tuple[str, Mistakes],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    address, app = wsgi_server
    head, body, app_status = one_then_fine(address, "/str-after-bytes")
    assert (head.status, body, app_status) == (200, b"first", 1)
    assert app.closed == 1
    assert_one_line(caplog, "app error: the WSGI response iterable yielded str, not bytes: GET /str-after-bytes")


@pytest.mark.parametrize(("path", "kind", "closes"), [
    ("/str-first", "the WSGI response iterable yielded str", True),
    ("/int-first", "the WSGI response iterable yielded int", True),
    ("/list-str", "the WSGI response iterable yielded str", False),
    ("/write-str", "the WSGI write() callable was given str", False),
])
def test_a_wsgi_body_that_is_not_bytes_before_any_byte_went_out_is_a_500(
        wsgi_server: tuple[str, Mistakes], caplog: pytest.LogCaptureFixture, path: str, kind: str,
        closes: bool) -> None:
    address, app = wsgi_server
    head, body, app_status = one_then_fine(address, path)
    assert (head.status, body, app_status) == (500, b"Internal Server Error\n", 1)
    assert app.closed == (1 if closes else 0)
    assert_one_line(caplog, f"app error: {kind}, not bytes: GET {path}")


def test_wsgi_bytearray_and_memoryview_chunks_are_sent(wsgi_server: tuple[str, Mistakes],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    head, body, app_status = one_then_fine(wsgi_server[0], "/buffers")
    assert (head.status, body, app_status) == (200, b"bytearray", 0)
    assert not app_errors(caplog)


@pytest.mark.parametrize("status", ["099 Too Low", "600 Too High", "2000 Big", "20 OK"])
def test_a_wsgi_status_outside_100_to_599_is_a_500(status: str, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/fine":
            start_response("200 OK", TEXT)
            return [b"fine"]
        start_response(status, TEXT)
        return [b"never"]

    with serve(app) as server:
        head, body, app_status = one_then_fine(server.address, "/bad")
    assert (head.status, body, app_status) == (500, b"Internal Server Error\n", 1)
    (record,) = app_errors(caplog)
    assert "100 to 599" in record.getMessage() and record.exc_info is None


# --------------------------------------------------------------------------- ASGI


def asgi_app(start: dict[str, Any], *bodies: dict[str, Any]) -> Any:
    """An ASGI app that sends ``start`` and ``bodies`` on any path but /fine."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/fine":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"fine"})
            return
        await send({"type": "http.response.start", **start})
        for message in bodies:
            await send({"type": "http.response.body", **message})

    return app


def serve_asgi(app: Any, path: str = "/bad") -> tuple[Any, bytes, int]:
    with serve(app, "asgi3", lifespan="off") as server:
        return one_then_fine(server.address, path)


def test_an_asgi_str_body_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    head, body, app_status = serve_asgi(asgi_app({"status": 200}, {"body": "text"}))
    assert (head.status, body, app_status) == (500, b"Internal Server Error\n", 1)
    assert_one_line(caplog, "app error: the ASGI app sent an http.response.body whose body is str, not bytes: "
                            "GET /bad")


def test_an_asgi_str_body_after_bytes_cuts_the_response(caplog: pytest.LogCaptureFixture) -> None:
    app = asgi_app({"status": 200}, {"body": b"first", "more_body": True}, {"body": "second"})
    head, body, app_status = serve_asgi(app)
    assert (head.status, body, app_status) == (200, b"first", 1)
    assert_one_line(caplog, "app error: the ASGI app sent an http.response.body whose body is str, not bytes: "
                            "GET /bad")


def test_asgi_bytearray_and_memoryview_bodies_are_sent(caplog: pytest.LogCaptureFixture) -> None:
    app = asgi_app({"status": 200}, {"body": bytearray(b"byte"), "more_body": True}, {"body": memoryview(b"array")})
    head, body, app_status = serve_asgi(app)
    assert (head.status, body, app_status) == (200, b"bytearray", 0)
    assert not app_errors(caplog)


@pytest.mark.parametrize("headers", [
    [("content-type", "text/plain")],
    [(b"content-type",)],
    [(b"a", b"b", b"c")],
    [b"ab"],
    [(b"a", 1)],
    b"content-type",
    42,
], ids=["str-pair", "one-item", "three-items", "bytes-not-a-pair", "int-value", "bytes", "int"])
def test_asgi_headers_that_are_not_pairs_of_bytes_are_a_500(headers: Any, caplog: pytest.LogCaptureFixture) -> None:
    head, body, app_status = serve_asgi(asgi_app({"status": 200, "headers": headers}, {"body": b"never"}))
    assert (head.status, body, app_status) == (500, b"Internal Server Error\n", 1)
    (record,) = app_errors(caplog)
    assert record.getMessage().startswith("app error: ") and "ASGI header" in record.getMessage()
    assert record.exc_info is None


@pytest.mark.parametrize("status", [99, 600, 2000, True, "200", b"200", 200.0, None])
def test_an_asgi_status_that_is_not_an_int_from_100_to_599_is_a_500(status: Any,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    head, body, app_status = serve_asgi(asgi_app({"status": status}, {"body": b"never"}))
    assert (head.status, body, app_status) == (500, b"Internal Server Error\n", 1)
    assert_one_line(caplog, f"app error: the ASGI status must be an int from 100 to 599, not {status!r}: GET /bad")


@pytest.mark.parametrize("status", [203, 599, HTTPStatus.CREATED])
def test_asgi_statuses_in_range_and_int_enums_are_served(status: int) -> None:
    head, body, app_status = serve_asgi(asgi_app({"status": status, "headers": [(b"a", b"b")]}, {"body": b"ok"}))
    assert (head.status, body, app_status) == (int(status), b"ok", 0)
