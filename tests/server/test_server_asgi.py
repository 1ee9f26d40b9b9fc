"""The ASGI side of the server, through real sockets: scope, body, response, errors,
abort, lifespan, graceful stop.

Every test runs a real worker on 127.0.0.1 (``support.serve``) and talks to it with the
project's client, or with ``support.RawConnection`` where a test needs to drive records
one by one (a body sent in pieces, FCGI_ABORT_REQUEST, several requests on a connection).
The apps run on the worker's event loop thread; they hand what they saw to the test
through lists, queues and ``threading.Event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import pytest
from support import RawConnection, ServerThread, listening_socket, serve

from fcgibridge.client import ConnectError, ConnectionClosed, FastCGIClient, Response
from fcgibridge.config import Config
from fcgibridge.protocol import Role
from fcgibridge.server.asgi import MAX_QUEUED_BODY, ASGIRequest, LifespanFailure

Scope = dict[str, Any]
Message = dict[str, Any]

#: Largest content of one FastCGI record.
RECORD = 0xFFFF


async def wait_event(event: threading.Event, timeout: float = 10.0) -> None:
    """Wait (from the app, on the worker loop) for the test thread to set ``event``."""
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never set the event")
        await asyncio.sleep(0.005)


async def read_body(receive: Any) -> bytes:
    parts = []
    for _ in range(100_000):
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message["body"])
        if not message.get("more_body", False):
            return b"".join(parts)
    raise AssertionError("body never ended")


async def respond(send: Any, body: bytes = b"ok", status: int = 200,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers if headers is not None else [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def client(server: ServerThread, timeout: float = 10.0) -> FastCGIClient:
    return FastCGIClient(server.address, timeout=timeout)


# ------------------------------------------------------------------------ scope


class ScopeRecorder:
    """An ASGI 3 app that remembers each HTTP scope and answers 200 ``ok``."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        await read_body(receive)
        await respond(send)

    def last(self) -> Scope:
        return self.scopes[-1]


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[ScopeRecorder, ServerThread]]:
    app = ScopeRecorder()
    with serve(app, "asgi3", lifespan="off") as server:
        yield app, server


def scope_for(recorder: tuple[ScopeRecorder, ServerThread], method: str = "GET", path: str = "/",
              **kwargs: Any) -> Scope:
    app, server = recorder
    response = client(server).request(method, path, **kwargs)
    assert response.status == 200, response
    assert response.app_status == 0
    return app.last()


def test_scope_basics(recorder: tuple[ScopeRecorder, ServerThread]) -> None:
    scope = scope_for(recorder, "post", "/items/7?a=1&b=%20x", body=b"data",
                      params={"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "54321",
                              "SERVER_ADDR": "10.0.0.1", "SERVER_PORT": "8080"})
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/items/7"
    assert scope["raw_path"] == b"/items/7"
    assert scope["query_string"] == b"a=1&b=%20x"
    assert isinstance(scope["query_string"], bytes)
    assert scope["root_path"] == ""
    assert scope["client"] == ("10.1.2.3", 54321)
    assert scope["server"] == ("10.0.0.1", 8080)
    assert scope["extensions"]["fastcgi"]["role"] == "RESPONDER"
    assert "state" not in scope  # lifespan off: nothing to share


@pytest.mark.parametrize(("protocol", "version"), [("HTTP/1.0", "1.0"), ("HTTP/1.1", "1.1"), ("HTTP/2.0", "2")])
def test_scope_http_version(recorder: tuple[ScopeRecorder, ServerThread], protocol: str, version: str) -> None:
    assert scope_for(recorder, params={"SERVER_PROTOCOL": protocol})["http_version"] == version


@pytest.mark.parametrize(("params", "scheme"), [
    ({}, "http"),
    ({"HTTPS": "on"}, "https"),
    ({"HTTPS": "off"}, "http"),
    ({"REQUEST_SCHEME": "https"}, "https"),
    ({"REQUEST_SCHEME": "http"}, "http"),
])
def test_scope_scheme(recorder: tuple[ScopeRecorder, ServerThread], params: dict[str, str], scheme: str) -> None:
    assert scope_for(recorder, params=params)["scheme"] == scheme


