"""The WSGI server through real sockets: a worker on 127.0.0.1, driven by the project's
client (:class:`FastCGIClient`) or, for what only a web server does (abort, multiplexing,
KEEP_CONN, bodies sent piece by piece, garbage), by a hand-driven client-role connection.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from support import RawConnection, RecordingConnection, serve, wait_until

from fcgibridge.cgi import split_response
from fcgibridge.client import FastCGIClient, Response
from fcgibridge.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ProtocolStatus,
    RecordType,
    Role,
    UnknownTypeResult,
    pack_record,
)
from fcgibridge.protocol.records import pack_begin_request
from fcgibridge.server.body import BlockingBody
from fcgibridge.server.connection import ClientDisconnected

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
App = Callable[[Environ, StartResponse], Iterable[bytes]]

TIMEOUT = 5.0
TEXT = [("Content-Type", "text/plain")]


def client(server: Any) -> FastCGIClient:
    return FastCGIClient(server.address, timeout=TIMEOUT)


def connect(server: Any, **options: Any) -> RecordingConnection:
    return RecordingConnection(server.address, timeout=TIMEOUT, **options)


def wait(event: threading.Event, what: str, timeout: float = TIMEOUT) -> None:
    assert event.wait(timeout), f"timed out waiting for {what}"


def app_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fcgibridge.app" and r.levelno >= logging.ERROR]


def echo_json(environ: Environ, start_response: StartResponse, data: dict[str, Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(data).encode()]


def body_of(response: Response) -> Any:
    assert response.status == 200, response.raw[:500]
    return json.loads(response.body)


class Recorder:
    """An iterable response that notes whether close() was called."""

    def __init__(self, chunks: Iterable[bytes], closed: threading.Event) -> None:
        self.chunks = iter(chunks)
        self.closed = closed

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        self.closed.set()


# ========================================================================= PEP 3333


def pep3333_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """One app per PATH_INFO, each using a different part of PEP 3333."""
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    if path == "/get":
        start_response("200 OK", TEXT)
        return [b"hello ", environ["QUERY_STRING"].encode("latin-1")]
    if path == "/read-n":
        length = int(environ["CONTENT_LENGTH"])
        data = b""
        while len(data) < length:
            piece = inp.read(min(1000, length - len(data)))
            assert piece, "EOF before CONTENT_LENGTH"
            data += piece
        assert inp.read(1) == b"", "wsgi.input not at EOF at the end of the body"
        assert inp.read(10) == b""
        start_response("200 OK", TEXT)
        return [hashlib.sha256(data).hexdigest().encode()]
    if path == "/readline":
        lines = []
        while line := inp.readline():
            lines.append(line)
        start_response("200 OK", TEXT)
        return [b"%d|" % len(lines), b"".join(lines)]
    if path == "/readline-limit":
        first = inp.readline(3)
        rest = inp.readline()
        start_response("200 OK", TEXT)
        return [first, b"|", rest]
    if path == "/readlines":
        lines = inp.readlines()
        start_response("200 OK", TEXT)
        return [b"%d|" % len(lines), *lines]
    if path == "/iterate":
        lines = list(inp)
        start_response("200 OK", TEXT)
        return [b"%d|" % len(lines), *lines]
    if path == "/empty":
        assert inp.read(10) == b""
        assert inp.readline() == b""
        start_response("204 No Content", [])
        return []
    if path == "/write":
        write = start_response("200 OK", TEXT)
        write(b"written ")
        write(b"")
        return [b"", b"returned"]
    if path == "/file":
        handle = open(environ["QUERY_STRING"], "rb")  # noqa: SIM115 - closed by the server via the wrapper
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle, 4096)
        return wrapper
    if path == "/errors":
        environ["wsgi.errors"].write("a line for the error log\n")
        environ["wsgi.errors"].writelines(["more\n"])
        environ["wsgi.errors"].flush()
        start_response("200 OK", TEXT)
        return [b"logged"]
    start_response("404 Not Found", TEXT)
    return [b"no such test app"]


class Checked:
    """``validator(app)``, and every exception it (or the app) raised, from any thread."""

    def __init__(self, app: App) -> None:
        self.app = validator(app)
        self.errors: list[BaseException] = []

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            result = self.app(environ, start_response)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        return self._watch(result)

    def _watch(self, result: Any) -> Iterator[bytes]:
        try:
            yield from result
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            try:
                result.close()
            except BaseException as exc:
                self.errors.append(exc)
                raise


@pytest.fixture(scope="module")
def checked_server() -> Iterator[tuple[Any, Checked]]:
    checked = Checked(pep3333_app)
    with serve(checked, "wsgi") as server:
        yield server, checked


LINES = b"first line\nsecond\n\nlast without newline"


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("GET", "/get?a=1&b=%20", b"", b"hello a=1&b=%20"),
        ("POST", "/read-n", os.urandom(100_000), None),
        ("POST", "/read-n", b"x", None),
        ("POST", "/readline", LINES, b"4|" + LINES),
        ("POST", "/readline-limit", b"abcdef\nghi\n", b"abc|def\n"),
        ("PUT", "/readlines", LINES, b"4|" + LINES),
        ("POST", "/iterate", (LINES + b"\n") * 1000, b"4000|" + (LINES + b"\n") * 1000),
        ("POST", "/empty", b"", b""),
        ("GET", "/write", b"", b"written returned"),
        ("GET", "/errors", b"", b"logged"),
    ],
    ids=["get", "read-n", "read-1", "readline", "readline-limit", "readlines", "iterate", "empty", "write",
         "errors"],
)
def test_validator_finds_nothing(checked_server: tuple[Any, Checked], caplog: pytest.LogCaptureFixture,
                                 method: str, path: str, body: bytes, expected: bytes | None) -> None:
    server, checked = checked_server
    checked.errors.clear()
    response = client(server).request(method, path, body=body)
    assert checked.errors == []
    assert app_errors(caplog) == []
    assert response.status in (200, 204), response.raw[:300]
    assert response.app_status == 0
    if expected is None:
        expected = hashlib.sha256(body).hexdigest().encode()
    assert response.body == expected


def test_validator_with_file_wrapper(checked_server: tuple[Any, Checked], tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    server, checked = checked_server
    checked.errors.clear()
    data = os.urandom(100_000)
    (tmp_path / "blob").write_bytes(data)
    response = client(server).request("GET", "/file?" + str(tmp_path / "blob"))
    assert checked.errors == []
    assert app_errors(caplog) == []
    assert response.body == data


def test_file_wrapper_closes_the_file() -> None:
    opened: list[Any] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        handle = open(__file__, "rb")  # noqa: SIM115 - closed by the server via the wrapper
        opened.append(handle)
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle)
        return wrapper

    with serve(app) as server:
        response = client(server).request()
    assert response.body == Path(__file__).read_bytes()
    assert opened[0].closed


def test_environ_basics() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        return echo_json(environ, start_response, {
            "version": list(environ["wsgi.version"]),
            "multithread": environ["wsgi.multithread"],
            "multiprocess": environ["wsgi.multiprocess"],
            "run_once": environ["wsgi.run_once"],
            "input_terminated": environ["wsgi.input_terminated"],
            "errors": environ["wsgi.errors"] is sys.stderr,
            "role": environ["FCGI_ROLE"],
            "scheme": environ["wsgi.url_scheme"],
            "types": sorted({type(v).__name__ for k, v in environ.items() if "." not in k}),
        })

    with serve(app, threads=4) as server:
        data = body_of(client(server).request("GET", "/x", headers=[("X-Thing", "caf\xe9")]))
    assert data == {"version": [1, 0], "multithread": True, "multiprocess": False, "run_once": False,
                    "input_terminated": True, "errors": True, "role": "RESPONDER", "scheme": "http",
                    "types": ["str"]}


# ------------------------------------------------------------------ request bodies


def read_to_end_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    data = environ["wsgi.input"].read()
    return echo_json(environ, start_response, {
        "length": len(data),
        "sha": hashlib.sha256(data).hexdigest(),
        "content_length": environ.get("CONTENT_LENGTH", "missing"),
        "eof": environ["wsgi.input"].read(1) == b"",
    })


@pytest.mark.parametrize("content_length", ["", "-1", None])
def test_unknown_content_length_reads_to_the_end(content_length: str | None) -> None:
    pieces = [os.urandom(n) for n in (10, 70_000, 1, 3000)]
    with serve(read_to_end_app) as server, connect(server) as conn:
        extra = {} if content_length is None else {"CONTENT_LENGTH": content_length}
        request_id = conn.begin("POST", "/upload", params=extra)
        for piece in pieces:
            conn.send_stdin(request_id, piece)
        conn.end_stdin(request_id)
        conn.wait_end(request_id)
        head, content = conn.response(request_id)
    body = b"".join(pieces)
    assert head.status == 200
    assert json.loads(content) == {"length": len(body), "sha": hashlib.sha256(body).hexdigest(),
                                   "content_length": "missing", "eof": True}


def test_app_starts_before_the_body_is_complete() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"first line\n")  # before reading anything
        data = environ["wsgi.input"].read()
        return [b"got %d bytes" % len(data)]

    with serve(app, request_buffering=False) as server, connect(server) as conn:
        request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": "20000"})
        conn.send_stdin(request_id, b"a" * 10_000)
        conn.wait_for(lambda: b"first line\n" in conn.stdout[request_id])
        assert request_id not in conn.ended
        conn.end_stdin(request_id, b"b" * 10_000)
        conn.wait_end(request_id)
        head, content = conn.response(request_id)
    assert head.status == 200
    assert content == b"first line\ngot 20000 bytes"


@pytest.mark.parametrize("sync", [False, True])
def test_with_request_buffering_the_app_starts_once_the_body_is_complete(sync: bool) -> None:
    started = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        started.set()
        start_response("200 OK", TEXT)
        return [b"got %d bytes" % len(environ["wsgi.input"].read())]

    with serve(app, sync=sync, spool_threshold=4096) as server, connect(server) as conn:
        request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": "20000"})
        conn.send_stdin(request_id, b"a" * 10_000)  # past the spool threshold: on disk
        assert not started.wait(0.3)
        conn.end_stdin(request_id, b"b" * 10_000)
        conn.wait_end(request_id)
        assert conn.response(request_id)[1] == b"got 20000 bytes"


def test_app_reads_the_body_as_it_streams_in() -> None:
    got: list[bytes] = []
    progress = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        inp = environ["wsgi.input"]
        while line := inp.readline():
            got.append(line)
            progress.set()
        start_response("200 OK", TEXT)
        return [b"%d lines" % len(got)]

    with serve(app, request_buffering=False) as server, connect(server) as conn:
        request_id = conn.begin("POST", "/")
        for i in range(3):
            progress.clear()
            conn.send_stdin(request_id, b"line %d\n" % i)
            wait(progress, f"the app to read line {i} before the body ended")
        conn.end_stdin(request_id)
        conn.wait_end(request_id)
        assert conn.response(request_id)[1] == b"3 lines"


def test_large_body_is_spooled_and_read_back_exactly() -> None:
    threshold = 256 * 1024
    seen: dict[str, Any] = {}

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        inp = environ["wsgi.input"]
        assert isinstance(inp, BlockingBody)
        deadline = time.monotonic() + 20
        while not inp.complete and time.monotonic() < deadline:  # a slow app: the body piles up
            time.sleep(0.01)
        seen["complete"] = inp.complete
        seen["spooled"] = inp.spooled
        seen["max_buffered"] = inp.buffered
        digest = hashlib.sha256()
        total = 0
        while chunk := inp.read(100_000):
            digest.update(chunk)
            total += len(chunk)
            seen["max_buffered"] = max(seen["max_buffered"], inp.buffered)
        start_response("200 OK", TEXT)
        return [b"%d %s" % (total, digest.hexdigest().encode())]

    body = os.urandom(20 * 1024 * 1024)
    with serve(app, spool_threshold=threshold) as server:
        response = FastCGIClient(server.address, timeout=30).request("POST", "/", body=body)
    assert response.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
    assert seen["complete"] and seen["spooled"]
    assert seen["max_buffered"] <= threshold + 64 * 1024


def test_spool_failure_fails_only_that_request(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def no_space(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fcgibridge.server.body.tempfile.mkstemp", no_space)
    with serve(read_to_end_app, spool_threshold=1000) as server, connect(server) as conn:
        request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": ""})
        conn.send_stdin(request_id, b"x" * 5000)
        conn.wait_end(request_id)
        assert conn.response(request_id)[0].status == 500
        conn.late_stdin(request_id, end=True)
        small = conn.begin("POST", "/", body=b"fits")  # the connection carries on
        conn.wait_end(small)
        assert json.loads(conn.response(small)[1])["length"] == 4
    assert any("No space left" in r.getMessage() for r in caplog.records)


def test_small_body_is_not_spooled() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        inp = environ["wsgi.input"]
        data = inp.read(int(environ["CONTENT_LENGTH"]))
        return echo_json(environ, start_response, {"spooled": inp.spooled, "length": len(data)})

    with serve(app, spool_threshold=10_000) as server:
        assert body_of(client(server).request("POST", "/", body=b"x" * 5000)) == {"spooled": False, "length": 5000}


# --------------------------------------------------------------- start_response


def test_exc_info_replaces_headers_before_the_head_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("X-First", "1"), *TEXT])
        try:
            raise ValueError("rendering failed")
        except ValueError:
            start_response("503 Oops", [("X-Second", "2"), *TEXT], sys.exc_info())
        return [b"replaced"]

    with serve(app) as server:
        response = client(server).request()
    assert (response.status, response.reason) == (503, "Oops")
    assert response.header("X-Second") == "2"
    assert response.header("X-First") is None
    assert response.body == b"replaced"
    assert response.app_status == 0
    assert app_errors(caplog) == []


def test_exc_info_after_the_head_was_sent_reraises(caplog: pytest.LogCaptureFixture) -> None:
    raised: list[BaseException] = []
    original: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"partial")
        try:
            raise ValueError("late failure")
        except ValueError as exc:
            original.append(exc)
            try:
                start_response("500 Internal Server Error", TEXT, sys.exc_info())
            except BaseException as again:
                raised.append(again)
                raise
        return [b"never"]

    with serve(app) as server:
        response = client(server).request()
    assert raised and raised[0] is original[0]
    assert response.status == 200
    assert response.body == b"partial"
    assert response.app_status != 0
    assert any("late failure" in r.getMessage() or (r.exc_info and "late failure" in str(r.exc_info[1]))
               for r in app_errors(caplog))


def test_second_start_response_without_exc_info_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        start_response("201 Created", TEXT)
        return [b"should not be seen"]

    with serve(app) as server:
        response = client(server).request()
    assert response.status == 500
    assert b"should not be seen" not in response.raw
    assert app_errors(caplog)


@pytest.mark.parametrize("status", ["200", "200OK", "abc OK", b"200 OK"])
def test_bad_status_is_a_500(status: Any) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, TEXT)
        return [b"body"]

    with serve(app) as server:
        assert client(server).request().status == 500


@pytest.mark.parametrize("headers", [[("X-Bad", "a\r\nInjected: 1")], [("X-Bad", "a\nb")], [("X-Bad\r\n", "a")],
                                     [("X-Bad", "caf\u20ac")], [(b"X-Bad", b"v")], [("X-Bad", 1)]])
def test_bad_header_is_a_500_and_never_sent(headers: list[tuple[str, str]], caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"body"]

    with serve(app) as server:
        response = client(server).request()
    assert response.status == 500
    assert response.header("Injected") is None
    assert b"X-Bad" not in response.raw
    # A str header the server refuses (a line break, not latin-1) is named in one line,
    # without a traceback. (Compiled, a header of another type is refused by the call
    # itself, with a TypeError and its traceback.)
    if all(type(value) is str for pair in headers for value in pair):
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and all(r.exc_info is None for r in errors), [r.getMessage() for r in errors]


# --------------------------------------------------------------------- close()


def test_close_is_called_after_a_normal_response() -> None:
    closed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Recorder:
        start_response("200 OK", TEXT)
        return Recorder([b"a", b"b"], closed)

    with serve(app) as server:
        assert client(server).request().body == b"ab"
        wait(closed, "close()")


def test_close_is_called_when_iteration_raises(caplog: pytest.LogCaptureFixture) -> None:
    closed = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield b"one"
        raise RuntimeError("iteration broke")

    def app(environ: Environ, start_response: StartResponse) -> Recorder:
        start_response("200 OK", TEXT)
        return Recorder(chunks(), closed)

    with serve(app) as server:
        response = client(server).request()
        wait(closed, "close()")
    assert response.body == b"one"
    assert response.app_status != 0
    assert app_errors(caplog)


def test_close_is_called_when_the_first_chunk_raises(caplog: pytest.LogCaptureFixture) -> None:
    closed = threading.Event()

    def chunks() -> Iterator[bytes]:
        raise RuntimeError("nothing to send")
        yield b""  # pragma: no cover

    def app(environ: Environ, start_response: StartResponse) -> Recorder:
        start_response("200 OK", TEXT)
        return Recorder(chunks(), closed)

    with serve(app) as server:
        response = client(server).request()
        wait(closed, "close()")
    assert response.status == 500


def test_close_raising_is_logged_and_answered(caplog: pytest.LogCaptureFixture) -> None:
    class BadClose(Recorder):
        def close(self) -> None:
            super().close()
            raise RuntimeError("close failed")

    closed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Recorder:
        start_response("200 OK", TEXT)
        return BadClose([b"body"], closed)

    with serve(app) as server:
        response = client(server).request()
    assert closed.is_set()
    assert response.body == b"body"
    assert response.app_status != 0
    assert app_errors(caplog)


# ------------------------------------------------------------------- responses


def test_streamed_chunks_arrive_before_the_app_finishes() -> None:
    go_on = threading.Event()
    finished = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"chunk 1;"
        wait(go_on, "the test to see chunk 1")
        yield b"chunk 2;"
        wait(go_on, "the test to see chunk 2")
        finished.set()

    with serve(app) as server, connect(server) as conn:
        request_id = conn.begin(body=b"")
        conn.wait_for(lambda: b"chunk 1;" in conn.stdout[request_id])
        assert not finished.is_set() and request_id not in conn.ended
        go_on.set()
        conn.wait_end(request_id)
        assert finished.is_set()
        assert conn.response(request_id)[1] == b"chunk 1;chunk 2;"


def test_write_callable_output_streams_too() -> None:
    go_on = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"early;")
        wait(go_on, "the test to see the early write")
        return [b"late"]

    with serve(app) as server, connect(server) as conn:
        request_id = conn.begin(body=b"")
        conn.wait_for(lambda: b"early;" in conn.stdout[request_id])
        go_on.set()
        conn.wait_end(request_id)
        assert conn.response(request_id)[1] == b"early;late"


BIG = os.urandom(5 * 1024 * 1024)


@pytest.mark.parametrize("style", ["one chunk", "odd pieces", "write"])
def test_large_response_is_byte_exact(style: str) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Length", str(len(BIG)))])
        if style == "one chunk":
            return [BIG]
        cuts = [*range(0, len(BIG), 99_991), len(BIG)]
        pieces = [BIG[a:b] for a, b in itertools.pairwise(cuts)]
        if style == "write":
            for piece in pieces:
                write(piece)
            return []
        return pieces

    with serve(app) as server:
        response = client(server).request()
    assert response.status == 200
    assert len(response.body) == len(BIG)
    assert response.body == BIG


def test_slow_reader_holds_the_app_back() -> None:
    """Backpressure: the app thread waits while the web server does not read, instead
    of the whole response piling up in memory."""
    finished = threading.Event()
    total = 32 * 1024 * 1024
    piece = b"z" * 65536

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        for _ in range(total // len(piece)):
            yield piece
        finished.set()

    with serve(app) as server, connect(server, rcvbuf=32 * 1024) as conn:
        request_id = conn.begin(body=b"")
        time.sleep(0.5)
        assert not finished.is_set(), "the app produced 32 MiB nobody read"
        conn.wait_end(request_id, timeout=30)
        assert finished.is_set()
        assert len(conn.response(request_id)[1]) == total


# ======================================================================== errors


def test_exception_before_start_is_a_generic_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise ValueError("secret-detail-1234")

    with serve(app) as server:
        response = client(server).request("GET", "/boom")
    assert response.status == 500
    assert response.app_status != 0
    assert b"secret-detail" not in response.raw and b"Traceback" not in response.raw
    assert b"ValueError" not in response.raw
    assert b"secret-detail" not in response.stderr
    records = app_errors(caplog)
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert "secret-detail-1234" in caplog.text and "Traceback" in caplog.text
    assert "/boom" in records[0].getMessage()


def test_exception_after_the_head_ends_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"half of the "
        raise RuntimeError("secret-detail-5678")

    with serve(app) as server, connect(server) as conn:
        request_id = conn.begin(keep_conn=False, body=b"")
        ended = conn.wait_end(request_id)
        conn.wait_closed()
        head, content = conn.response(request_id)
    assert head.status == 200
    assert content == b"half of the "
    assert ended.app_status != 0
    assert ended.protocol_status == ProtocolStatus.REQUEST_COMPLETE
    assert b"secret-detail" not in conn.raw
    assert "secret-detail-5678" in caplog.text


@pytest.mark.parametrize("returns", [[], [b"body without a head"], [b""]])
def test_app_that_never_calls_start_response_is_a_500(returns: list[bytes],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        return returns

    with serve(app) as server:
        response = client(server).request()
    assert response.status == 500
    assert b"body without a head" not in response.raw
    assert app_errors(caplog)


def test_app_returning_none_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", TEXT)
        return None

    with serve(app) as server:
        assert client(server).request().status == 500


def test_app_yielding_str_is_a_500_or_ends_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", TEXT)
        return ["text, not bytes"]

    with serve(app) as server:
        response = client(server).request()
    assert response.status == 500
    assert b"text, not bytes" not in response.raw


def test_errors_do_not_break_the_connection_for_the_next_request(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("failing on purpose")
        start_response("200 OK", TEXT)
        return [b"fine"]

    with serve(app) as server, connect(server) as conn:
        for path in ["/fail", "/ok", "/fail", "/ok"]:
            request_id = conn.begin("GET", path, body=b"")
            conn.wait_end(request_id)
            assert conn.response(request_id)[0].status == (500 if path == "/fail" else 200)


# ========================================================================= abort


def test_abort_while_the_app_is_blocked_reading_the_body() -> None:
    reading = threading.Event()
    outcome: list[BaseException] = []
    closed = threading.Event()

    class App:
        def __init__(self, environ: Environ, start_response: StartResponse) -> None:
            self.environ, self.start_response = environ, start_response

        def __iter__(self) -> Iterator[bytes]:
            inp = self.environ["wsgi.input"]
            inp.read(5)
            reading.set()
            try:
                inp.read(1000)  # blocks: the rest never comes
            except BaseException as exc:
                outcome.append(exc)
                raise
            self.start_response("200 OK", TEXT)
            yield b"unreachable"

        def close(self) -> None:
            closed.set()

    with serve(App, request_buffering=False) as server, connect(server) as conn:
        request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": "1000"})
        conn.send_stdin(request_id, b"12345")
        wait(reading, "the app to block in read()")
        time.sleep(0.05)
        start = time.monotonic()
        conn.abort(request_id)
        ended = conn.wait_end(request_id, timeout=1.0)
        assert time.monotonic() - start < 1.0
        wait(closed, "close() after the abort")
        output = bytes(conn.stdout[request_id])
        next_id = conn.begin("POST", "/", body=b"")  # the connection (KEEP_CONN) still serves
        conn.wait_end(next_id)
        assert conn.response(next_id)[1] == b"unreachable"
    assert ended.app_status != 0
    assert len(outcome) == 1 and isinstance(outcome[0], ClientDisconnected)
    assert output == b""


def test_abort_while_the_app_sleeps_between_chunks() -> None:
    first_sent = threading.Event()
    go_on = threading.Event()
    closed = threading.Event()
    after: list[str] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"first;"
            first_sent.set()
            wait(go_on, "the test to abort")
            yield b"second;"
            after.append("resumed after the abort")
            yield b"third;"
        except GeneratorExit:
            after.append("GeneratorExit")
            raise

    def app(environ: Environ, start_response: StartResponse) -> Recorder:
        start_response("200 OK", TEXT)
        return Recorder(chunks(), closed)

    with serve(app) as server, connect(server) as conn:
        request_id = conn.begin(body=b"", keep_conn=False)
        conn.wait_for(lambda: b"first;" in conn.stdout[request_id])
        start = time.monotonic()
        conn.abort(request_id)
        ended = conn.wait_end(request_id, timeout=1.0)
        assert time.monotonic() - start < 1.0
        go_on.set()
        wait(closed, "close() after the abort")
        conn.wait_closed()
    assert ended.app_status != 0
    assert bytes(conn.stdout[request_id]).endswith(b"\r\n\r\nfirst;")
    assert b"second;" not in conn.raw
    assert after == ["GeneratorExit"]
    assert not conn.reset


def test_abort_makes_the_next_write_raise() -> None:
    waiting = threading.Event()
    go_on = threading.Event()
    outcome: list[BaseException] = []
    done = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        try:
            write(b"one;")
            waiting.set()
            wait(go_on, "the abort")
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:  # a write may be queued before the abort lands
                write(b"more;")
                time.sleep(0.01)
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            done.set()
        return []

    with serve(app) as server, connect(server) as conn:
        request_id = conn.begin(body=b"")
        wait(waiting, "the first write")
        start = time.monotonic()
        conn.abort(request_id)
        conn.wait_end(request_id, timeout=1.0)
        assert time.monotonic() - start < 1.0
        go_on.set()
        wait(done, "the app to stop")
    assert len(outcome) == 1 and isinstance(outcome[0], ClientDisconnected)
    assert isinstance(outcome[0], OSError)


def test_abort_before_the_app_answered_a_blocked_write() -> None:
    """The app is blocked in write() by backpressure when the abort arrives."""
    outcome: list[BaseException] = []
    done = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        try:
            for _ in range(2000):
                write(b"x" * 65536)
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            done.set()
        return []

    with serve(app) as server, connect(server, rcvbuf=16 * 1024) as conn:
        request_id = conn.begin(body=b"")
        time.sleep(0.3)  # not reading: the app blocks
        assert not done.is_set()
        conn.abort(request_id)
        wait(done, "the blocked write to fail", timeout=2.0)
        conn.wait_end(request_id, timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], ClientDisconnected)


def test_request_aborted_while_waiting_for_a_thread_never_runs() -> None:
    release = threading.Event()
    calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/busy":
            wait(release, "the queued request to be aborted")
        start_response("200 OK", TEXT)
        return [b"ok"]

    with serve(app, threads=1) as server, connect(server) as conn:
        busy = conn.begin("GET", "/busy", body=b"")
        wait_until(lambda: calls == ["/busy"], TIMEOUT, "the only thread to be taken")
        queued = conn.begin("GET", "/queued", body=b"")
        conn.abort(queued)
        conn.wait_end(queued, timeout=1.0)
        release.set()
        conn.wait_end(busy)
        after = conn.begin("GET", "/after", body=b"")
        conn.wait_end(after)
    assert calls == ["/busy", "/after"]


def test_lost_connection_stops_a_reading_app_and_closes_its_iterable() -> None:
    reading = threading.Event()
    closed = threading.Event()
    outcome: list[BaseException] = []

    def chunks(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        reading.set()
        try:
            environ["wsgi.input"].read(100)
        except BaseException as exc:
            outcome.append(exc)
            raise
        start_response("200 OK", TEXT)
        yield b""

    def app(environ: Environ, start_response: StartResponse) -> Recorder:
        return Recorder(chunks(environ, start_response), closed)

    with serve(app, request_buffering=False) as server:
        conn = connect(server)
        request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": "100"})
        conn.send_stdin(request_id, b"abc")
        wait(reading, "the app to read")
        conn.close()
        wait(closed, "close() after the connection was lost")
    assert len(outcome) == 1 and isinstance(outcome[0], ClientDisconnected)


# ================================================================== multiplexing


def test_two_interleaved_requests_on_one_connection() -> None:
    b_running = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/a":
            wait(b_running, "request B to run while A waits")
        else:
            b_running.set()
        data = environ["wsgi.input"].read()
        start_response("200 OK", TEXT)
        return [environ["PATH_INFO"].encode(), b":", data]

    with serve(app) as server, connect(server) as conn:
        a = conn.begin("POST", "/a", params={"CONTENT_LENGTH": "6"})
        b = conn.begin("POST", "/b", params={"CONTENT_LENGTH": "6"})
        assert a != b
        conn.send_stdin(b, b"bbb")
        conn.send_stdin(a, b"aaa")
        conn.end_stdin(b, b"BBB")
        conn.wait_end(b)
        assert a not in conn.ended
        conn.end_stdin(a, b"AAA")
        conn.wait_end(a)
        assert conn.response(a)[1] == b"/a:aaaAAA"
        assert conn.response(b)[1] == b"/b:bbbBBB"
        assert conn.ended[a].app_status == conn.ended[b].app_status == 0


def test_many_multiplexed_requests() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        data = environ["wsgi.input"].read()
        start_response("200 OK", TEXT)
        return [data[::-1]]

    with serve(app, threads=4) as server, connect(server) as conn:
        ids = {conn.begin("POST", f"/{i}", params={"CONTENT_LENGTH": ""}): i for i in range(20)}
        bodies = {request_id: [b"%d-" % i, os.urandom(3000) if i % 3 == 0 else b"x" * i]
                  for request_id, i in ids.items()}
        for request_id in ids:
            conn.send_stdin(request_id, bodies[request_id][0])
        for request_id in ids:
            conn.end_stdin(request_id, bodies[request_id][1])
        conn.wait_for(lambda: all(r in conn.ended for r in ids))
        for request_id in ids:
            assert conn.response(request_id)[1] == b"".join(bodies[request_id])[::-1]


def test_keep_conn_serves_several_requests_in_a_row() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        data = environ["wsgi.input"].read()
        start_response("200 OK", TEXT)
        return [environ["PATH_INFO"].encode(), b"=", data]

    with serve(app) as server, connect(server) as conn:
        for i in range(6):
            request_id = conn.begin("POST", f"/r{i}", body=b"body %d" % i, keep_conn=True)
            conn.wait_end(request_id)
            assert conn.response(request_id)[1] == b"/r%d=body %d" % (i, i)
            assert not conn.closed
        with pytest.raises(TimeoutError):
            conn.read_some(0.2)  # nothing more comes, and the connection stays open
        assert not conn.closed


def test_without_keep_conn_the_server_closes_right_after_end_request() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        return [b"bye"]

    with serve(app) as server, connect(server) as conn:
        request_id = conn.begin(body=b"hello", keep_conn=False)
        conn.wait_closed(timeout=2.0)
        assert not conn.reset
        records = conn.records()
    assert records[-1].type == RecordType.END_REQUEST
    assert records[-1].request_id == request_id
    assert [r.type for r in records].count(RecordType.END_REQUEST) == 1
    assert conn.response(request_id)[1] == b"bye"


def open_connections(server: Any) -> int:
    return len(server.state.connections)


def assert_closed_cleanly(conn: RecordingConnection) -> None:
    """The server's side is gone, and it went with a FIN, not a reset."""
    conn.sock.settimeout(2.0)
    while data := conn.sock.recv(65536):  # ConnectionResetError here fails the test
        conn.raw += data
    assert not conn.reset


