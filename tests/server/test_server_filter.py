"""Through real sockets: ABORT_REQUEST at every point of a request, and the FILTER
role's data stream (``environ["fcgi.data"]``, ``scope["extensions"]["fcgi.data"]``),
driven by the project's client and by a hand-driven client-role connection."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RecordingConnection, serve

from fcgibridge.client import AsyncFastCGIClient, FastCGIClient
from fcgibridge.config import Config
from fcgibridge.protocol import ProtocolStatus, RecordType, Role, pack_record, records

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]

TIMEOUT = 5.0
TEXT = [("Content-Type", "text/plain")]


def wait(event: threading.Event, what: str) -> None:
    assert event.wait(TIMEOUT), f"timed out waiting for {what}"


def abort_record(request_id: int) -> bytes:
    return pack_record(RecordType.ABORT_REQUEST, request_id)


def plain_wsgi(called: threading.Event) -> Callable[[Environ, StartResponse], list[bytes]]:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        called.set()
        start_response("200 OK", TEXT)
        return [environ["wsgi.input"].read()]

    return app


def plain_asgi(called: threading.Event) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.set()
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    return app


APPS = {"wsgi": plain_wsgi, "asgi3": plain_asgi}


# ----------------------------------------------------------- ABORT_REQUEST, any time


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_abort_before_params_ended_gets_end_request_and_close(interface: str) -> None:
    """A black-box finding: BEGIN_REQUEST, part of PARAMS, ABORT_REQUEST got no answer
    and no close. Spec 5.4: every request ends with END_REQUEST."""
    called = threading.Event()
    with serve(APPS[interface](called), interface, lifespan="off") as server, \
            RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        encoded = records.encode_pairs({"REQUEST_METHOD": "GET", "REQUEST_URI": "/never"})
        conn.send_raw(records.pack_begin_request(1, Role.RESPONDER, False)
                      + pack_record(RecordType.PARAMS, 1, encoded[:9]) + abort_record(1))
        conn.wait_closed(timeout=3.0)
        found = conn.records()
        assert [(r.type, r.request_id) for r in found] == [(RecordType.END_REQUEST, 1)]
        assert records.parse_end_request(found[0].content) == (1, ProtocolStatus.REQUEST_COMPLETE)
    assert not called.is_set()


def test_abort_before_params_ended_with_keep_conn_keeps_the_connection() -> None:
    called = threading.Event()
    with serve(plain_wsgi(called)) as server, RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        conn.send_raw(records.pack_begin_request(1, Role.RESPONDER, True) + abort_record(1))
        conn.wait_for(lambda: len(conn.records(whole=False)) == 1, timeout=3.0)
        assert records.parse_end_request(conn.records()[0].content) == (1, ProtocolStatus.REQUEST_COMPLETE)
        conn.core = type(conn.core)()  # that request never went through the client core
        request_id = conn.begin("POST", "/", body=b"next one")
        conn.wait_end(request_id)
        assert conn.response(request_id)[1] == b"next one"
        assert not conn.closed


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_abort_during_the_body_before_the_app_read_it(interface: str) -> None:
    called = threading.Event()
    with serve(APPS[interface](called), interface, lifespan="off") as server, \
            RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        request_id = conn.begin("POST", "/", headers=(("Content-Length", "100"),), keep_conn=False)
        conn.send_stdin(request_id, b"x" * 10)
        conn.abort(request_id)
        ended = conn.wait_end(request_id, timeout=3.0)
        assert (ended.app_status, ended.protocol_status) == (1, ProtocolStatus.REQUEST_COMPLETE)
        assert bytes(conn.stdout[request_id]) == b""
        conn.wait_closed(timeout=3.0)


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_abort_while_the_app_waits_for_the_body(interface: str) -> None:
    """The app has started and waits for more body than will come."""
    started = threading.Event()

    def wsgi(environ: Environ, start_response: StartResponse) -> list[bytes]:
        started.set()
        environ["wsgi.input"].read()
        start_response("200 OK", TEXT)
        return [b"unreachable"]

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        while (await receive())["type"] == "http.request":
            pass

    app = wsgi if interface == "wsgi" else asgi
    options: dict[str, Any] = {"lifespan": "off"}
    if "request_buffering" in {f.name for f in dataclasses.fields(Config)}:
        options["request_buffering"] = False  # the WSGI call starts before its body is in
    with serve(app, interface, **options) as server, RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        request_id = conn.begin("POST", "/", headers=(("Content-Length", "100"),), keep_conn=False)
        conn.send_stdin(request_id, b"x" * 10)
        wait(started, "the app to start")
        conn.abort(request_id)
        ended = conn.wait_end(request_id, timeout=3.0)
        assert (ended.app_status, ended.protocol_status) == (1, ProtocolStatus.REQUEST_COMPLETE)
        conn.wait_closed(timeout=3.0)


# ------------------------------------------------------------------ the FILTER role


def wsgi_filter(seen: list[Environ]) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """Answers the body, then the data stream upper-cased, a line at a time."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", TEXT)
        yield environ["wsgi.input"].read() + b"|"
        data = environ.get("fcgi.data")
        if data is None:
            yield b"no data"
            return
        for line in data:
            yield line.upper()

    return app