def test_scope_path_is_decoded_utf8_and_raw_path_is_request_uri(recorder: tuple[ScopeRecorder, ServerThread]) -> None:
    # nginx sends PATH_INFO decoded (UTF-8 bytes, carried as latin-1) and REQUEST_URI as sent.
    decoded = "/café/a b".encode().decode("latin-1")
    scope = scope_for(recorder, "GET", "/caf%C3%A9/a%20b?q=%C3%A9", params={"PATH_INFO": decoded})
    assert scope["path"] == "/café/a b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%20b"
    assert scope["query_string"] == b"q=%C3%A9"


@pytest.mark.parametrize(("params", "root_path", "path"), [
    # lighttpd / split_path_info: mounted at /app
    ({"SCRIPT_NAME": "/app", "PATH_INFO": "/x/y"}, "/app", "/app/x/y"),
    # nginx plain fastcgi_params / Apache mod_proxy_fcgi: SCRIPT_NAME is the whole path
    ({"SCRIPT_NAME": "/app/x/y", "PATH_INFO": ""}, "", "/app/x/y"),
    # h2o, Caddy: empty SCRIPT_NAME
    ({"SCRIPT_NAME": "", "PATH_INFO": "/app/x/y"}, "", "/app/x/y"),
    # a trailing slash on the mount point is not doubled
    ({"SCRIPT_NAME": "/app/", "PATH_INFO": "/x/y"}, "/app", "/app/x/y"),
])
def test_scope_root_path_from_script_name(recorder: tuple[ScopeRecorder, ServerThread], params: dict[str, str],
                                          root_path: str, path: str) -> None:
    scope = scope_for(recorder, "GET", "/app/x/y", params=params)
    assert scope["root_path"] == root_path
    assert scope["path"] == path  # ASGI: path includes root_path
    assert scope["raw_path"] == b"/app/x/y"


def test_scope_root_path_option() -> None:
    app = ScopeRecorder()
    with serve(app, "asgi3", lifespan="off", root_path="/app") as server:
        # nginx plain fastcgi_params: the mount point cannot be told from the variables
        client(server).request("GET", "/app/x?z=1", params={"SCRIPT_NAME": "/app/x", "PATH_INFO": ""})
        client(server).request("GET", "/app")
    first, second = app.scopes
    assert (first["root_path"], first["path"], first["query_string"]) == ("/app", "/app/x", b"z=1")
    assert (second["root_path"], second["path"]) == ("/app", "/app")


def test_scope_headers(recorder: tuple[ScopeRecorder, ServerThread]) -> None:
    # nginx passes Content-Type and Content-Length both as CONTENT_* and as HTTP_CONTENT_*.
    scope = scope_for(recorder, "POST", "/", body=b"12345",
                      headers=[("X-Custom-Thing", "Value One"), ("Accept", "text/html")],
                      params={"CONTENT_TYPE": "application/json", "HTTP_CONTENT_TYPE": "application/json",
                              "HTTP_CONTENT_LENGTH": "5"})
    headers = scope["headers"]
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in headers)
    assert all(n == n.lower() for n, _ in headers)
    names = [n for n, _ in headers]
    assert len(names) == len(set(names)), headers
    assert dict(headers) == {
        b"host": b"localhost",
        b"x-custom-thing": b"Value One",
        b"accept": b"text/html",
        b"content-type": b"application/json",
        b"content-length": b"5",
    }


def test_scope_headers_unknown_length(recorder: tuple[ScopeRecorder, ServerThread]) -> None:
    # nginx with chunked uploads sends CONTENT_LENGTH=""; Caddy sends -1: no content-length.
    for length in ("", "-1"):
        scope = scope_for(recorder, "POST", "/", params={"CONTENT_LENGTH": length, "CONTENT_TYPE": ""})
        names = [n for n, _ in scope["headers"]]
        assert b"content-length" not in names
        assert b"content-type" not in names


def test_scope_authorizer_role(recorder: tuple[ScopeRecorder, ServerThread]) -> None:
    scope = scope_for(recorder, role=Role.AUTHORIZER)
    assert scope["extensions"]["fastcgi"]["role"] == "AUTHORIZER"


def test_authorizer_without_stdin_gets_an_empty_body() -> None:
    """Spec 6.3: an authorizer gets no FCGI_STDIN at all, not even the empty record."""
    seen: list[Message] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(await receive())
        await respond(send, b"authorized")

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        rid = conn.begin(role=Role.AUTHORIZER, keep_conn=False)
        assert conn.wait_end(rid, timeout=5).app_status == 0
        assert conn.response(rid)[1] == b"authorized"
    assert seen == [{"type": "http.request", "body": b"", "more_body": False}]


