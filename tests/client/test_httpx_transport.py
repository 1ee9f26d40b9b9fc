"""The httpx transports (fcgibridge.httpx) against a real PHP-FPM, a real fcgibridge
process and scripted FastCGI servers: params as nginx sends them, bodies streamed both
ways, stderr, keep-alive and multiplexing seen from the server, and httpx's errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakefcgi import fake_server, read_request
from phpfpm import PHP_DIR, PhpFpm, php_fpm
from support import free_port, run_fcgibridge

from fcgibridge import client
from fcgibridge.httpx import AsyncFastCGITransport, FastCGITransport
from fcgibridge.protocol import ApplicationConnection, ProtocolStatus, records
from fcgibridge.protocol.constants import RecordType

UPLOAD = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture(scope="module")
def fpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhpFpm]:
    with php_fpm(tmp_path_factory.mktemp("fpm")) as running:
        yield running


@pytest.fixture(scope="module")
def fcgibridge_server() -> Iterator[str]:
    """A real fcgibridge process (one worker, its status page at /status); yields its address."""
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.status_app:app", "-b", address, "-w", "1", "--status-path", "/status",
                        address=address):
        yield address


def php(fpm: PhpFpm, **options: Any) -> httpx.Client:
    return httpx.Client(transport=FastCGITransport(fpm.unix, root=str(PHP_DIR), **options),
                        base_url="https://app.local:8443")


def pieces(data: bytes, size: int = 100_000) -> Iterator[bytes]:
    """A body of unknown length (httpx sends it chunked): the transport spools it."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def apieces(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for chunk in pieces(data, size):
        await asyncio.sleep(0)
        yield chunk


def accepted(http: httpx.Client | None, address: str) -> int:
    """Connections the fcgibridge server accepted so far (its status page)."""
    if http is None:
        with httpx.Client(transport=FastCGITransport(address, root="/srv")) as fresh:
            return accepted(fresh, address)
    return int(http.get("http://app.local/status?json").json()["accepted_conn"])


# ------------------------------------------------------------------ PHP-FPM, sync


def test_get_with_query_headers_and_server_variables(fpm: PhpFpm) -> None:
    with php(fpm) as http:
        response = http.get("/vars.php?x=1&y=a%20b", headers=[("X-Token", "secret"), ("X-Multi", "a"),
                                                                ("X-Multi", "b")])
    assert response.status_code == 200
    assert (response.reason_phrase, response.http_version) == ("OK", "HTTP/1.1")
    assert response.headers.get_list("x-repeat") == ["one", "two"]
    got = response.json()
    assert got["get"] == {"x": "1", "y": "a b"}
    assert {name: got["vars"].get(name) for name in (
        "REQUEST_METHOD", "REQUEST_URI", "QUERY_STRING", "SCRIPT_NAME", "SCRIPT_FILENAME", "DOCUMENT_ROOT",
        "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "HTTPS", "REQUEST_SCHEME", "REMOTE_ADDR", "HTTP_X_TOKEN",
        "HTTP_X_MULTI", "CONTENT_LENGTH")} == {
        "REQUEST_METHOD": "GET", "REQUEST_URI": "/vars.php?x=1&y=a%20b", "QUERY_STRING": "x=1&y=a%20b",
        "SCRIPT_NAME": "/vars.php", "SCRIPT_FILENAME": str(PHP_DIR / "vars.php"), "DOCUMENT_ROOT": str(PHP_DIR),
        "HTTP_HOST": "app.local:8443", "SERVER_NAME": "app.local", "SERVER_PORT": "8443", "HTTPS": "on",
        "REQUEST_SCHEME": "https", "REMOTE_ADDR": "127.0.0.1", "HTTP_X_TOKEN": "secret", "HTTP_X_MULTI": "a, b",
        "CONTENT_LENGTH": None}