def asgi_filter(seen: list[dict[str, Any]]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body + b"|", "more_body": True})
        data = scope["extensions"].get("fcgi.data")
        if data is None:
            await send({"type": "http.response.body", "body": b"no data"})
            return
        while True:
            message = await data.receive()
            assert message["type"] == "fcgi.data"
            await send({"type": "http.response.body", "body": message["body"].upper(), "more_body": True})
            if not message["more_body"]:
                break
        await send({"type": "http.response.body", "body": b""})

    return app


def filter_app(interface: str, seen: list[Any]) -> Any:
    return wsgi_filter(seen) if interface == "wsgi" else asgi_filter(seen)


@pytest.mark.parametrize(("interface", "options"), [
    ("wsgi", {}), ("wsgi", {"sync": True}), ("wsgi", {"inline": "auto"}), ("asgi3", {})])
def test_filter_gets_body_then_data(interface: str, options: dict[str, Any]) -> None:
    """In every WSGI mode too: a FILTER call never runs inline, where its app would wait
    for data on the one thread that reads it."""
    seen: list[Any] = []
    with serve(filter_app(interface, seen), interface, lifespan="off", **options) as server:
        client = FastCGIClient(server.address, timeout=TIMEOUT)
        response = client.request("POST", "/page.html", body=b"form", data=b"line one\nline two\n")
        assert response.status == 200
        assert response.body == b"form|LINE ONE\nLINE TWO\n"
        plain = client.request("POST", "/page.html", body=b"form")
        assert plain.body == b"form|no data"
    filtered = seen[0]
    if interface == "wsgi":
        assert filtered["FCGI_ROLE"] == "FILTER" and filtered["FCGI_DATA_LENGTH"] == "18"
        assert "fcgi.data" not in seen[1]
    else:
        assert filtered["extensions"]["fastcgi"]["role"] == "FILTER"
        data = filtered["extensions"]["fcgi.data"]
        assert data.length == 18 and data.last_modified is None
        assert "fcgi.data" not in seen[1]["extensions"]


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_filter_streams_a_large_file_through_spooling_and_backpressure(interface: str, tmp_path: Path) -> None:
    """3 MiB of data: past the WSGI spool threshold (it goes to a temporary file) and
    the ASGI queue bound (reading pauses until the app takes it)."""
    path = tmp_path / "page.html"
    content = os.urandom(3 * 1024 * 1024).replace(b"\n", b" ")
    path.write_bytes(content)
    seen: list[Any] = []
    with serve(filter_app(interface, seen), interface, lifespan="off", spool_threshold=64 * 1024) as server, \
            path.open("rb") as data:
        response = FastCGIClient(server.address, timeout=TIMEOUT).request("GET", "/page.html", data=data)
    assert response.status == 200
    assert hashlib.sha256(response.body).hexdigest() == hashlib.sha256(b"|" + content.upper()).hexdigest()
    params = seen[0] if interface == "wsgi" else seen[0]["extensions"]["fastcgi"]["params"]
    assert params["FCGI_DATA_LENGTH"] == str(len(content))
    assert params["FCGI_DATA_LAST_MOD"] == str(int(path.stat().st_mtime))


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_async_client_sends_an_async_iterable_data_stream(interface: str) -> None:
    async def pieces() -> Any:
        for word in (b"alpha\n", b"beta\n", b"gamma\n"):
            await asyncio.sleep(0)
            yield word

    async def go(address: str) -> bytes:
        async with AsyncFastCGIClient(address, timeout=TIMEOUT, multiplex=True) as client:
            first = await client.request("POST", "/", body=b"b", data=pieces())
            second = await client.request("POST", "/", body=b"c", role=Role.FILTER)  # an empty data stream
            return first.body + b"/" + second.body

    with serve(filter_app(interface, []), interface, lifespan="off") as server:
        assert asyncio.run(go(server.address)) == b"b|ALPHA\nBETA\nGAMMA\n/c|"


