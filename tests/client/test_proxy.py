"""The proxy apps: a PHP app mounted in Starlette (examples/php_proxy) served by uvicorn
against a real PHP-FPM, and the ASGI/WSGI proxies driven in-process for their options
and their 502/504 answers."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from phpfpm import PHP_DIR, PhpFpm, php_fpm
from support import ROOT, free_port, stop_process, wait_for_port

from fcgibridge.proxy import FastCGIProxy, WSGIFastCGIProxy

EXAMPLE_PHP = ROOT / "examples" / "php_proxy" / "php"


@pytest.fixture(scope="module")
def fpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhpFpm]:
    with php_fpm(tmp_path_factory.mktemp("fpm")) as running:
        yield running


@pytest.fixture(scope="module")
def uvicorn_app(fpm: PhpFpm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example app under a real uvicorn process; yields HOST:PORT."""
    port = free_port()
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PHP_FPM": fpm.unix, "PHP_TIMEOUT": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "examples.php_proxy.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(f"127.0.0.1:{port}", proc=proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log.read_text()}") from None
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def fetch(address: str, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------- through uvicorn


def test_python_and_php_side_by_side(uvicorn_app: str) -> None:
    assert fetch(uvicorn_app, "GET", "/")[2].startswith(b"Hello from Starlette")
    status, response, body = fetch(uvicorn_app, "GET", "/php/hello?name=proxy")
    assert (status, body) == (200, b"Hello from PHP 8, proxy")
    assert response.getheader("content-type") == "text/plain;charset=UTF-8"


def test_form_post(uvicorn_app: str) -> None:
    status, _, body = fetch(uvicorn_app, "POST", "/php/form", body=b"name=Ada",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"posted Ada")


def test_upload_streamed_through(uvicorn_app: str) -> None:
    data = os.urandom(5 * 1024 * 1024)
    pieces = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    status, _, body = fetch(uvicorn_app, "POST", "/php/upload", body=pieces,
                           headers={"Content-Length": str(len(data))})
    assert (status, body.decode()) == (200, f"{len(data)} {hashlib.sha256(data).hexdigest()}")


def test_chunked_upload_gets_a_content_length(uvicorn_app: str) -> None:
    data = os.urandom(3 * 1024 * 1024)
    host, port = uvicorn_app.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        conn.request("POST", "/php/upload", body=(data[i : i + 50_000] for i in range(0, len(data), 50_000)),
                     encode_chunked=True)
        response = conn.getresponse()
        assert response.read().decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    finally:
        conn.close()


def test_large_response(uvicorn_app: str) -> None:
    status, _, body = fetch(uvicorn_app, "GET", "/php/big")
    assert (status, body) == (200, b"x" * (64 * 65536))


def test_redirect_and_not_found(uvicorn_app: str) -> None:
    status, response, _ = fetch(uvicorn_app, "GET", "/php/go")
    assert (status, response.getheader("location")) == (302, "/hello")
    status, _, body = fetch(uvicorn_app, "GET", "/php/nothing/here")
    assert (status, body) == (404, b"no page at /nothing/here")


def test_slow_backend_is_504(uvicorn_app: str) -> None:
    status, _, body = fetch(uvicorn_app, "GET", "/php/slow")
    assert (status, body) == (504, b"Gateway Timeout\n")
    assert fetch(uvicorn_app, "GET", "/php/hello")[0] == 200  # the proxy still serves


# ------------------------------------------------------------------ in-process


async def call_asgi(app: Any, path: str, *, method: str = "GET", body: bytes = b"", root_path: str = "",
                    headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict[str, str], bytes]:
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": root_path + raw_path, "root_path": root_path, "query_string": query.encode(),
             "headers": headers or [(b"host", b"example.test")], "client": ("10.0.0.7", 5555),
             "server": ("127.0.0.1", 8000)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], head, b"".join(m.get("body", b"") for m in sent[1:])