# ------------------------------------------------------------------- lifespan state


class LifespanApp:
    """Startup puts things in the shared state; requests report what they see."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.request_states: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.events.append("startup")
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.request_states.append(dict(scope["state"]))
        scope["state"]["mine"] = len(self.request_states)  # must not leak into the next request
        await respond(send)


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_lifespan_startup_shutdown_and_state(mode: str) -> None:
    app = LifespanApp()
    with serve(app, "asgi3", lifespan=mode) as server:
        assert app.events == ["startup"]
        for _ in range(2):
            assert client(server).request().status == 200
        assert app.events == ["startup"]
    assert app.events == ["startup", "shutdown"]
    assert app.request_states == [{"db": "connected"}, {"db": "connected"}]


def test_lifespan_startup_failed_stops_the_worker() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    sock = listening_socket()
    try:
        server = ServerThread(app, "asgi3", sock, Config(app="test"))
        with pytest.raises(LifespanFailure, match="no database"):
            server.start()
        server.thread.join(5)
        assert not server.thread.is_alive()
    finally:
        sock.close()


def test_lifespan_startup_failed_then_raising_is_logged_as_startup(caplog: pytest.LogCaptureFixture) -> None:
    """What Starlette does when a startup handler raises: startup.failed, then re-raise."""
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "handler crashed"})
        raise ConnectionRefusedError("database down")

    sock = listening_socket()
    try:
        server = ServerThread(app, "asgi3", sock, Config(app="test"))
        with pytest.raises(LifespanFailure, match="handler crashed"):
            server.start()
        server.thread.join(5)
    finally:
        sock.close()
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "startup" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ConnectionRefusedError


def test_lifespan_on_and_app_raising_fails_startup() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ValueError("only http here")

    sock = listening_socket()
    try:
        server = ServerThread(app, "asgi3", sock, replace(Config(app="test"), lifespan="on"))
        with pytest.raises(LifespanFailure, match="only http here"):
            server.start()
        server.thread.join(5)
    finally:
        sock.close()


def test_lifespan_auto_serves_an_app_that_raises_on_lifespan(caplog: pytest.LogCaptureFixture) -> None:
    """Like Django's ASGI handler: ValueError for anything but http."""
    scopes: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        if scope["type"] != "http":
            raise ValueError(f"cannot handle {scope['type']}")
        assert "state" not in scope
        await respond(send, b"still serving")

    caplog.set_level(logging.INFO, "fcgibridge")
    with serve(app, "asgi3", lifespan="auto") as server:
        response = client(server).request()
    assert (response.status, response.body) == (200, b"still serving")
    assert scopes == ["lifespan", "http"]  # and no second try at shutdown
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_lifespan_off_never_calls_the_app_with_lifespan() -> None:
    scopes: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        await respond(send)

    with serve(app, "asgi3", lifespan="off") as server:
        assert client(server).request().status == 200
    assert scopes == ["http"]


class ASGI2App:
    """An ASGI 2 ("double callable") app: the class is called with the scope."""

    instances: ClassVar[list[ASGI2App]] = []

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        ASGI2App.instances.append(self)

    async def __call__(self, receive: Any, send: Any) -> None:
        if self.scope["type"] == "lifespan":
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_body(receive)
        await respond(send, b"asgi2 " + self.scope["path"].encode() + b" " + body)


def test_asgi2_app() -> None:
    ASGI2App.instances.clear()
    with serve(ASGI2App, "asgi2") as server:
        response = client(server).request("POST", "/two", body=b"body")
    assert (response.status, response.body) == (200, b"asgi2 /two body")
    assert [i.scope["type"] for i in ASGI2App.instances] == ["lifespan", "http"]


# ------------------------------------------------------------------- request body