def test_drains_the_body_before_closing_when_the_app_did_not_read_it() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        return [b"answered without reading"]

    with serve(app, request_buffering=False) as server, connect(server) as conn:
        request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": str(1000 + 4 * 256 * 1024)},
                                keep_conn=False)
        conn.send_stdin(request_id, b"a" * 1000)
        conn.wait_end(request_id)
        assert conn.response(request_id)[1] == b"answered without reading"
        for _ in range(4):  # the web server is still sending: slowly, and more than a socket buffer
            time.sleep(0.05)
            conn.late_stdin(request_id, os.urandom(256 * 1024))  # raises if the server closed or reset
            assert open_connections(server) == 1, "closed before the body was complete"
        assert not conn.reset
        conn.late_stdin(request_id, end=True)
        wait_until(lambda: open_connections(server) == 0, TIMEOUT, "the server to close after the empty STDIN")
        assert_closed_cleanly(conn)
        records = conn.records()
    assert records[-1].type == RecordType.END_REQUEST
    assert [r.type for r in records].count(RecordType.END_REQUEST) == 1


def test_413_drains_the_rest_of_the_body_then_closes() -> None:
    with serve(read_to_end_app, max_body_size=1000) as server, connect(server) as conn:
        request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": ""}, keep_conn=False)
        conn.send_stdin(request_id, b"x" * 1500)
        conn.wait_end(request_id)
        assert conn.response(request_id)[0].status == 413
        conn.late_stdin(request_id, b"y" * 100_000)
        time.sleep(0.05)
        assert open_connections(server) == 1
        conn.late_stdin(request_id, end=True)
        wait_until(lambda: open_connections(server) == 0, TIMEOUT, "the server to close after the empty STDIN")
        assert_closed_cleanly(conn)


