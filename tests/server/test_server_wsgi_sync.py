"""WSGI sync mode (``--sync``): one call at a time, inline on the loop when the body is in.

Through real sockets: where each call runs, that calls never overlap, that a large body
still arriving goes to the pool thread (so the app starts before it is complete) while a
small one is awaited and then run inline, and that an
inline response the web server reads slowly moves to the pool thread and arrives whole.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.validate import validator

from support import RawConnection, serve

from fcgibridge.client import FastCGIClient
from fcgibridge.server.wsgi import INLINE_BODY

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class Recorder:
    """A WSGI app that records which thread runs each call and how many overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: list[str] = []

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.append(threading.current_thread().name)
        try:
            body = environ["wsgi.input"].read()
            if environ["PATH_INFO"] == "/slow":
                time.sleep(0.05)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"%d %s" % (len(body), str(environ["wsgi.multithread"]).encode())]
        finally:
            with self.lock:
                self.running -= 1


def test_a_request_whose_body_has_arrived_runs_inline_on_the_loop_thread() -> None:
    app = Recorder()
    with serve(app, sync=True) as server:
        client = FastCGIClient(server.address)
        assert client.request("GET", "/").body == b"0 False"
        # Small enough to come in the same read as the params, even on a loaded machine.
        assert client.request("POST", "/", body=b"x" * 1000).body == b"1000 False"
    assert not any(name.startswith("fcgibridge-wsgi") for name in app.threads), app.threads


def test_the_validator_finds_nothing_wrong_in_sync_mode() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"len=")
        yield str(len(data)).encode()

    with serve(validator(app), sync=True) as server:
        client = FastCGIClient(server.address)
        assert client.request("POST", "/v", body=b"abc" * 1000).body == b"len=3000"
        assert client.request("GET", "/v").body == b"len=0"


def test_a_large_body_still_arriving_goes_to_the_pool_thread_and_the_app_starts_before_it_ends() -> None:
    first_line = threading.Event()
    where: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        line = environ["wsgi.input"].readline()
        where.append(threading.current_thread().name)
        first_line.set()
        rest = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"%d+%d" % (len(line), len(rest))]

    with serve(app, sync=True, request_buffering=False) as server, RawConnection(server.address) as conn:
        rest = INLINE_BODY  # with the first line, more than a body the call would wait for
        request_id = conn.begin("POST", "/upload", headers=(("Content-Length", str(6 + rest)),))
        conn.send_stdin(request_id, b"hello\n")
        assert first_line.wait(5), "the app did not start before the body was complete"
        conn.end_stdin(request_id, b"y" * rest)
        conn.wait_end(request_id)
        assert conn.response(request_id)[1] == b"6+%d" % rest
    assert where[0].startswith("fcgibridge-wsgi")


def test_a_small_body_still_arriving_is_awaited_then_the_call_runs_inline() -> None:
    where: list[tuple[str, int]] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = environ["wsgi.input"].read()
        where.append((threading.current_thread().name, len(body)))
        start_response("200 OK", [])
        return [body[:5]]

    with serve(app, sync=True) as server, RawConnection(server.address) as conn:
        request_id = conn.begin("POST", "/form", headers=(("Content-Length", "1006"),))
        conn.send_stdin(request_id, b"hello\n")
        time.sleep(0.2)
        assert where == [], "the call was placed before its small body was in"
        conn.end_stdin(request_id, b"y" * 1000)
        conn.wait_end(request_id)
        assert conn.response(request_id)[1] == b"hello"
    assert len(where) == 1 and where[0][1] == 1006
    assert not where[0][0].startswith("fcgibridge-wsgi"), where


def test_calls_never_overlap_under_concurrent_uploads_and_gets() -> None:
    app = Recorder()
    with serve(app, sync=True) as server:
        errors: list[BaseException] = []

        def streamed_upload() -> None:
            try:
                with RawConnection(server.address) as conn:
                    request_id = conn.begin("POST", "/slow", headers=(("Content-Length", "8"),))
                    conn.send_stdin(request_id, b"1234")
                    time.sleep(0.02)
                    conn.end_stdin(request_id, b"5678")
                    conn.wait_end(request_id)
                    assert conn.response(request_id)[1] == b"8 False"
            except BaseException as exc:
                errors.append(exc)

        def plain_get() -> None:
            try:
                assert FastCGIClient(server.address).request("GET", "/slow").body == b"0 False"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=streamed_upload if i % 2 else plain_get) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert app.most == 1
    assert len(app.threads) == 16


def test_an_inline_response_read_slowly_moves_to_the_pool_thread_and_arrives_whole() -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    count = 256  # 16 MiB, far beyond the socket buffers and the transport's high-water mark
    where: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(count):
            where.append(threading.current_thread().name)
            yield chunk

    with serve(app, sync=True) as server, RawConnection(server.address) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        request_id = conn.begin("GET", "/big", body=b"")
        time.sleep(0.3)  # let the server fill the socket and pause
        conn.wait_end(request_id, timeout=30)
        body = conn.response(request_id)[1]
    assert hashlib.sha256(body).digest() == hashlib.sha256(chunk * count).digest()
    assert not where[0].startswith("fcgibridge-wsgi")
    assert where[-1].startswith("fcgibridge-wsgi"), "the response never moved to the pool thread"


def test_an_abort_during_an_inline_call_is_answered_after_it_and_the_worker_goes_on() -> None:
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/hold":
            release.wait(5)
        start_response("200 OK", [])
        return [b"done"]

    with serve(app, sync=True) as server, RawConnection(server.address) as conn:
        request_id = conn.begin("GET", "/hold", body=b"")
        time.sleep(0.1)
        conn.abort(request_id)
        aborted = time.monotonic()
        threading.Timer(0.3, release.set).start()
        ended = conn.wait_end(request_id, timeout=10)
        # The trade-off of sync mode: the loop runs the app, so the abort waits for it.
        assert time.monotonic() - aborted >= 0.25
        assert ended.protocol_status == 0
        assert FastCGIClient(server.address).request("GET", "/next").body == b"done"