def test_body_chunks_arrive_as_stdin_arrives() -> None:
    """The app sees the first piece of the body before the web server sends the rest."""
    messages: queue.Queue[Message] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        parts = []
        while True:
            message = await receive()
            messages.put(message)
            parts.append(message["body"])
            if not message["more_body"]:
                break
        await respond(send, b"|".join(parts))

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        rid = conn.begin("POST", params={"CONTENT_LENGTH": "11"})
        conn.send_stdin(rid, b"hello")
        assert messages.get(timeout=5) == {"type": "http.request", "body": b"hello", "more_body": True}
        conn.send_stdin(rid, b" world")
        assert messages.get(timeout=5) == {"type": "http.request", "body": b" world", "more_body": True}
        conn.end_stdin(rid)
        assert messages.get(timeout=5) == {"type": "http.request", "body": b"", "more_body": False}
        assert conn.wait_end(rid).app_status == 0
        assert conn.response(rid)[1] == b"hello| world|"


def test_empty_body_is_one_message() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        messages.append(await receive())
        await respond(send)

    with serve(app, "asgi3", lifespan="off") as server:
        assert client(server).request("GET").status == 200
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]


def test_receive_after_the_body_waits_for_disconnect() -> None:
    """Once the body is read, receive() blocks until the response is done or the client goes."""
    after: list[Message] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive)
        waiter = asyncio.ensure_future(receive())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await respond(send)
        after.append(await asyncio.wait_for(waiter, 5))

    with serve(app, "asgi3", lifespan="off") as server:
        assert client(server).request("POST", body=b"x").status == 200
    assert after == [{"type": "http.disconnect"}]


def test_concurrent_receive_calls_all_wake() -> None:
    """Two tasks waiting in receive() (a handler and a disconnect watcher) both get messages."""
    results: list[Any] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        first = asyncio.ensure_future(receive())
        second = asyncio.ensure_future(receive())
        done, pending = await asyncio.wait([first, second], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        results.append([task.result() for task in done])
        await respond(send)
        for task in pending:
            results.append(await asyncio.wait_for(task, 2))

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        rid = conn.begin("POST", params={"CONTENT_LENGTH": "3"})
        time.sleep(0.1)  # both receive() calls are waiting now
        conn.end_stdin(rid, b"abc")
        assert conn.wait_end(rid, timeout=5).app_status == 0
    assert results == [[{"type": "http.request", "body": b"abc", "more_body": False}], {"type": "http.disconnect"}]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_body_is_byte_exact(loop: str) -> None:
    body = os.urandom(10 * 1024 * 1024)
    counts: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        digest = hashlib.sha256()
        size = messages = 0
        while True:
            message = await receive()
            messages += 1
            digest.update(message["body"])
            size += len(message["body"])
            if not message["more_body"]:
                break
        counts.append(messages)
        await respond(send, f"{size} {digest.hexdigest()}".encode())

    with serve(app, "asgi3", lifespan="off", loop=loop) as server:
        response = client(server, timeout=20).request("POST", "/upload", body=body)
    assert response.body.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert counts[0] > 1  # it streamed in, not in one piece


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_slow_app_pauses_reading_and_bounds_the_queue(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backpressure: while the app does not read, the server stops reading the socket, so
    the web server's send blocks; the body queued for the app stays bounded."""
    peak = [0]
    original = ASGIRequest.receive_body

    def receive_body(self: ASGIRequest, data: bytes) -> None:
        original(self, data)
        peak[0] = max(peak[0], self.queued)

    monkeypatch.setattr(ASGIRequest, "receive_body", receive_body)
    started, release = threading.Event(), threading.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        first = await receive()
        started.set()
        await wait_event(release, 20)
        rest = await read_body(receive) if first["more_body"] else b""
        await respond(send, str(len(first["body"]) + len(rest)).encode())

    size = 16 * 1024 * 1024
    body = os.urandom(size)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # a fixed receive buffer (accepted sockets inherit it): big enough that one read takes
    # several records, small enough that the kernel cannot take the whole body
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = ServerThread(app, "asgi3", sock, replace(Config(app="test"), lifespan="off", loop=loop)).start()
    try:
        with RawConnection(server.address, sndbuf=64 * 1024) as conn:
            rid = conn.begin("POST", params={"CONTENT_LENGTH": str(size)})
            data = b"".join(conn.core.send_stdin(rid, body[i : i + RECORD]) for i in range(0, size, RECORD))
            data += conn.core.end_stdin(rid)
            view = memoryview(data)
            sent = 0
            conn.sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                while sent < len(view):
                    sent += conn.sock.send(view[sent : sent + 256 * 1024])
            assert started.wait(5)
            assert sent < 4 * 1024 * 1024, "the server kept reading although the app did not"
            conns = list(server.state.connections)
            assert len(conns) == 1
            assert conns[0].flow.paused_by, "reading is not paused"
            assert not conns[0].transport.is_reading()
            release.set()
            conn.sock.settimeout(10)
            conn.sock.sendall(view[sent:])
            assert conn.wait_end(rid, timeout=20).app_status == 0
            assert conn.response(rid)[1] == str(size).encode()
    finally:
        server.stop()
    assert MAX_QUEUED_BODY < peak[0] <= MAX_QUEUED_BODY + RECORD


# --------------------------------------------------------------------- response


def test_streamed_response_reaches_the_client_before_the_app_finishes() -> None:
    go = threading.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-accel-buffering", b"no")]})
        await send({"type": "http.response.body", "body": b"first chunk;", "more_body": True})
        await wait_event(go)
        await send({"type": "http.response.body", "body": b"second chunk", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        rid = conn.begin()
        conn.wait_for(lambda: b"first chunk;" in conn.stdout[rid], timeout=5)
        assert rid not in conn.ended
        go.set()
        assert conn.wait_end(rid).app_status == 0
        head, body = conn.response(rid)
    assert head.status == 200
    assert head.get("X-Accel-Buffering") == "no"
    assert body == b"first chunk;second chunk"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_streamed_response_is_byte_exact(loop: str) -> None:
    payload = os.urandom(5 * 1024 * 1024)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode())]})
        step = 300_001
        for i in range(0, len(payload), step):
            await send({"type": "http.response.body", "body": payload[i : i + step], "more_body": True})
        await send({"type": "http.response.body"})

    with serve(app, "asgi3", lifespan="off", loop=loop) as server:
        response = client(server, timeout=20).request()
    assert response.status == 200
    assert response.app_status == 0
    assert len(response.body) == len(payload)
    assert response.body == payload