def test_plain_http_and_default_port(fpm: PhpFpm) -> None:
    transport = FastCGITransport(fpm.tcp, root=str(PHP_DIR), params={"APP_ENV": "test", "SERVER_NAME": "fixed"})
    with httpx.Client(transport=transport, base_url="http://example.test") as http:
        got = http.get("/vars.php").json()["vars"]
    assert (got["SERVER_PORT"], got["REQUEST_SCHEME"], got.get("HTTPS")) == ("80", "http", None)
    assert (got["HTTP_HOST"], got["SERVER_NAME"]) == ("example.test", "fixed")  # params= wins


def test_post_form_and_a_big_streamed_upload(fpm: PhpFpm) -> None:
    with php(fpm) as http:
        form = http.post("/info.php", data={"name": "Ada", "x": "1"}).json()
        assert (form["method"], form["post"], form["content_type"]) == (
            "POST", {"name": "Ada", "x": "1"}, "application/x-www-form-urlencoded")
        known = http.put("/info.php", content=UPLOAD).json()  # Content-Length from httpx
        spooled = http.post("/info.php", content=pieces(UPLOAD)).json()  # chunked: spooled
    digest = hashlib.sha256(UPLOAD).hexdigest()
    assert (known["length"], known["sha256"]) == (len(UPLOAD), digest)
    assert (spooled["length"], spooled["sha256"]) == (len(UPLOAD), digest)


def test_response_is_streamed(fpm: PhpFpm) -> None:
    with php(fpm) as http, http.stream("GET", "/stream.php?ms=600") as response:
        start = time.monotonic()
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - start
        rest = b"".join(chunks)
        assert first == b"first part\n" and rest == b"second part\n"
        assert first_at < 0.4 < time.monotonic() - start


def test_large_response_read_in_pieces(fpm: PhpFpm) -> None:
    with php(fpm) as http, http.stream("GET", "/big.php?mb=4") as response:
        sizes = [len(chunk) for chunk in response.iter_raw()]
    assert sum(sizes) == 4 * 1024 * 1024 and max(sizes) <= 65536 and len(sizes) > 16


def test_leaving_a_stream_early_ends_the_request(fpm: PhpFpm) -> None:
    transport = FastCGITransport(fpm.unix, root=str(PHP_DIR))
    with httpx.Client(transport=transport, base_url="http://app.local") as http:
        with http.stream("GET", "/sleep.php?s=3") as response:
            assert next(response.iter_raw()) == b"before\n"
        start = time.monotonic()
        assert http.get("/status.php").text == "status"  # not stuck behind the sleeping request
        assert time.monotonic() - start < 1
        # PHP-FPM ignores FCGI_ABORT_REQUEST: that connection was closed, this one pooled
        assert transport.client.idle_connections == 1

def test_stderr_extension(fpm: PhpFpm) -> None:
    with php(fpm) as http:
        response = http.get("/stderr.php")
        assert (response.text, response.extensions["fastcgi_stderr"]) == (
            "logged", b"PHP message: fcgibridge test: something to log")
        with http.stream("GET", "/vars.php?q=1") as streamed:
            streamed.read()
            assert streamed.extensions["fastcgi_stderr"] == b"PHP message: vars.php: /vars.php?q=1"
        assert http.get("/status.php").extensions["fastcgi_stderr"] == b""


def test_front_controller_split_path_info_and_index(fpm: PhpFpm) -> None:
    with php(fpm, script_filename="index.php") as http:
        assert http.get("/hello", params={"name": "httpx"}).text == "Hello from PHP 8, httpx"
        missing = http.get("/nothing/here")
        assert (missing.status_code, missing.text) == (404, "no page at /nothing/here")
        redirect = http.get("/go")
        assert (redirect.status_code, redirect.headers["location"]) == (302, "/hello")
    with php(fpm) as http:
        info = http.get("/info.php/extra/path").json()
        assert (info["script_name"], info["path_info"], info["script"]) == (
            "/info.php", "/extra/path", str(PHP_DIR / "info.php"))
    with php(fpm, split_path_info=r"^(.+?\.php)(/.*)?$", index="vars.php") as http:
        assert http.get("/").json()["vars"]["SCRIPT_NAME"] == "/vars.php"


