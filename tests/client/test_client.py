"""The FastCGI client (sync and asyncio) against fcgibridge's own server and a scripted
fake application: requests, streaming, keep-alive, multiplexing, errors, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakefcgi import fake_server, read_request
from support import free_port, serve

from fcgibridge.cli import main, request_parser
from fcgibridge.client import (
    AsyncFastCGIClient,
    CantMultiplex,
    ConnectError,
    ConnectionClosed,
    FastCGIClient,
    Headers,
    Overloaded,
    ProtocolFailure,
    RequestTimeout,
    Timeout,
    UnknownRole,
    build_params,
    main_request,
    parse_address,
)
from fcgibridge.protocol import ApplicationConnection, ProtocolStatus, RequestStarted, Role, records
from fcgibridge.protocol.constants import RecordType

BIG = 8 * 1024 * 1024


class App:
    """A WSGI app with one behaviour per path."""

    def __init__(self) -> None:
        self.aborted = threading.Event()
        self.release = threading.Event()
        self.environs: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.environs.append(environ)
        path = environ["PATH_INFO"]
        if path == "/echo":
            body = environ["wsgi.input"].read()
            keys = ("REQUEST_METHOD", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_X_TOKEN",
                    "SCRIPT_NAME", "REQUEST_URI")
            info = {key: environ.get(key) for key in keys}
            info["sha"] = hashlib.sha256(body).hexdigest()
            info["length"] = len(body)
            start_response("200 OK", [("Content-Type", "application/json"), ("Set-Cookie", "a=1"),
                                      ("Set-Cookie", "b=2")])
            return [json.dumps(info).encode()]
        if path == "/redirect":
            start_response("302 Found", [("Location", "/elsewhere")])
            return [b""]
        if path == "/teapot":
            start_response("418 I'm a teapot", [])
            return [b"short and stout"]
        if path == "/error":
            start_response("503 Service Unavailable", [])
            return [b"down"]
        if path == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return self._big()
        if path == "/wait":
            start_response("200 OK", [("X-Accel-Buffering", "no")])
            return self._wait()
        if path == "/endless":
            start_response("200 OK", [])
            return self._endless()
        if path == "/slow":
            time.sleep(float(environ["QUERY_STRING"] or 1))
            start_response("200 OK", [])
            return [b"slept"]
        if path == "/trickle":
            start_response("200 OK", [])
            return self._trickle()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    def _big(self) -> Iterator[bytes]:
        piece = bytes(range(256)) * 256
        for _ in range(BIG // len(piece)):
            yield piece

    def _wait(self) -> Iterator[bytes]:
        yield b"first"
        self.release.wait(10)
        yield b"second"

    def _endless(self) -> Iterator[bytes]:
        try:
            while True:
                yield b"x" * 65536
                time.sleep(0.005)
        finally:
            self.aborted.set()

    def _trickle(self) -> Iterator[bytes]:
        for _ in range(100):
            time.sleep(0.05)
            yield b"."


@pytest.fixture(scope="module")
def app() -> App:
    return App()


@pytest.fixture(scope="module")
def server(app: App) -> Iterator[Any]:
    with serve(app, "wsgi", threads=8) as running:
        yield running


# ---------------------------------------------------------------- params, addresses


def test_parse_address() -> None:
    import socket as s

    assert parse_address("127.0.0.1:9000") == (s.AF_INET, ("127.0.0.1", 9000))
    assert parse_address("[::1]:9000") == (s.AF_INET6, ("::1", 9000))
    assert parse_address("unix:/run/php/fpm.sock") == (s.AF_UNIX, "/run/php/fpm.sock")
    for bad in ("9000", "host:", "::1:9000", "unix:", "h:99999"):
        with pytest.raises(ValueError, match="bad FastCGI address"):
            parse_address(bad)


def test_build_params_maps_headers_like_nginx() -> None:
    params = build_params("post", "/app/index.php?a=1&b=2",
                          headers=[("Content-Type", "text/plain"), ("Content-Length", "3"), ("X-Token", "t"),
                                   ("Accept", "a"), ("Accept", "b"), ("Host", "example.org:8080")],
                          document_root="/srv/www/")
    assert params["REQUEST_METHOD"] == "POST"
    assert params["QUERY_STRING"] == "a=1&b=2"
    assert params["REQUEST_URI"] == "/app/index.php?a=1&b=2"
    assert params["CONTENT_TYPE"] == "text/plain" and params["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in params
    assert params["HTTP_X_TOKEN"] == "t" and params["HTTP_ACCEPT"] == "a, b"
    assert params["SCRIPT_FILENAME"] == "/srv/www/app/index.php"
    assert params["DOCUMENT_ROOT"] == "/srv/www"
    assert params["SCRIPT_NAME"] == "/app/index.php"
    assert params["SERVER_NAME"] == "example.org"
    assert params["GATEWAY_INTERFACE"] == "CGI/1.1" and params["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert params["REMOTE_ADDR"] == "127.0.0.1"


def test_headers_keep_order_and_repeats() -> None:
    headers = Headers([("Set-Cookie", "a"), ("content-type", "x"), ("set-cookie", "b")])
    assert headers.get("SET-COOKIE") == "a"
    assert headers.get_all("Set-Cookie") == ["a", "b"]
    assert headers.get("Content-Type") == "x" and headers.get("nope") is None
    assert headers == [("Set-Cookie", "a"), ("content-type", "x"), ("set-cookie", "b")]


# ------------------------------------------------------------------ whole requests


def test_request_get_and_headers(server: Any) -> None:
    response = FastCGIClient(server.address).request(
        "GET", "/echo?x=1", headers={"X-Token": "secret"})
    assert (response.status, response.reason) == (200, "OK")
    info = json.loads(response.body)
    assert info["QUERY_STRING"] == "x=1" and info["HTTP_X_TOKEN"] == "secret"
    assert response.headers.get_all("set-cookie") == ["a=1", "b=2"]
    assert response.header("CONTENT-TYPE") == "application/json"
    assert (response.app_status, response.protocol_status, response.reuse_count) == (0, 0, 0)
    assert response.raw.startswith(b"Status: 200 OK\r\n") and response.raw.endswith(b"\r\n\r\n" + response.body)


@pytest.mark.parametrize("kind", ["bytes", "file", "iterable"])
def test_request_bodies(server: Any, kind: str) -> None:
    data = bytes(range(256)) * 9000  # 2.3 MB: more than the one-write small body
    headers: list[tuple[str, str]] = [("Content-Type", "application/octet-stream")]
    body: Any
    if kind == "bytes":
        body = data
    elif kind == "file":
        body = io.BytesIO(data)
        headers.append(("Content-Length", str(len(data))))
    else:
        body = (data[i : i + 70000] for i in range(0, len(data), 70000))
        headers.append(("Content-Length", str(len(data))))
    response = FastCGIClient(server.address).request("POST", "/echo", headers=headers, body=body)
    info = json.loads(response.body)
    assert info["length"] == len(data) and info["sha"] == hashlib.sha256(data).hexdigest()
    assert info["CONTENT_LENGTH"] == str(len(data))


def test_real_file_body_sets_content_length(server: Any, tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"z" * 300_000)
    with path.open("rb") as handle:
        info = json.loads(FastCGIClient(server.address).request("PUT", "/echo", body=handle).body)
    assert info["CONTENT_LENGTH"] == "300000" and info["length"] == 300_000


def test_status_rules(server: Any) -> None:
    client = FastCGIClient(server.address)
    redirect = client.request("GET", "/redirect")
    assert (redirect.status, redirect.headers.get("location")) == (302, "/elsewhere")
    assert client.request("GET", "/teapot").status == 418
    assert client.request("GET", "/error").status == 503


# ------------------------------------------------------------------------ streaming


def test_stream_gives_headers_before_the_body_ends(server: Any, app: App) -> None:
    app.release.clear()
    with FastCGIClient(server.address).stream("GET", "/wait") as response:
        assert response.status == 200 and response.header("x-accel-buffering") == "no"
        chunks = response.iter_bytes()
        assert next(chunks) == b"first"
        assert not response.complete
        app.release.set()
        assert b"".join(chunks) == b"second"
    assert response.complete and response.app_status == 0


def test_stream_large_response_in_bounded_chunks(server: Any) -> None:
    digest = hashlib.sha256()
    total = largest = 0
    with FastCGIClient(server.address).stream("GET", "/big") as response:
        for chunk in response.iter_bytes():
            digest.update(chunk)
            total += len(chunk)
            largest = max(largest, len(chunk))
    assert total == BIG
    assert largest <= 256 * 1024  # never the whole body at once
    assert digest.hexdigest() == hashlib.sha256((bytes(range(256)) * 256) * (BIG // 65536)).hexdigest()


def test_leaving_a_stream_early_aborts_and_keeps_the_connection(server: Any, app: App) -> None:
    app.aborted.clear()
    with FastCGIClient(server.address, keep_alive=True) as client:
        with client.stream("GET", "/endless") as response:
            assert len(next(response.iter_bytes())) > 0
        assert app.aborted.wait(5)  # the server got FCGI_ABORT_REQUEST and closed the app's iterator
        assert client.idle_connections == 1
        again = client.request("GET", "/")
        assert (again.body, again.reuse_count) == (b"hello", 1)


def test_leaving_a_stream_early_without_keep_alive_closes(server: Any, app: App) -> None:
    app.aborted.clear()
    client = FastCGIClient(server.address)
    with client.stream("GET", "/endless") as response:
        next(response.iter_bytes())
    assert app.aborted.wait(5)
    assert client.idle_connections == 0


# ----------------------------------------------------------------------- keep-alive


def test_keep_alive_reuses_one_connection(server: Any) -> None:
    with FastCGIClient(server.address, keep_alive=True) as client:
        counts = [client.request("GET", "/").reuse_count for _ in range(5)]
        assert counts == [0, 1, 2, 3, 4]
        assert client.idle_connections == 1
    assert client.idle_connections == 0


def test_without_keep_alive_every_request_has_its_connection(server: Any) -> None:
    client = FastCGIClient(server.address)
    assert [client.request().reuse_count for _ in range(3)] == [0, 0, 0]
    assert client.idle_connections == 0


def test_pool_size_and_idle_timeout(server: Any) -> None:
    with FastCGIClient(server.address, keep_alive=True, pool_size=1, idle_timeout=0.2) as client:
        with client.stream("GET", "/") as one, client.stream("GET", "/") as two:
            one.read()
            two.read()
        assert client.idle_connections == 1  # the second did not fit
        time.sleep(0.3)
        assert client.request().reuse_count == 0  # the idle one had expired


def _one_request_then_close(sock: socket.socket, core: ApplicationConnection) -> None:
    started, _ = read_request(sock, core)
    assert started is not None
    sock.sendall(core.end_request(started.request_id, stdout=b"Status: 200 OK\r\n\r\nok"))
    time.sleep(0.05)  # then the server closes the kept connection while it is idle


def test_stale_pooled_connection_is_replaced() -> None:
    with fake_server(_one_request_then_close) as fake, FastCGIClient(fake.address, keep_alive=True) as client:
        assert client.request().body == b"ok"
        time.sleep(0.2)
        response = client.request()
        assert (response.body, response.reuse_count) == (b"ok", 0)
        assert fake.connections == 2


# ------------------------------------------------------------------------- timeouts


def test_read_timeout(server: Any) -> None:
    client = FastCGIClient(server.address, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match=server.address) as caught:
        client.request("GET", "/slow", params={"QUERY_STRING": "1.5"})
    assert time.monotonic() - start < 1.2
    assert caught.value.waiting_for == "read"


def test_total_timeout_per_request(server: Any) -> None:
    client = FastCGIClient(server.address, timeout=Timeout(connect=2, read=2, total=None))
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"within 0\.4 s") as caught:
        client.request("GET", "/trickle", timeout=Timeout(connect=2, read=2, total=0.4))
    assert time.monotonic() - start < 1.5
    assert caught.value.waiting_for == "total"


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A listener that never accepts, its backlog filled: a new connect() hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
        time.sleep(0.05)
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout(full_backlog: str) -> None:
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match=f"{full_backlog}: timed out after 0.3 s waiting to connect") as caught:
        FastCGIClient(full_backlog, timeout=Timeout(connect=0.3, read=5)).request()
    assert time.monotonic() - start < 1
    assert caught.value.waiting_for == "connect"

    async def scenario() -> None:
        with pytest.raises(RequestTimeout, match="waiting to connect") as caught:
            await AsyncFastCGIClient(full_backlog, multiplex=False).request(timeout=Timeout(connect=0.3, read=5))
        assert caught.value.waiting_for == "connect"

    asyncio.run(scenario())


def test_connect_errors_name_the_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError, match=f"{address}: cannot connect"):
        FastCGIClient(address).request()
    missing = f"unix:{tmp_path}/nope.sock"
    with pytest.raises(ConnectError, match="cannot connect"):
        FastCGIClient(missing).request()


# ---------------------------------------------------------------- protocol failures


def _scripted(reply: bytes, close: bool = True) -> Any:
    def handler(sock: socket.socket, core: ApplicationConnection) -> None:
        read_request(sock, core)
        sock.sendall(reply)
    return handler


def _end(status: ProtocolStatus, app_status: int = 0) -> bytes:
    return records.pack_end_request(1, app_status, status)


@pytest.mark.parametrize(("status", "error"), [
    (ProtocolStatus.OVERLOADED, Overloaded),
    (ProtocolStatus.CANT_MPX_CONN, CantMultiplex),
    (ProtocolStatus.UNKNOWN_ROLE, UnknownRole),
])
def test_refusals_are_typed(status: ProtocolStatus, error: type[Exception]) -> None:
    with fake_server(_scripted(_end(status))) as fake, \
            pytest.raises(error, match=f"{fake.address}: the server refused the request: FCGI_{status.name}"):
        FastCGIClient(fake.address).request()


def test_unknown_role_from_fcgibridge(server: Any) -> None:
    server.state.roles = (Role.RESPONDER,)  # as for an adapter that cannot serve the others
    with pytest.raises(UnknownRole):
        FastCGIClient(server.address).request(role=Role.FILTER)
    with pytest.raises(UnknownRole):
        FastCGIClient(server.address).request(role=Role.AUTHORIZER)


def test_garbage_is_a_protocol_failure() -> None:
    with fake_server(_scripted(b"HTTP/1.1 200 OK\r\n\r\n")) as fake, \
            pytest.raises(ProtocolFailure, match="broke the FastCGI protocol"):
        FastCGIClient(fake.address).request()


def test_invalid_cgi_head_is_a_protocol_failure() -> None:
    reply = records.pack_stream(RecordType.STDOUT, 1, b"Status: nope\r\n\r\n") + _end(ProtocolStatus.REQUEST_COMPLETE)
    with fake_server(_scripted(reply)) as fake, pytest.raises(ProtocolFailure, match="bad Status header"):
        FastCGIClient(fake.address).request()


def test_closed_before_end_request() -> None:
    reply = records.pack_stream(RecordType.STDOUT, 1, b"Status: 200 OK\r\n\r\npartial")
    with fake_server(_scripted(reply)) as fake, \
            pytest.raises(ConnectionClosed, match="the server closed the connection before END_REQUEST"):
        FastCGIClient(fake.address).request()


def test_stderr_and_app_status() -> None:
    reply = (records.pack_stream(RecordType.STDERR, 1, b"warning: x\n")
             + records.pack_stream(RecordType.STDOUT, 1, b"Location: /there\r\n\r\n")
             + records.pack_stream(RecordType.STDERR, 1, b"warning: y\n") + _end(ProtocolStatus.REQUEST_COMPLETE, 3))
    with fake_server(_scripted(reply)) as fake:
        response = FastCGIClient(fake.address).request()
    assert (response.status, response.stderr, response.app_status) == (302, b"warning: x\nwarning: y\n", 3)


def test_early_answer_stops_sending_the_body() -> None:
    def handler(sock: socket.socket, core: ApplicationConnection) -> None:
        while not any(isinstance(e, RequestStarted) for e in core.receive_data(sock.recv(65536))):
            pass
        sock.sendall(records.pack_stream(RecordType.STDOUT, 1, b"Status: 413 Too Large\r\n\r\n")
                     + _end(ProtocolStatus.REQUEST_COMPLETE))
        time.sleep(0.3)

    def body() -> Iterator[bytes]:
        for _ in range(1000):
            yield b"x" * 65536

    with fake_server(handler) as fake, FastCGIClient(fake.address, keep_alive=True) as client:
        response = client.request("POST", "/", body=body(), headers={"Content-Length": str(1000 * 65536)})
        assert response.status == 413
        assert client.idle_connections == 0  # the body was cut short: never reused


# -------------------------------------------------------------------- get_values


def test_get_values_and_ping(server: Any) -> None:
    client = FastCGIClient(server.address)
    values = client.get_values()
    assert values["FCGI_MPXS_CONNS"] == "1" and int(values["FCGI_MAX_REQS"]) >= 1
    assert 0 < client.ping() < 5


# -------------------------------------------------------------------------- asyncio


class AsgiApp:
    def __init__(self) -> None:
        self.disconnected: asyncio.Event | None = None
        self.barrier_count = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/together":  # answers only once 4 requests run at the same time
            self.barrier_count += 1
            for _ in range(200):
                if self.barrier_count >= 4:
                    break
                await asyncio.sleep(0.01)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": str(self.barrier_count).encode()})
            return
        if path == "/sleepy":
            await asyncio.sleep(1)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"late"})
            return
        if path == "/endless":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while True:
                message_task = asyncio.ensure_future(receive())
                await asyncio.sleep(0.005)
                if message_task.done() and message_task.result()["type"] == "http.disconnect":
                    self.aborted = True
                    return
                message_task.cancel()
                await send({"type": "http.response.body", "body": b"y" * 65536, "more_body": True})
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-len", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def asgi_server() -> Iterator[Any]:
    with serve(AsgiApp(), "asgi3") as running:
        yield running


def test_async_request_stream_and_values(asgi_server: Any) -> None:
    async def scenario() -> None:
        async def chunks() -> Any:
            for _ in range(40):
                yield b"a" * 50_000

        async with AsyncFastCGIClient(asgi_server.address, keep_alive=True) as client:
            response = await client.request("POST", "/echo", body=chunks(), headers={"Content-Length": "2000000"})
            assert (response.status, response.headers.get("x-len"), len(response.body)) == (201, "2000000", 2_000_000)
            async with client.stream("POST", "/echo", body=b"hi") as streamed:
                assert streamed.status == 201
                assert await streamed.read() == b"hi"
            assert (await client.get_values())["FCGI_MPXS_CONNS"] == "1"
            assert await client.ping() < 5

    asyncio.run(scenario())


def test_async_multiplexes_over_one_connection(asgi_server: Any) -> None:
    async def scenario() -> None:
        async with AsyncFastCGIClient(asgi_server.address) as client:
            responses = await asyncio.gather(*(client.request("GET", "/together") for _ in range(4)))
            assert client.multiplex is True
            assert [r.body for r in responses] == [b"4"] * 4  # all four ran at once ...
            assert client._shared is not None and client._shared.channel.uses == 4  # ... on one connection
            assert len(asgi_server.state.connections) == 1

    asyncio.run(scenario())


def test_async_without_multiplexing_uses_a_pool(asgi_server: Any) -> None:
    async def scenario() -> None:
        async with AsyncFastCGIClient(asgi_server.address, multiplex=False, keep_alive=True) as client:
            responses = await asyncio.gather(*(client.request("POST", "/echo", body=b"x") for _ in range(3)))
            assert [r.reuse_count for r in responses] == [0, 0, 0]
            assert client.idle_connections == 3
            assert (await client.request("POST", "/", body=b"y")).reuse_count == 1

    asyncio.run(scenario())


def test_async_early_stream_close_aborts_only_that_request(asgi_server: Any) -> None:
    async def scenario() -> None:
        async with AsyncFastCGIClient(asgi_server.address, multiplex=True) as client:
            async with client.stream("GET", "/endless") as endless:
                async for _ in endless.aiter_bytes():
                    break
                other = await client.request("POST", "/echo", body=b"still fine")
                assert other.body == b"still fine"
            assert client._shared is not None
            assert client._shared.channel.idle  # the aborted request ended (END_REQUEST came back)
            assert (await client.request("POST", "/echo", body=b"again")).reuse_count == 2

    asyncio.run(scenario())


def test_async_errors(asgi_server: Any) -> None:
    async def scenario() -> None:
        with pytest.raises(ConnectError):
            await AsyncFastCGIClient(f"127.0.0.1:{free_port()}").request()
        with fake_server(_scripted(_end(ProtocolStatus.OVERLOADED))) as fake, pytest.raises(Overloaded):
            await AsyncFastCGIClient(fake.address, multiplex=False).request()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ CLI


def test_cli_request_prints_head_and_body(server: Any, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["request", server.address, "/teapot", "-i"]) == 0
    out = capfd.readouterr().out
    assert out.startswith("Status: 418 I'm a teapot\r\n") and out.endswith("\r\n\r\nshort and stout")


def test_cli_request_data_file_and_headers(server: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "body").write_bytes(b"q" * 70_000)
    assert main(["request", server.address, "/echo?z=9", "--data-binary", f"@{tmp_path}/body",
                 "-H", "X-Token: t1", "--param", "SCRIPT_NAME=/s"]) == 0
    info = json.loads(capfd.readouterr().out)
    assert (info["REQUEST_METHOD"], info["length"]) == ("POST", 70_000)
    assert (info["HTTP_X_TOKEN"], info["SCRIPT_NAME"]) == ("t1", "/s")


def test_cli_request_fails_on_5xx_and_connection_errors(server: Any, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["request", server.address, "/error"]) == 1
    err = capfd.readouterr().err
    assert err == f"fcgibridge: error: {server.address} answered 503 Service Unavailable\n"
    address = f"127.0.0.1:{free_port()}"
    assert main(["request", address]) == 1
    err = capfd.readouterr().err
    assert err.startswith(f"fcgibridge: error: {address}: cannot connect") and err.count("\n") == 1


def test_cli_request_values(server: Any, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["request", server.address, "--values"]) == 0
    assert "FCGI_MPXS_CONNS=1" in capfd.readouterr().out.splitlines()


def test_cli_request_stderr_flag() -> None:
    reply = (records.pack_stream(RecordType.STDERR, 1, b"from the app\n")
             + records.pack_stream(RecordType.STDOUT, 1, b"\r\nbody") + _end(ProtocolStatus.REQUEST_COMPLETE))

    with fake_server(_scripted(reply)) as fake:
        args = request_parser().parse_args([fake.address, "--stderr"])
        out, err = io.BytesIO(), io.BytesIO()
        with contextlib.redirect_stdout(io.TextIOWrapper(out)) as stdout, \
                contextlib.redirect_stderr(io.TextIOWrapper(err)) as stderr:
            assert main_request(args) == 0
            stdout.flush()
            stderr.flush()
    assert out.getvalue() == b"body" and err.getvalue() == b"from the app\n"


def test_async_stream_reads_no_further_than_the_caller(server: Any) -> None:
    from fcgibridge.client._base import CHUNK_SIZE, HIGH_WATER

    async def scenario() -> None:
        async with AsyncFastCGIClient(server.address, multiplex=False) as client, \
                client.stream("GET", "/big") as response:
            chunks = response.aiter_bytes()
            await chunks.__anext__()
            await asyncio.sleep(0.3)  # a slow consumer: the reader must stop at the high-water mark
            assert response._exchange.buffered <= HIGH_WATER + CHUNK_SIZE
            total = sum([len(c) async for c in chunks])
            assert total > BIG - HIGH_WATER - 2 * CHUNK_SIZE

    asyncio.run(scenario())


def test_async_timeout_of_one_multiplexed_request_spares_the_others(asgi_server: Any) -> None:
    async def scenario() -> None:
        async with AsyncFastCGIClient(asgi_server.address, multiplex=True) as client:
            slow = asyncio.ensure_future(client.request("GET", "/sleepy", timeout=Timeout(2, 0.2, None)))
            await asyncio.sleep(0.05)
            fine = await client.request("POST", "/echo", body=b"ok")
            with pytest.raises(RequestTimeout):
                await slow
            shared = client._shared
            assert shared is not None and shared.alive
            after = await client.request("POST", "/echo", body=b"after")
            assert (fine.body, after.body, client._shared) == (b"ok", b"after", shared)
            assert shared.channel.uses == 3

    asyncio.run(scenario())