# ================================================================ protocol odds


def test_partial_writes_byte_by_byte() -> None:
    with serve(read_to_end_app) as server, connect(server) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request_id, data = conn.core.begin_request({"REQUEST_METHOD": "POST", "PATH_INFO": "/", "X": "y" * 300})
        conn.stdout[request_id] = bytearray()
        body = os.urandom(2000)
        data += conn.core.send_stdin(request_id, body[:700]) + conn.core.end_stdin(request_id, body[700:])
        sizes = [1, 2, 3, 5, 7, 8, 9, 13]
        pos = i = 0
        while pos < len(data):
            conn.send_raw(data[pos : pos + sizes[i % len(sizes)]])
            pos += sizes[i % len(sizes)]
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)
        conn.wait_end(request_id)
        result = json.loads(conn.response(request_id)[1])
    assert result["length"] == len(body) and result["sha"] == hashlib.sha256(body).hexdigest()


def test_get_values_through_the_socket() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        return [b"ok"]

    with serve(app, max_connections=7) as server:
        values = client(server).get_values()
        assert values == {FCGI_MAX_CONNS: "7", FCGI_MAX_REQS: "7", FCGI_MPXS_CONNS: "1"}
        assert client(server).get_values([FCGI_MPXS_CONNS, "NOT_A_VARIABLE"]) == {FCGI_MPXS_CONNS: "1"}
        with connect(server) as conn:
            conn.send_raw(conn.core.get_values([FCGI_MAX_REQS]) + pack_record(42, 0, b"??"))
            events: list[Any] = []
            deadline = time.monotonic() + TIMEOUT
            while len(events) < 2 and time.monotonic() < deadline:
                events += conn.read_some()
            assert events[0].values == {FCGI_MAX_REQS: "7"}
            assert isinstance(events[1], UnknownTypeResult) and events[1].record_type == 42
            request_id = conn.begin(body=b"")  # the same connection still serves requests
            conn.wait_end(request_id)
            assert conn.response(request_id)[1] == b"ok"