def test_filter_data_read_whole_by_an_asgi_app() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        data = await scope["extensions"]["fcgi.data"].read()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": data[::-1]})

    with serve(app, "asgi3", lifespan="off") as server:
        response = FastCGIClient(server.address, timeout=TIMEOUT).request(data=b"abc" * 100_000)
    assert response.body == (b"abc" * 100_000)[::-1]


def test_filter_on_a_kept_alive_connection_then_a_responder() -> None:
    with serve(wsgi_filter([])) as server, FastCGIClient(server.address, timeout=TIMEOUT, keep_alive=True) as client:
        assert client.request(data=b"x\n").body == b"|X\n"
        again = client.request("POST", body=b"y")
        assert again.body == b"y|no data" and again.reuse_count == 1


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_max_body_size_counts_a_filters_data(interface: str) -> None:
    """--max-body-size holds for the data stream too: its declared FCGI_DATA_LENGTH with
    the body refuses before the app runs; data past the limit stops the app with a 413."""
    seen: list[Any] = []
    with serve(filter_app(interface, seen), interface, lifespan="off", max_body_size=1000) as server:
        client = FastCGIClient(server.address, timeout=TIMEOUT)
        assert client.request("POST", "/", body=b"b" * 600, data=b"d" * 600).status == 413
        assert seen == []
        assert client.request("POST", "/", body=b"b" * 400, data=b"d" * 600).body == b"b" * 400 + b"|" + b"D" * 600
        with RecordingConnection(server.address, timeout=TIMEOUT) as conn:  # no FCGI_DATA_LENGTH: counted
            request_id = conn.begin(role=Role.FILTER, body=b"")
            piece = pack_record(RecordType.DATA, request_id, b"d\n" * 300)
            conn.send_raw(piece)
            conn.send_raw(piece + pack_record(RecordType.DATA, request_id))
            conn.wait_end(request_id)  # 1,200 bytes of data: past the limit
            head, body = conn.response(request_id)
            # The app is stopped: a 413 when it had sent nothing yet, else its response cut short.
            assert conn.ended[request_id].app_status == 1
            assert (head.status, body) == (413, b"Request body too large\n") or (
                head.status == 200 and body == b"|" + b"D\n" * 300), (head.status, body)


