"""--status-bind: the master answers status and ping itself, from the scoreboard.

A real server (-w 1 --sync) whose only worker is held by a slow request: the status page
asked at --status-bind (TCP and unix:) answers within a second and shows that worker busy
with that request, the ping path answers "pong", and the worker's own listener is not
involved. Asked with the project's client. And its limits: a request too large, a connection past the cap,
an idle connection (the loop in this process, with short timeouts); a request trickled in
a byte at a time, and a second one on the kept-alive connection.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RawConnection, free_port, request_in_thread, run_fcgibridge, wait_until

from fcgibridge.client import FastCGIClient, FastCGIError, Response
from fcgibridge.config import Config
from fcgibridge.process import status_listener
from fcgibridge.process.scoreboard import for_workers
from fcgibridge.process.status_listener import MAX_CONNECTIONS, MAX_REQUEST_SIZE, StatusServer

APP = "tests.apps.pm_app:app"


def ask(address: str, path: str) -> tuple[Response, float]:
    began = time.monotonic()
    with FastCGIClient(address, timeout=5) as client:
        response = client.request("GET", path)
    return response, time.monotonic() - began


def check_status_while_busy(address: str, status_address: str) -> None:
    thread, result = request_in_thread(address, "/slow?s=4")
    try:
        def busy() -> bool:
            report = json.loads(ask(status_address, "/status?json")[0].body)
            return bool(report["workers"]) and report["workers"][0]["state"] == "busy"

        wait_until(busy, 10, "the worker busy on the status page")
        response, took = ask(status_address, "/anything?json")
        assert response.status == 200 and took < 1.0, (response, took)
        report = json.loads(response.body)
        assert report["active_workers"] == 1 and report["in_flight_requests"] == 1, report
        assert report["workers"][0]["request_uri"].startswith("/slow"), report
        text, took = ask(status_address, "/")
        assert took < 1.0 and b"active_workers" in text.body, text
        metrics, _ = ask(status_address, "/status?prometheus")
        assert b"fcgibridge_in_flight_requests 1" in metrics.body, metrics.body
        pong, took = ask(status_address, "/ping")
        assert pong.body == b"pong\n" and took < 1.0, (pong, took)
        assert result == []  # the slow request is still running
    finally:
        thread.join(15)
    assert isinstance(result[0], Response) and result[0].status == 200, result


def test_status_bind_tcp_answers_while_the_only_worker_is_busy() -> None:
    address, status_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "1", "--sync", "--status-bind", status_address,
                        "--ping-path", "/ping", address=address):
        check_status_while_busy(address, status_address)


def test_status_bind_unix_answers_while_the_only_worker_is_busy(tmp_path: Path) -> None:
    address, status_path = f"127.0.0.1:{free_port()}", tmp_path / "status.sock"
    with run_fcgibridge(APP, "-b", address, "-w", "1", "--sync", "--status-bind", f"unix:{status_path}",
                        "--ping-path", "/ping", address=address) as proc:
        wait_until(status_path.exists, 10, "the status socket")
        check_status_while_busy(address, f"unix:{status_path}")
        proc.terminate()
        assert proc.wait(15) == 0
    assert not status_path.exists()  # removed as the master stopped


def test_status_listener_caps_connections_and_request_size() -> None:
    address, status_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    host, port = status_address.rsplit(":", 1)
    with run_fcgibridge(APP, "-b", address, "-w", "1", "--status-bind", status_address, address=address):
        assert ask(status_address, "/")[0].status == 200
        # One request larger than MAX_REQUEST_SIZE: the connection is closed, nothing answered.
        with pytest.raises((OSError, FastCGIError)), FastCGIClient(status_address, timeout=5) as client:
            client.request("GET", "/", headers={"X-Big": "a" * (MAX_REQUEST_SIZE + 1000)})
        # MAX_CONNECTIONS open: one more is closed as it arrives.
        held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(MAX_CONNECTIONS)]
        try:
            wait_until(lambda: ask_would_be_refused(host, int(port)), 10, "the connection past the cap closed")
        finally:
            for sock in held:
                sock.close()
        # Once it has seen those close, it serves on.
        wait_until(lambda: not ask_would_be_refused(host, int(port), 0.3), 10, "room again")
        response, took = ask(status_address, "/?json")
        assert response.status == 200 and took < 1.0


def ask_would_be_refused(host: str, port: int, wait: float = 2.0) -> bool:
    """A new connection is closed by the listener at once (EOF before any request)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.settimeout(wait)
        try:
            return sock.recv(1) == b""
        except TimeoutError:
            return False


@pytest.fixture
def status_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[StatusServer, str]]:
    """The listener's loop in this process, on a free port, with short timeouts."""
    monkeypatch.setattr(status_listener, "IDLE_TIMEOUT", 0.3)
    monkeypatch.setattr(status_listener, "POLL_INTERVAL", 0.05)
    board = for_workers(1)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    server = StatusServer(sock, Config(app="test", ping_path="/ping"), board)
    server.start()
    try:
        yield server, f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.stop()


def test_idle_connections_are_closed(status_server: tuple[StatusServer, str]) -> None:
    server, address = status_server
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        began = time.monotonic()
        assert sock.recv(1) == b""  # closed by the listener, having sent nothing
        assert time.monotonic() - began < 3
    wait_until(lambda: not server.connections, 5, "the connection forgotten")