def test_unknown_role_is_rejected_without_running_the_app() -> None:
    called = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        called.set()
        start_response("200 OK", TEXT)
        return [b"ok"]

    with serve(app) as server, connect(server) as conn:
        conn.send_raw(pack_begin_request(77, 42, True))  # a role no spec knows
        conn.wait_for(lambda: any(r.type == RecordType.END_REQUEST and r.request_id == 77
                                  for r in conn.records(whole=False)))
        end = next(r for r in conn.records() if r.request_id == 77)
        assert end.content[4] == ProtocolStatus.UNKNOWN_ROLE
        assert not called.is_set()
        ok = conn.begin(body=b"")
        conn.wait_end(ok)
        assert conn.response(ok)[1] == b"ok"
    assert called.is_set()


def test_authorizer_role_reaches_the_app() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = environ["wsgi.input"].read()  # spec 6.3: an authorizer gets no body
        allowed = environ.get("HTTP_AUTHORIZATION") == "Bearer good"
        start_response("200 OK" if allowed else "403 Forbidden", [("Variable-USER", "alice"), *TEXT])
        return [environ["FCGI_ROLE"].encode(), b" body=%d" % len(body)]

    with serve(app) as server:
        for token, status in [("good", 200), ("bad", 403)]:
            with connect(server) as conn:
                # like Apache mod_authnz_fcgi: no STDIN record at all, no KEEP_CONN
                request_id = conn.begin("GET", "/private", headers=(("Authorization", f"Bearer {token}"),),
                                        role=Role.AUTHORIZER, keep_conn=False)
                conn.wait_end(request_id, timeout=2.0)
                head, content = conn.response(request_id)
                assert head.status == status
                assert content == b"AUTHORIZER body=0"
                assert head.get("Variable-USER") == "alice"
                conn.wait_closed(timeout=2.0)  # promptly: nothing to drain


