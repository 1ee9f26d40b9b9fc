"""Peers that misbehave, through real sockets: a worker on 127.0.0.1 (one per test, in a
thread) serving a small WSGI or ASGI app, and a peer on the loopback that holds
connections open, stops mid-upload, never reads, or half-closes.

Each test is one way of holding a slot forever or making the server buffer without
bound; it fails without the limit or timeout that answers it (docs/security.md).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RawConnection, ServerThread, serve, wait_until

from fcgibridge.client import FastCGIClient
from fcgibridge.protocol import FCGI_MAX_CONNS, ClientConnection

Environ = dict[str, Any]
BIG = 64 * 1024 * 1024


def wsgi_app(environ: Environ, start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path == "/big":  # more than any socket buffer holds
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * (1024 * 1024) for _ in range(BIG // (1024 * 1024)))
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello" if path == "/hello" else b"got %d" % len(body)]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    if scope["path"] == "/big":
        for _ in range(BIG // (1024 * 1024)):
            await send({"type": "http.response.body", "body": b"x" * (1024 * 1024), "more_body": True})
        await send({"type": "http.response.body"})
        return
    await send({"type": "http.response.body", "body": b"hello" if scope["path"] == "/hello" else b"got %d" % len(body)})


MODES: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "wsgi": (wsgi_app, "wsgi", {}),
    "wsgi-sync": (wsgi_app, "wsgi", {"sync": True}),
    "asgi": (asgi_app, "asgi3", {}),
}


@contextlib.contextmanager
def server(mode: str, unix: Path | None = None, **options: Any) -> Iterator[ServerThread]:
    app, interface, defaults = MODES[mode]
    with serve(app, interface, unix=unix, **{**defaults, **options}) as running:
        yield running


def hello(server: ServerThread, timeout: float = 5.0) -> float:
    """GET /hello on a fresh connection; the seconds it took."""
    started = time.monotonic()
    response = FastCGIClient(server.address, timeout=timeout).request("GET", "/hello")
    assert (response.status, response.body) == (200, b"hello")
    return time.monotonic() - started


def raw_sockets(server: ServerThread, count: int) -> list[socket.socket]:
    host, port = server.address.rsplit(":", 1)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (whatever it sent first is read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


@contextlib.contextmanager
def closing_all(sockets: list[Any]) -> Iterator[list[Any]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_idle_connections_at_the_cap_do_not_lock_the_web_server_out(mode: str) -> None:
    with server(mode, max_connections=50) as running, closing_all(raw_sockets(running, 200)):
        time.sleep(0.2)  # accepted: each newcomer past 50 closed an idle one
        assert len(running.state.connections) <= 50
        assert hello(running) < 2


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_silent_and_trickling_connections_are_closed_after_the_header_timeout(mode: str) -> None:
    with server(mode, header_timeout=1) as running:
        silent = raw_sockets(running, 20)
        with closing_all(silent), RawConnection(running.address) as trickler:
            request = ClientConnection().begin_request({"REQUEST_METHOD": "GET", "REQUEST_URI": "/hello"})[1]
            started, sent = time.monotonic(), 0
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for byte in request[:-1]:  # a byte every 0.1 s, until the server closes
                    trickler.sock.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.1)
            assert 10 < sent < 40 and time.monotonic() - started < 4
            assert closed_by_server(trickler.sock, 1)
            assert all(closed_by_server(sock, 1) for sock in silent)
        assert hello(running) < 2


@pytest.mark.parametrize("mode", ["wsgi", "wsgi-sync", "asgi"])
def test_stalled_uploads_hold_no_thread(mode: str) -> None:
    """50 uploads stop half-way: fresh requests are still answered at once, and the
    stalled ones end with 408 after --body-timeout."""
    with server(mode, body_timeout=3) as running:
        uploads = [RawConnection(running.address) for _ in range(50)]
        with closing_all(uploads):
            ids = []
            for upload in uploads:
                ids.append(upload.begin("POST", "/upload", params={"CONTENT_LENGTH": "100000"}))
                upload.send_stdin(ids[-1], b"x" * 50000)
            time.sleep(0.3)
            assert hello(running) < 1.5
            for upload, request_id in zip(uploads, ids, strict=True):
                upload.wait_end(request_id, timeout=6)
                assert upload.response(request_id)[0].status == 408


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_slow_readers_of_large_responses_are_closed_after_the_send_timeout(mode: str) -> None:
    with server(mode, send_timeout=1, threads=2) as running:
        readers = [RawConnection(running.address) for _ in range(4)]
        with closing_all(readers):
            for reader in readers:
                reader.begin("GET", "/big", body=b"")
            time.sleep(0.5)  # both WSGI threads are stuck writing to peers that never read
            assert hello(running, timeout=8) < 5
            wait_until(lambda: running.state.active_requests == 0, timeout=5, what="the slow readers dropped")
            assert all(closed_by_server(reader.sock, 1) for reader in readers)


def worker_rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("mode", ["wsgi", "asgi"])
def test_a_flood_of_management_records_from_a_peer_that_never_reads_is_not_buffered(mode: str) -> None:
    query = ClientConnection().get_values([FCGI_MAX_CONNS])
    chunk = query * (1024 * 1024 // len(query))
    with server(mode) as running, closing_all(raw_sockets(running, 1)) as (sock,):
        before = worker_rss()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # and never read
        sent = 0
        sock.settimeout(2)
        with contextlib.suppress(TimeoutError):
            while sent < BIG:
                sent += sock.send(chunk)
        grown = worker_rss() - before
        assert sent < BIG // 2, f"the server read {sent} bytes of queries it could not answer"
        assert grown < 32 * 1024 * 1024
        assert hello(running) < 2


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize("mode", ["wsgi", "wsgi-sync", "asgi"])
def test_a_request_sent_whole_before_a_half_close_is_answered(mode: str, family: str, loop: str,
                                                              tmp_path: Path) -> None:
    unix = tmp_path / "s.sock" if family == "unix" else None
    with server(mode, unix=unix, loop=loop) as running, RawConnection(running.address) as peer:
        request_id = peer.begin("POST", "/upload", body=b"y" * 1000, keep_conn=False)
        peer.sock.shutdown(socket.SHUT_WR)
        ended = peer.wait_end(request_id)
        head, body = peer.response(request_id)
        assert (ended.app_status, head.status, body) == (0, 200, b"got 1000")
        peer.wait_closed()