def test_a_request_sent_a_byte_at_a_time_is_answered(status_server: tuple[StatusServer, str]) -> None:
    from fcgibridge.client import build_params

    _, address = status_server
    with RawConnection(address) as conn:
        request_id, data = conn.core.begin_request(build_params("GET", "/ping"), keep_conn=True)
        conn.stdout[request_id] = bytearray()
        for byte in data + conn.core.end_stdin(request_id):
            conn.sock.send(bytes([byte]))
        assert conn.wait_end(request_id).app_status == 0
        head, body = conn.response(request_id)
        assert head.status == 200 and body == b"pong\n"
        # Kept alive: a second request on the same connection, the status page as JSON.
        second = conn.begin("GET", "/?json", body=b"")
        conn.wait_end(second)
        assert json.loads(conn.response(second)[1])["total_workers"] == 0



def test_a_client_that_never_reads_costs_one_answer_and_is_closed(
        status_server: tuple[StatusServer, str]) -> None:
    """Requests sent one after another, paced so each is answered on its own, on a
    connection whose answers are never read: the listener reads nothing more while an
    answer waits, so its buffer holds about one answer, not one per request (the kernel's
    buffers full, that grew without bound), and it closes the connection once the exchange
    has taken IDLE_TIMEOUT (each request sent had kept it open)."""
    from fcgibridge.client import build_params
    from fcgibridge.protocol import ClientConnection

    server, address = status_server
    for _ in range(16):  # 16 workers on the page: an answer of some KiB
        assert server.board.claim() is not None
    host, port = address.rsplit(":", 1)
    core = ClientConnection()
    most = 0
    closed = False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.settimeout(5)
        sock.connect((host, int(port)))
        sock.settimeout(0.05)
        began = time.monotonic()
        while time.monotonic() - began < 4:
            request_id, data = core.begin_request(build_params("GET", "/?json"), keep_conn=True)
            try:
                sock.sendall(data + core.end_stdin(request_id))
            except TimeoutError:
                pass
            except OSError:  # reset by the listener
                closed = True
                break
            most = max(most, max((len(c.outgoing) for c in list(server.connections.values())), default=0))
            time.sleep(0.002)
        closed = closed or not server.connections
    assert most < 256 * 1024, f"{most} bytes of answers kept for a client that reads none"
    assert closed, "the connection that never reads is still open"


def test_a_request_trickled_past_the_timeout_is_closed(status_server: tuple[StatusServer, str]) -> None:
    """A params record of 1000 bytes sent a byte every 0.1 s (IDLE_TIMEOUT 0.3 s here):
    closed in about IDLE_TIMEOUT though bytes keep coming."""
    from recordkit import begin

    from fcgibridge.protocol import RecordType, pack_record

    _, address = status_server
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(begin(1, keep_conn=True) + pack_record(RecordType.PARAMS, 1, bytes(1000))[:8])
        began = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - began < 5:
                time.sleep(0.1)
                sock.sendall(b"\x00")
        assert time.monotonic() - began < 3


def test_connections_past_the_cap_are_refused_with_one_warning(status_server: tuple[StatusServer, str],
                                                               caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_CONNECTIONS held, then 50 more in a loop: each is closed at once, one warning
    is logged for all of them (one per connection had flooded the log), and a request is served
    again once the held ones close."""
    monkeypatch.setattr(status_listener, "IDLE_TIMEOUT", 30.0)  # the held ones stay
    server, address = status_server
    host, port = address.rsplit(":", 1)
    held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        wait_until(lambda: len(server.connections) == MAX_CONNECTIONS, 5, "the cap reached")
        with caplog.at_level("WARNING", logger="fcgibridge.server"):
            for _ in range(50):
                with socket.create_connection((host, int(port)), timeout=5) as extra:
                    assert extra.recv(1) == b""
        assert sum("refused a connection" in r.getMessage() for r in caplog.records) == 1, caplog.text
        assert server.refused == 50
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: not server.connections, 5, "the held connections gone")
    response, _ = ask(address, "/?json")
    assert response.status == 200


def test_status_bind_refuses_peers_the_allow_list_leaves_out() -> None:
    """--allow-from names another address: the status listener, like the workers, closes a
    connection from 127.0.0.1 without an answer (the page shows the URIs in flight), and
    says so once in the log; FCGI_WEB_SERVER_ADDRS allowing it, it answers."""
    from support import process_log

    address, status_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    host, port = status_address.rsplit(":", 1)
    with run_fcgibridge(APP, "-b", address, "-w", "1", "--status-bind", status_address, "--allow-from", "10.9.8.7",
                        address=address) as proc:
        wait_until(lambda: ask_would_be_refused(host, int(port)), 10, "the status listener refusing")
        with pytest.raises((OSError, FastCGIError)):
            ask(status_address, "/?json")
        assert "status listener: refused a connection from 127.0.0.1" in process_log(proc)
    address, status_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "1", "--status-bind", status_address, address=address,
                        env={"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}):
        wait_until(lambda: _answers(status_address), 10, "the status listener answering")


def _answers(address: str) -> bool:
    try:
        return ask(address, "/?json")[0].status == 200
    except (OSError, FastCGIError):
        return False