def test_garbage_closes_that_connection_only(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        return [environ["PATH_INFO"].encode()]

    with serve(app) as server, connect(server) as good:
        first = good.begin("GET", "/before", body=b"")
        good.wait_end(first)
        caplog.clear()
        with connect(server) as bad:
            bad.send_raw(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
            bad.wait_closed(timeout=2.0)
        warnings = [r for r in caplog.records if r.name == "fcgibridge.server" and r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "\n" not in warnings[0].getMessage()
        assert warnings[0].exc_info is None
        second = good.begin("GET", "/after", body=b"")
        good.wait_end(second)
        assert good.response(second)[1] == b"/after"
        assert not good.closed


def test_max_body_size_by_content_length() -> None:
    called = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        called.set()
        return read_to_end_app(environ, start_response)

    with serve(app, max_body_size=1000) as server:
        with connect(server) as conn:  # refused on CONTENT_LENGTH alone, before any body byte
            request_id = conn.begin("POST", "/", params={"CONTENT_LENGTH": "1001"})
            conn.wait_end(request_id, timeout=2.0)
            assert conn.response(request_id)[0].status == 413
        response = client(server).request("POST", "/", body=b"x" * 5000)
        assert response.status == 413
        time.sleep(0.1)
        assert not called.is_set()
        assert client(server).request("POST", "/", body=b"x" * 1000).status == 200


def test_max_body_size_by_counting_streamed_bytes() -> None:
    outcome: list[BaseException] = []
    started = threading.Event()
    done = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        started.set()
        try:
            return read_to_end_app(environ, start_response)
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            done.set()

    with serve(app, max_body_size=1000, request_buffering=False) as server, connect(server) as conn:
        for length in ["", None]:  # no usable CONTENT_LENGTH: the bytes are counted
            extra = {"CONTENT_LENGTH": length} if length is not None else {}
            request_id = conn.begin("POST", "/", params=extra)
            conn.send_stdin(request_id, b"y" * 400)
            wait(started, "the app to start reading")
            started.clear()
            for _ in range(2):
                conn.send_stdin(request_id, b"y" * 400)
            conn.wait_end(request_id)
            assert conn.response(request_id)[0].status == 413
            conn.late_stdin(request_id, end=True)
            wait(done, "the app to stop reading")
            done.clear()
            assert isinstance(outcome.pop(), ClientDisconnected)
        within = conn.begin("POST", "/", params={"CONTENT_LENGTH": ""})
        conn.end_stdin(within, b"z" * 1000)
        conn.wait_end(within)
        assert conn.response(within)[0].status == 200


def test_non_ascii_digit_content_length_with_max_body_size(caplog: pytest.LogCaptureFixture) -> None:
    """"\xb2" (a superscript two) passes str.isdigit but is no length: read to the end."""
    with serve(read_to_end_app, max_body_size=1000) as server, connect(server) as conn:
        request_id = conn.begin_exact({"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": "\xb2"},
                                      body=b"12")
        conn.wait_end(request_id, timeout=2.0)
        assert json.loads(conn.response(request_id)[1])["length"] == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_second_connection_is_served_while_one_app_blocks() -> None:
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            wait(release, "the fast request to finish")
        start_response("200 OK", TEXT)
        return [b"done"]

    with serve(app) as server, connect(server) as slow:
        request_id = slow.begin("GET", "/slow", body=b"")
        assert client(server).request("GET", "/fast").body == b"done"
        release.set()
        slow.wait_end(request_id)


# ======================================================================= environ


def environ_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    keys = ("SCRIPT_NAME", "PATH_INFO", "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE",
            "HTTP_CONTENT_LENGTH", "wsgi.url_scheme", "FCGI_ROLE", "QUERY_STRING", "REQUEST_METHOD")
    return echo_json(environ, start_response, {k: environ[k] for k in keys if k in environ})


def request_environ(server: Any, params: dict[str, str], body: bytes = b"") -> dict[str, str]:
    base = {"REQUEST_METHOD": "GET", "QUERY_STRING": "x=1", "SERVER_NAME": "example", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_URI": "/P/items/7?x=1"}
    with connect(server) as conn:
        request_id = conn.begin_exact({**base, **params}, body=body)
        conn.wait_end(request_id)
        head, content = conn.response(request_id)
    assert head.status == 200
    result: dict[str, str] = json.loads(content)
    return result


@pytest.fixture(scope="module")
def environ_server() -> Iterator[Any]:
    with serve(environ_app) as server:
        yield server


@pytest.fixture(scope="module")
def rooted_server() -> Iterator[Any]:
    with serve(environ_app, root_path="/P") as server:
        yield server


FRONT_ENDS: dict[str, tuple[dict[str, str], tuple[str, str]]] = {
    "nginx plain fastcgi_params": ({"SCRIPT_NAME": "/P/items/7", "DOCUMENT_URI": "/P/items/7"}, ("", "/P/items/7")),
    "nginx split": ({"SCRIPT_NAME": "/P", "PATH_INFO": "/items/7"}, ("/P", "/items/7")),
    "apache mod_proxy_fcgi": ({"SCRIPT_NAME": "/P/items/7", "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1/P/items/7"},
                              ("", "/P/items/7")),
    "h2o": ({"SCRIPT_NAME": "", "PATH_INFO": "/P/items/7"}, ("", "/P/items/7")),
    "caddy": ({"SCRIPT_NAME": "", "PATH_INFO": "/P/items/7"}, ("", "/P/items/7")),
    "lighttpd split": ({"SCRIPT_NAME": "/P", "PATH_INFO": "/items/7"}, ("/P", "/items/7")),
}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_script_name_and_path_info_per_front_end(environ_server: Any, rooted_server: Any, front_end: str) -> None:
    params, expected = FRONT_ENDS[front_end]
    env = request_environ(environ_server, params)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == expected
    env = request_environ(rooted_server, params)  # --root-path /P wins over what was sent
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/P", "/items/7")


def test_http_content_headers_are_not_in_the_environ(environ_server: Any) -> None:
    env = request_environ(environ_server, {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3",
        "HTTP_CONTENT_TYPE": "text/plain", "HTTP_CONTENT_LENGTH": "3"}, body=b"abc")
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("text/plain", "3")


@pytest.mark.parametrize(
    ("params", "scheme"),
    [
        ({"HTTPS": "on"}, "https"),
        ({"REQUEST_SCHEME": "https"}, "https"),
        ({"HTTPS": "off", "REQUEST_SCHEME": "http"}, "http"),
        ({}, "http"),
    ],
)
def test_url_scheme(environ_server: Any, params: dict[str, str], scheme: str) -> None:
    assert request_environ(environ_server, {"PATH_INFO": "/", **params})["wsgi.url_scheme"] == scheme


def test_unix_socket(tmp_path: Path) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        return [environ["wsgi.input"].read()]

    with serve(app, unix=tmp_path / "fcgi.sock") as server:
        assert server.address.startswith("unix:")
        assert client(server).request("POST", "/", body=b"over unix").body == b"over unix"
        with RawConnection(server.address, timeout=TIMEOUT) as conn:
            request_id = conn.begin("POST", "/", body=b"raw")
            conn.wait_end(request_id)
            assert split_response(bytes(conn.stdout[request_id]))[1] == b"raw"