def test_response_in_one_message_and_repeated_headers_kept() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await respond(send, b"created", 201, [(b"set-cookie", b"a=1"), (b"content-type", b"text/plain"),
                                               (b"set-cookie", b"b=2"), (b"Vary", b"Accept")])

    with serve(app, "asgi3", lifespan="off") as server:
        response = client(server).request()
    assert (response.status, response.reason, response.body) == (201, "Created", b"created")
    assert [(k.lower(), v) for k, v in response.headers] == [
        ("set-cookie", "a=1"), ("content-type", "text/plain"), ("set-cookie", "b=2"), ("vary", "Accept")]


# ------------------------------------------------------------------------ errors


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fcgibridge.app" and r.levelno >= logging.ERROR]


def serve_one(app: Any, **kwargs: Any) -> Response:
    with serve(app, "asgi3", lifespan="off") as server:
        return client(server, timeout=5).request(**kwargs)


def test_exception_before_start_is_a_500_with_a_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise KeyError("secret detail")

    response = serve_one(app, path="/boom")
    assert response.status == 500
    assert response.body == b"Internal Server Error\n"
    assert b"secret" not in response.raw
    assert response.app_status != 0
    (record,) = error_records(caplog)
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "/boom" in record.getMessage()


def test_exception_after_start_before_body_is_still_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("oops")

    response = serve_one(app)
    assert response.status == 500
    assert response.app_status != 0
    assert len(error_records(caplog)) == 1


def test_exception_after_the_response_started_ends_the_request(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("mid-stream")

    response = serve_one(app)
    assert (response.status, response.body) == (200, b"partial")
    assert response.app_status != 0
    (record,) = error_records(caplog)
    assert record.exc_info is not None


def test_app_returning_without_a_response_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()

    response = serve_one(app)
    assert response.status == 500
    assert response.app_status != 0
    assert "without a response" in error_records(caplog)[0].getMessage()


def test_app_returning_mid_response_ends_the_request(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})

    response = serve_one(app)
    assert (response.status, response.body, response.app_status) == (200, b"half", 1)
    assert "before finishing" in error_records(caplog)[0].getMessage()