def test_filter_answered_before_its_data_arrived_drains_it() -> None:
    """The app answers without reading ``fcgi.data``; the web server's data stream is
    read to its end (Rule 4), so the next request on the connection is served."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("304 Not Modified", [])
        return []

    with serve(app) as server, RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        request_id = conn.begin(role=Role.FILTER, body=b"")
        conn.wait_end(request_id)
        conn.send_raw(pack_record(RecordType.DATA, request_id, b"x" * 60000) * 5
                      + pack_record(RecordType.DATA, request_id))
        conn.core = type(conn.core)()
        again = conn.begin(role=Role.FILTER, body=b"")
        conn.sock.sendall(conn.core.end_data(again, b"y"))
        ended = conn.wait_end(again)
        assert ended.app_status == 0 and conn.response(again)[0].status == 304


def test_filter_data_of_an_aborted_request_raises_in_the_wsgi_app() -> None:
    reading = threading.Event()
    outcome: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        reading.set()
        try:
            environ["fcgi.data"].read()
        except OSError as exc:
            outcome.append(type(exc).__name__)
        start_response("200 OK", TEXT)
        return [b""]

    with serve(app) as server, RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        request_id = conn.begin(role=Role.FILTER, body=b"", keep_conn=False)
        conn.sock.sendall(conn.core.send_data(request_id, b"part"))
        wait(reading, "the app to read the data")
        conn.abort(request_id)
        ended = conn.wait_end(request_id, timeout=3.0)
        assert ended.app_status == 1
    assert outcome == ["ClientDisconnected"]


def test_filter_data_of_an_aborted_request_is_a_disconnect_for_the_asgi_app() -> None:
    reading = threading.Event()
    outcome: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        data = scope["extensions"]["fcgi.data"]
        assert (await data.receive())["body"] == b"part"
        reading.set()
        outcome.append((await data.receive())["type"])
        try:
            await data.read()
        except OSError as exc:
            outcome.append(type(exc).__name__)

    with serve(app, "asgi3", lifespan="off") as server, RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        request_id = conn.begin(role=Role.FILTER, body=b"", keep_conn=False)
        conn.sock.sendall(conn.core.send_data(request_id, b"part"))
        wait(reading, "the app to read the data")
        conn.abort(request_id)
        ended = conn.wait_end(request_id, timeout=3.0)
        assert ended.app_status == 1
        conn.wait_closed(timeout=3.0)
    assert outcome == ["http.disconnect", "ClientDisconnected"]


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_filter_half_closed_before_its_data_ended_is_ended(interface: str) -> None:
    """The web server shuts its side after the body but before the data stream's end:
    the rest of the input never comes, so the request ends (as a body cut short does)."""
    with serve(filter_app(interface, []), interface, lifespan="off") as server, \
            RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        request_id = conn.begin(role=Role.FILTER, body=b"b", keep_conn=False)
        conn.sock.sendall(conn.core.send_data(request_id, b"part of it\n"))
        conn.sock.shutdown(socket.SHUT_WR)
        ended = conn.wait_end(request_id, timeout=3.0)
        assert ended.app_status == 1
        conn.wait_closed(timeout=3.0)


@pytest.mark.parametrize("interface", ["wsgi", "asgi3"])
def test_filter_data_that_stops_arriving_times_out_and_data_that_flows_does_not(interface: str) -> None:
    with serve(filter_app(interface, []), interface, lifespan="off", body_timeout=2) as server, \
            RecordingConnection(server.address, timeout=TIMEOUT) as stalled, \
            RecordingConnection(server.address, timeout=TIMEOUT) as flowing:
        stuck = stalled.begin(role=Role.FILTER, body=b"s")
        stalled.sock.sendall(stalled.core.send_data(stuck, b"then nothing\n"))
        slow = flowing.begin(role=Role.FILTER, body=b"f")
        started = time.monotonic()
        for _ in range(6):  # 3 s of data, a piece every half second: never 2 s without one
            flowing.sock.sendall(flowing.core.send_data(slow, b"tick\n"))
            time.sleep(0.5)
        flowing.sock.sendall(flowing.core.end_data(slow))
        flowing.wait_end(slow)
        assert flowing.response(slow)[1] == b"f|" + b"TICK\n" * 6
        assert time.monotonic() - started >= 3
        ended = stalled.wait_end(stuck, timeout=1.0)
        assert ended.app_status == 1


@pytest.mark.parametrize("options", [{}, {"sync": True}, {"inline": "auto"}], ids=["pool", "sync", "inline-auto"])
def test_wsgi_filter_whose_data_comes_after_the_body_is_not_run_inline(options: dict[str, Any]) -> None:
    """Its body is in, its data is not: run on the event loop, the app would wait for
    data that only the event loop can read."""
    with serve(wsgi_filter([]), **options) as server, RecordingConnection(server.address, timeout=TIMEOUT) as conn:
        for _ in range(60 if options.get("inline") else 1):  # inline auto: past the pool streak first
            warm = conn.begin(role=Role.FILTER, body=b"w")
            conn.sock.sendall(conn.core.end_data(warm))
            conn.wait_end(warm)
        request_id = conn.begin(role=Role.FILTER, body=b"b")
        time.sleep(0.2)  # the call is placed (its body is in) before the data comes
        conn.sock.sendall(conn.core.send_data(request_id, b"late\n") + conn.core.end_data(request_id))
        ended = conn.wait_end(request_id, timeout=3.0)
        assert ended.app_status == 0 and conn.response(request_id)[1] == b"b|LATE\n"