def test_bad_options_are_clear(fpm: PhpFpm) -> None:
    with pytest.raises(ValueError, match="give root, or script_filename as an absolute path"):
        FastCGITransport(fpm.unix)
    with pytest.raises(ValueError, match="split_path_info '\\(' is not a regular expression"):
        FastCGITransport(fpm.unix, root="/srv", split_path_info="(")
    with pytest.raises(ValueError, match="bad FastCGI address 'nowhere' has no port"):
        FastCGITransport("nowhere", root="/srv")


# ------------------------------------------------------------------ PHP-FPM, async


def test_async_get_upload_stream_and_stderr(fpm: PhpFpm) -> None:
    async def scenario() -> None:
        transport = AsyncFastCGITransport(fpm.unix, root=str(PHP_DIR))
        async with httpx.AsyncClient(transport=transport, base_url="http://app.local") as http:
            response = await http.get("/vars.php?a=1", headers={"X-Token": "t"})
            got = response.json()
            assert (got["get"], got["vars"]["HTTP_X_TOKEN"]) == ({"a": "1"}, "t")
            assert response.extensions["fastcgi_stderr"] == b"PHP message: vars.php: /vars.php?a=1"
            assert response.headers.get_list("x-repeat") == ["one", "two"]
            spooled = (await http.post("/info.php", content=apieces(UPLOAD))).json()
            assert (spooled["length"], spooled["sha256"]) == (len(UPLOAD), hashlib.sha256(UPLOAD).hexdigest())
            form = (await http.post("/info.php", data={"name": "Ada"})).json()
            assert form["post"] == {"name": "Ada"}
            async with http.stream("GET", "/stream.php?ms=600") as streamed:
                start = time.monotonic()
                chunks = streamed.aiter_raw()
                assert await chunks.__anext__() == b"first part\n"
                assert time.monotonic() - start < 0.4
                assert b"".join([chunk async for chunk in chunks]) == b"second part\n"
            assert transport.client.multiplex is False  # PHP-FPM said FCGI_MPXS_CONNS=0

    asyncio.run(scenario())


# --------------------------------------------------- fcgibridge: keep-alive, multiplexing


def test_keep_alive_uses_one_connection(fcgibridge_server: str) -> None:
    with httpx.Client(transport=FastCGITransport(fcgibridge_server, root="/srv"),
                      base_url="http://app.local") as http:
        before = accepted(http, fcgibridge_server)
        paths = [http.get(f"/n{i}").text.split()[0] for i in range(5)]
        assert paths == [f"/n{i}" for i in range(5)]
        assert accepted(http, fcgibridge_server) == before  # every request on the first connection
    assert accepted(None, fcgibridge_server) == before + 1  # closed with the client: a new one


def test_async_multiplexes_concurrent_requests(fcgibridge_server: str) -> None:
    async def scenario() -> None:
        transport = AsyncFastCGITransport(fcgibridge_server, root="/srv")
        async with httpx.AsyncClient(transport=transport, base_url="http://app.local") as http:
            before = accepted(None, fcgibridge_server)
            start = time.monotonic()
            answers = await asyncio.gather(*(http.get("/sleep", params={"s": "0.4"}) for _ in range(4)))
            assert time.monotonic() - start < 1.2  # side by side, not one after the other
            assert {answer.text.split()[0] for answer in answers} == {"/sleep"}
            assert transport.client.multiplex is True
        # one connection for the GET_VALUES question, one the four requests shared, and this one
        assert accepted(None, fcgibridge_server) == before + 3

    asyncio.run(scenario())


# -------------------------------------------------------------------------- errors