def test_asgi_split_path_info_and_params(fpm: PhpFpm, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        proxy = FastCGIProxy(fpm.tcp, document_root=str(PHP_DIR), params={"APP_ENV": "test"})
        try:
            status, _, body = await call_asgi(proxy, "/info.php/extra/path?q=1", root_path="/legacy")
            info = json.loads(body)
            assert status == 200
            assert (info["script_name"], info["path_info"]) == ("/legacy/info.php", "/extra/path")
            assert info["script"] == str(PHP_DIR / "info.php")
            assert info["query"] == {"q": "1"} and info["uri"] == "/legacy/info.php/extra/path?q=1"
            with caplog.at_level(logging.WARNING, "fcgibridge.proxy"):
                status, _, body = await call_asgi(proxy, "/stderr.php")
            assert (status, body) == (200, b"logged")
            assert "GET /stderr.php: backend stderr: PHP message: fcgibridge test: something to log" in caplog.text
        finally:
            await proxy.aclose()

    asyncio.run(scenario())


def test_asgi_unreachable_backend_is_502(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proxy = FastCGIProxy(f"unix:{tmp_path}/none.sock", document_root=str(PHP_DIR))
    with caplog.at_level(logging.ERROR, "fcgibridge.proxy"):
        status, _, body = asyncio.run(call_asgi(proxy, "/info.php"))
    assert (status, body) == (502, b"Bad Gateway\n")
    assert "GET /info.php -> 502" in caplog.text and "cannot connect" in caplog.text


def test_wsgi_proxy(fpm: PhpFpm, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from werkzeug.test import Client

    proxy = WSGIFastCGIProxy(fpm.unix, document_root=str(EXAMPLE_PHP), script_filename="index.php", timeout=1)
    client = Client(proxy)
    try:
        response = client.get("/hello", query_string={"name": "wsgi"})
        assert (response.status_code, response.data) == (200, b"Hello from PHP 8, wsgi")
        data = os.urandom(300_000)
        response = client.post("/upload", data=data, content_type="application/octet-stream")
        assert response.data.decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
        response = client.post("/form", data={"name": "Flask"})
        assert response.data == b"posted Flask"
        response = client.get("/go")
        assert (response.status_code, response.headers["Location"]) == (302, "/hello")
        with caplog.at_level(logging.ERROR, "fcgibridge.proxy"):
            response = client.get("/slow")
        assert response.status_code == 504 and "-> 504" in caplog.text
    finally:
        proxy.close()
    logs = WSGIFastCGIProxy(fpm.unix, document_root=str(PHP_DIR))
    try:
        with caplog.at_level(logging.WARNING, "fcgibridge.proxy"):
            assert Client(logs).get("/stderr.php", buffered=True).data == b"logged"
        assert "GET /stderr.php: backend stderr: PHP message: fcgibridge test" in caplog.text
    finally:
        logs.close()
    dead = WSGIFastCGIProxy(f"unix:{tmp_path}/none.sock", document_root=str(EXAMPLE_PHP))
    assert Client(dead).get("/x.php").status_code == 502


class _Unreadable(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the proxy read a body that has no length and no end")


def test_wsgi_body_without_length(fpm: PhpFpm) -> None:
    proxy = WSGIFastCGIProxy(fpm.unix, document_root=str(EXAMPLE_PHP), script_filename="index.php")
    statuses: list[str] = []

    def call(environ: dict[str, Any]) -> bytes:
        base = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/upload", "QUERY_STRING": "",
                "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
        body = proxy({**base, **environ}, lambda status, headers: statuses.append(status))
        try:
            return b"".join(body)
        finally:
            body.close()  # type: ignore[attr-defined]

    data = os.urandom(200_000)
    try:
        # a terminated input (chunked upload): spooled, and sent with its CONTENT_LENGTH
        answer = call({"wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True})
        assert answer.decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
        # neither a length nor an end: not read at all (a read could wait forever)
        assert call({"wsgi.input": _Unreadable()}) == f"0 {hashlib.sha256(b'').hexdigest()}".encode()
        assert statuses == ["200 OK", "200 OK"]
    finally:
        proxy.close()