@pytest.mark.parametrize("messages", [
    [{"type": "http.response.body", "body": b"no head"}],
    [{"type": "http.response.start", "status": 200}, {"type": "http.response.start", "status": 201}],
    [{"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nb")]}],
    [{"type": "websocket.accept"}],
], ids=["body-before-start", "start-twice", "header-injection", "wrong-type"])
def test_wrong_message_order_is_a_500_and_logged(messages: list[Message], caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        await send({"type": "http.response.body", "body": b"should not get here"})

    response = serve_one(app)
    assert response.status == 500
    assert response.body == b"Internal Server Error\n"
    assert response.app_status != 0
    assert len(error_records(caplog)) == 1


def test_body_after_the_response_is_complete_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await respond(send, b"done")
        await send({"type": "http.response.body", "body": b"extra"})

    response = serve_one(app)
    assert (response.status, response.body, response.app_status) == (200, b"done", 0)
    for _ in range(100):  # the error is logged after END_REQUEST left
        if error_records(caplog):
            break
        time.sleep(0.01)
    assert len(error_records(caplog)) == 1


def test_errors_do_not_break_the_next_request_on_a_kept_connection() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await respond(send, b"fine")

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        first = conn.begin(path="/boom", body=b"")
        assert conn.wait_end(first).app_status != 0
        assert conn.response(first)[0].status == 500
        second = conn.begin(path="/ok", body=b"")
        assert conn.wait_end(second).app_status == 0
        assert conn.response(second)[1] == b"fine"


# ------------------------------------------------------------------------- abort


def test_abort_while_reading_the_body() -> None:
    got_first = threading.Event()
    results: queue.Queue[Any] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/next":
            await respond(send, b"next")
            return
        results.put(await receive())
        got_first.set()
        results.put(await receive())  # the abort arrives while this waits
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError as exc:
            results.put(exc)
        else:
            results.put("send worked")
        results.put(await receive())

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        rid = conn.begin("POST", params={"CONTENT_LENGTH": "100"})
        conn.send_stdin(rid, b"part")
        assert got_first.wait(5)
        start = time.monotonic()
        conn.abort(rid)
        conn.wait_end(rid, timeout=2)
        assert time.monotonic() - start < 1.5
        assert results.get(timeout=5) == {"type": "http.request", "body": b"part", "more_body": True}
        assert results.get(timeout=5) == {"type": "http.disconnect"}
        assert isinstance(results.get(timeout=5), OSError)
        assert results.get(timeout=5) == {"type": "http.disconnect"}
        assert conn.stdout[rid] == b""
        # the connection (kept) still serves the next request
        after = conn.begin(path="/next", body=b"")
        assert conn.wait_end(after, timeout=5).app_status == 0
        assert conn.response(after)[1] == b"next"


def test_abort_while_the_app_is_busy_does_not_wait_for_it() -> None:
    go, busy = threading.Event(), threading.Event()
    results: queue.Queue[Any] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"streaming", "more_body": True})
        busy.set()
        await wait_event(go)  # stands for slow work; the abort comes meanwhile
        try:
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        except OSError as exc:
            results.put(exc)
        results.put(await receive())

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        rid = conn.begin(body=b"")
        assert busy.wait(5)
        conn.abort(rid)
        conn.wait_end(rid, timeout=2)  # before the app is done
        go.set()
        assert isinstance(results.get(timeout=5), OSError)
        assert results.get(timeout=5) == {"type": "http.disconnect"}


def test_abort_one_of_two_multiplexed_requests() -> None:
    go = threading.Event()
    started: queue.Queue[str] = queue.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        started.put(scope["path"])
        await read_body(receive)
        if scope["path"] == "/slow":
            await wait_event(go)
        await respond(send, scope["path"].encode())

    with serve(app, "asgi3", lifespan="off") as server, RawConnection(server.address) as conn:
        a = conn.begin(path="/a", body=b"")
        slow = conn.begin(path="/slow", body=b"")
        doomed = conn.begin(path="/doomed", params={"CONTENT_LENGTH": "10"})
        assert {started.get(timeout=5) for _ in range(3)} == {"/a", "/slow", "/doomed"}
        conn.abort(doomed)
        conn.wait_end(doomed, timeout=2)
        conn.wait_end(a, timeout=5)
        assert slow not in conn.ended
        go.set()
        assert conn.wait_end(slow, timeout=5).app_status == 0
        assert conn.response(a)[1] == b"/a"
        assert conn.response(slow)[1] == b"/slow"
        assert conn.stdout[doomed] == b""


