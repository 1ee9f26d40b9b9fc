"""The real CLI as real processes: workers, signals, boot failures, sockets left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import (
    ROOT,
    RawConnection,
    children_of,
    fcgibridge_command,
    free_port,
    process_log,
    request_in_thread,
    run_fcgibridge,
    serve,
    stop_process,
    wait_for_port,
)

from fcgibridge.client import ConnectionClosed, FastCGIClient, Response

SLOW_APP = "tests.apps.slow_app:app"


@pytest.mark.usefixtures("reaping")
@pytest.mark.parametrize("sig", [signal.SIGTERM])  # INT and QUIT stop fast: tests/process/test_supervisor.py
def test_workers_finish_the_request_in_flight_then_all_exit(sig: signal.Signals) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(SLOW_APP, "-b", address, "-w", "2", address=address) as proc:
        deadline = time.monotonic() + 10
        while len(children_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = children_of(proc.pid)
        assert len(workers) == 2
        pids = {FastCGIClient(address).request("GET", "/pid").body for _ in range(20)}
        assert pids <= {str(pid).encode() for pid in workers}

        thread, result = request_in_thread(address, "/slow?s=1.5")
        time.sleep(0.5)  # the request is in the app now
        proc.send_signal(sig)
        thread.join(20)
        assert proc.wait(20) == 0
        stderr = process_log(proc)
    assert isinstance(result[0], Response), result
    assert result[0].status == 200 and result[0].body.startswith(b"slept 1.5")
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert "Traceback" not in stderr


def test_a_broken_app_fails_once_with_one_line_when_there_are_many_workers() -> None:
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(fcgibridge_command("tests.apps.no_such_module:app", "-b", address, "-w", "3"),
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=30)
    errors = [line for line in proc.stderr.decode().splitlines() if "error:" in line]
    assert proc.returncode == 2
    assert len(errors) == 1 and "no_such_module" in errors[0]
    assert "Traceback" not in proc.stderr.decode()


@pytest.mark.usefixtures("reaping")
def test_a_crashed_worker_is_replaced() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(SLOW_APP, "-b", address, "-w", "2", address=address) as proc:
        deadline = time.monotonic() + 10
        while len(children_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = min(children_of(proc.pid))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (victim in children_of(proc.pid) or len(children_of(proc.pid)) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert victim not in children_of(proc.pid) and len(children_of(proc.pid)) == 2
        assert FastCGIClient(address).request("GET", "/pid").status == 200


def test_unix_socket_file_is_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    address = f"unix:{path}"
    with run_fcgibridge(SLOW_APP, "-b", address, "-w", "2", address=address) as proc:
        assert FastCGIClient(address).request("GET", "/pid").status == 200
        assert (path.stat().st_mode & 0o777) == 0o660
        stop_process(proc)
        assert proc.returncode == 0
    assert not path.exists()


def test_serves_on_fd0_when_started_like_spawn_fcgi(tmp_path: Path) -> None:
    import socket

    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    proc = subprocess.Popen(fcgibridge_command(SLOW_APP), stdin=listener.fileno(), cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    listener.close()
    try:
        wait_for_port(f"127.0.0.1:{port}", proc=proc)
        response = FastCGIClient(f"127.0.0.1:{port}").request("GET", "/pid")
        assert response.body == str(proc.pid).encode()
    finally:
        stop_process(proc)
    assert proc.returncode == 0


@pytest.mark.parametrize(("allowed", "served"), [("127.0.0.2", False), ("10.9.8.7, 127.0.0.1", True)])
def test_fcgi_web_server_addrs_restricts_tcp_peers(allowed: str, served: bool) -> None:
    """Spec 3.2: with FCGI_WEB_SERVER_ADDRS set, connections from other addresses are closed."""
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(SLOW_APP, "-b", address, address=address, env={"FCGI_WEB_SERVER_ADDRS": allowed}) as proc:
        client = FastCGIClient(address, timeout=5)
        if served:
            assert client.request("GET", "/pid").status == 200
        else:
            with pytest.raises(ConnectionClosed):
                client.request("GET", "/pid")
            assert "not in FCGI_WEB_SERVER_ADDRS" in process_log(proc)


def _held_app(release: threading.Event) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/hold":
            release.wait(10)
        start_response("200 OK", [])
        return [b"ok"]

    return app


def _refused(address: str) -> bool:
    with RawConnection(address) as newcomer:
        with contextlib.suppress(OSError):
            newcomer.begin("GET", "/", body=b"")
        try:
            newcomer.wait_closed(timeout=5)
        except ConnectionResetError:
            newcomer.closed = True  # refused with a reset: just as closed
        return newcomer.closed and not newcomer.ended


def test_past_max_connections_an_idle_connection_makes_room_and_busy_ones_refuse() -> None:
    release = threading.Event()
    with serve(_held_app(release), max_connections=2) as server:
        first, second = RawConnection(server.address), RawConnection(server.address)
        with first, second:
            first.wait_end(first.begin("GET", "/", body=b""))
            second.wait_end(second.begin("GET", "/", body=b""))
            with RawConnection(server.address) as third:  # both idle: one of them is closed for it
                assert third.wait_end(third.begin("GET", "/", body=b"")).protocol_status == 0
                idle = [conn for conn in (first, second) if _closed_soon(conn)]
                assert len(idle) == 1
                busy = second if idle == [first] else first
                held = [third.begin("GET", "/hold", body=b""), busy.begin("GET", "/hold", body=b"")]
                time.sleep(0.2)
                assert _refused(server.address)  # every connection has a request in flight
                release.set()
                assert third.wait_end(held[0]).protocol_status == 0
                assert busy.wait_end(held[1]).protocol_status == 0
        assert FastCGIClient(server.address).request("GET", "/").body == b"ok"


def _closed_soon(conn: RawConnection) -> bool:
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        conn.wait_closed(timeout=1)
    return conn.closed