def test_nothing_listening_is_a_connect_error(tmp_path: Path) -> None:
    address = f"unix:{tmp_path}/none.sock"
    with httpx.Client(transport=FastCGITransport(address, root="/srv")) as http, \
            pytest.raises(httpx.ConnectError, match=f"{address}: cannot connect") as caught:
        http.get("http://app.local/")
    assert isinstance(caught.value.__cause__, client.ConnectError)
    assert caught.value.request.url == "http://app.local/"

    async def scenario() -> None:
        transport = AsyncFastCGITransport(f"127.0.0.1:{free_port()}", root="/srv", multiplex=False)
        async with httpx.AsyncClient(transport=transport) as http:
            with pytest.raises(httpx.ConnectError, match="cannot connect") as caught:
                await http.get("http://app.local/")
            assert isinstance(caught.value.__cause__, client.ConnectError)

    asyncio.run(scenario())


def test_connect_timeout() -> None:
    listener = socket.socket()  # never accepts; its backlog filled, a new connect() hangs
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = [socket.socket() for _ in range(3)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with httpx.Client(transport=FastCGITransport(address, root="/srv")) as http, \
                pytest.raises(httpx.ConnectTimeout, match="waiting to connect") as caught:
            http.get("http://app.local/", timeout=httpx.Timeout(5, connect=0.3))
        assert isinstance(caught.value.__cause__, client.RequestTimeout)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _silent(sock: socket.socket, core: ApplicationConnection) -> None:
    read_request(sock, core)
    time.sleep(1.5)  # never answers in time


def _cut_short(sock: socket.socket, core: ApplicationConnection) -> None:
    read_request(sock, core)
    sock.sendall(records.pack_stream(RecordType.STDOUT, 1, b"Status: 200 OK\r\n\r\n" + b"x" * 70_000))
    time.sleep(0.1)  # then closes without END_REQUEST


def _overloaded(sock: socket.socket, core: ApplicationConnection) -> None:
    read_request(sock, core)
    sock.sendall(records.pack_end_request(1, 0, ProtocolStatus.OVERLOADED))


def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    with fake_server(_silent) as fake:
        with httpx.Client(transport=FastCGITransport(fake.address, root="/srv"), timeout=0.3) as http:
            start = time.monotonic()
            with pytest.raises(httpx.ReadTimeout, match=r"timed out after 0\.3 s waiting to read") as caught:
                http.get("http://app.local/")
            assert time.monotonic() - start < 1.2
            assert isinstance(caught.value.__cause__, client.RequestTimeout)

        async def scenario() -> None:
            transport = AsyncFastCGITransport(fake.address, root="/srv", multiplex=False)
            async with httpx.AsyncClient(transport=transport, timeout=0.3) as http:
                with pytest.raises(httpx.ReadTimeout, match="waiting to read"):
                    await http.get("http://app.local/")

        asyncio.run(scenario())


def test_a_server_closing_mid_response_is_a_remote_protocol_error() -> None:
    with fake_server(_cut_short) as fake:
        with httpx.Client(transport=FastCGITransport(fake.address, root="/srv")) as http:
            with http.stream("GET", "http://app.local/") as response:
                assert response.status_code == 200
                with pytest.raises(httpx.RemoteProtocolError, match="closed the connection before END_REQUEST") \
                        as caught:
                    response.read()
            assert isinstance(caught.value.__cause__, client.ConnectionClosed)

        async def scenario() -> None:
            transport = AsyncFastCGITransport(fake.address, root="/srv", multiplex=False)
            async with httpx.AsyncClient(transport=transport) as http:
                with pytest.raises(httpx.RemoteProtocolError, match="before END_REQUEST"):
                    await http.get("http://app.local/")

        asyncio.run(scenario())


def test_a_refusal_is_a_remote_protocol_error() -> None:
    with fake_server(_overloaded) as fake, \
            httpx.Client(transport=FastCGITransport(fake.address, root="/srv")) as http, \
            pytest.raises(httpx.RemoteProtocolError, match=r"refused the request: FCGI_OVERLOADED \(the "
                                                           "FastCGI application did not run the request") as caught:
        http.get("http://app.local/")
    assert isinstance(caught.value.__cause__, client.Overloaded)