def test_connection_lost_disconnects_the_app() -> None:
    results: queue.Queue[Any] = queue.Queue()
    started = threading.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        started.set()
        results.put(await receive())
        results.put(await receive())

    with serve(app, "asgi3", lifespan="off") as server:
        with RawConnection(server.address) as conn:
            rid = conn.begin("POST", params={"CONTENT_LENGTH": "10"})
            conn.send_stdin(rid, b"abc")
            assert started.wait(5)
        assert results.get(timeout=5)["body"] == b"abc"
        assert results.get(timeout=5) == {"type": "http.disconnect"}
        deadline = time.monotonic() + 5
        while server.state.active_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.state.active_requests == 0


# ---------------------------------------------------------------- graceful stop


def test_graceful_stop_finishes_the_request_in_flight_and_refuses_new_ones() -> None:
    started, go = threading.Event(), threading.Event()
    lifespan: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            lifespan.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        await read_body(receive)
        if scope["path"] == "/probe":  # a request that got in before the stop
            await respond(send, b"probe")
            return
        started.set()
        await wait_event(go)
        await respond(send, b"finished")

    with serve(app, "asgi3", graceful_timeout=10) as server, RawConnection(server.address) as conn:
        rid = conn.begin(body=b"", keep_conn=True)
        assert started.wait(5)
        server.loop.call_soon_threadsafe(server.worker.stop)
        refused = False
        for _ in range(200):  # the listener closes within a few loop turns
            try:
                client(server, timeout=2).request(path="/probe")
            except (ConnectError, ConnectionClosed):
                refused = True
                break
            time.sleep(0.01)
        assert refused
        assert server.thread.is_alive()
        assert lifespan == []  # shutdown waits for the request in flight
        go.set()
        assert conn.wait_end(rid, timeout=5).app_status == 0
        assert conn.response(rid)[1] == b"finished"
        conn.wait_closed(timeout=5)  # idle now: the stopping worker closes it
        server.thread.join(10)
        assert not server.thread.is_alive()
    assert lifespan == ["shutdown"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_graceful_stop_serves_a_connection_accepted_as_it_began(loop: str) -> None:
    """A stop that lands between the accept of a connection and its connection_made (the
    event loop runs them a few turns apart; under load, as a retiring worker closes its
    listener) still answers the request on it: the connection left the shared listen
    queue, so no other worker would."""
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive)
        await respond(send, b"answered")

    config = replace(Config(app="test"), lifespan="off", loop=loop)
    server = ServerThread(app, "asgi3", listening_socket(), config)
    accept = server.worker._new_connection

    def stop_as_accepted() -> Any:
        server.worker.stop()  # connection_made is scheduled after the worker's wake-up
        return accept()

    server.worker._new_connection = stop_as_accepted  # type: ignore[method-assign]
    server.start()
    try:
        with RawConnection(server.address) as conn:
            time.sleep(0.1)  # as a web server writes its request after the connect completes
            rid = conn.begin(body=b"", keep_conn=False)
            assert conn.wait_end(rid, timeout=5).app_status == 0
            assert conn.response(rid)[1] == b"answered"
        server.thread.join(10)
        assert not server.thread.is_alive()
    finally:
        server.stop()


def test_graceful_stop_lets_work_after_the_response_finish() -> None:
    """Background work after the last body message (Starlette's BackgroundTask) is not
    cut off by a graceful stop: the response is out, but the app has not returned."""
    responded = threading.Event()
    done: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await respond(send, b"accepted")
        responded.set()
        await asyncio.sleep(0.3)
        done.append("background work")

    with serve(app, "asgi3", lifespan="off", graceful_timeout=5) as server:
        assert client(server).request().body == b"accepted"
        assert responded.wait(5)
    assert done == ["background work"]


def test_graceful_timeout_cancels_a_stuck_request() -> None:
    started = threading.Event()
    cancelled: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with serve(app, "asgi3", lifespan="off", graceful_timeout=0.3) as server, RawConnection(server.address) as conn:
        conn.begin(body=b"")
        assert started.wait(5)
        begin = time.monotonic()
        server.loop.call_soon_threadsafe(server.worker.stop)
        server.thread.join(5)
        assert time.monotonic() - begin < 3
        assert not server.thread.is_alive()
    assert cancelled == [True]
