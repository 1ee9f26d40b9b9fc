"""sd_notify on a real server process: a unix datagram socket under tmp_path stands in for
systemd's ``$NOTIFY_SOCKET``.

Under a supervisor (-w 2): READY=1, a STATUS= line with the scoreboard's counts,
WATCHDOG=1 every half ``$WATCHDOG_USEC``, RELOADING=1 then READY=1 (with
MONOTONIC_USEC) around SIGHUP, STOPPING=1 on SIGTERM. In a single process: READY=1 and
STOPPING=1, as the stop begins (a request in flight still runs). A ``$WATCHDOG_PID``
naming another process turns the watchdog off.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, run_fcgibridge

from fcgibridge.client import FastCGIClient

APP = "tests.apps.pm_app:app"


class NotifySocket:
    """What systemd would receive: every datagram, with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[tuple[float, str]] = []

    def wait_for(self, prefix: str, timeout: float = 10.0) -> str:
        """The next message holding a line starting with ``prefix`` (earlier ones are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} within {timeout:g} s; got {[m for _, m in self.seen]}")
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.seen.append((time.monotonic(), message))
            if any(line.startswith(prefix) for line in message.splitlines()):
                return message

    def collect(self, seconds: float) -> list[str]:
        """Every message arriving within ``seconds``."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return got


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        yield sock
    finally:
        sock.sock.close()


def test_supervisor_notifies_ready_status_watchdog_reload_and_stop(notify: NotifySocket) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--status-path", "/status", address=address,
                        env=env) as proc:
        notify.wait_for("READY=1")
        FastCGIClient(address, timeout=10).request("GET", "/pid")
        status = notify.wait_for("STATUS=2 workers", timeout=5)
        assert "requests served" in status and "in flight" in status, status

        got = notify.collect(1.6)
        pets = sum(message == "WATCHDOG=1" for message in got)
        assert 5 <= pets <= 10, got  # every 0.2 s: 8 in 1.6 s

        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")
        assert "MONOTONIC_USEC=" in reloading
        ready = notify.wait_for("READY=1", timeout=15)
        usec = dict(line.split("=", 1) for line in ready.splitlines())["MONOTONIC_USEC"]
        assert int(usec) > int(dict(line.split("=", 1) for line in reloading.splitlines())["MONOTONIC_USEC"])

        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(15) == 0


def test_single_process_notifies_ready_and_stopping(notify: NotifySocket) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    with run_fcgibridge(APP, "-b", address, address=address, env=env) as proc:
        assert notify.wait_for("READY=1") == "READY=1"
        assert "WATCHDOG=1" in notify.collect(0.5)
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(15) == 0


def test_single_process_says_stopping_as_the_stop_begins(notify: NotifySocket) -> None:
    """SIGTERM while a 3 s request runs: STOPPING=1 comes at once, not after the request
    has finished (systemd shows "deactivating" for the whole graceful stop)."""
    from support import request_in_thread

    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, address=address, env={"NOTIFY_SOCKET": str(notify.path)}) as proc:
        notify.wait_for("READY=1")
        thread, result = request_in_thread(address, "/slow?s=3")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        notify.wait_for("STOPPING=1")
        assert time.monotonic() - began < 1.5 and result == [], "STOPPING=1 only once the request ended"
        thread.join(15)
        assert proc.wait(15) == 0
    assert result and result[0].status == 200, result  # the request in flight was finished
    assert [m for _, m in notify.seen].count("STOPPING=1") == 1


def test_single_process_watchdog_stops_while_its_loop_is_blocked(notify: NotifySocket) -> None:
    """--sync: a 6 s request holds the one process's event loop. WATCHDOG=1 (every 0.2 s)
    stops within STALL_AFTER (3 s), so systemd would see the hang; it had gone on, from a
    thread that knew nothing of the loop. Once the request ends, it pets again."""
    from support import request_in_thread

    address = f"127.0.0.1:{free_port()}"
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    with run_fcgibridge(APP, "-b", address, "--sync", address=address, env=env):
        notify.wait_for("READY=1")
        assert "WATCHDOG=1" in notify.collect(0.5)
        thread, result = request_in_thread(address, "/slow?s=6")
        began = time.monotonic()
        pets = []  # when each WATCHDOG=1 came, read as it comes
        while time.monotonic() - began < 5:
            pets += [time.monotonic() - began for message in notify.collect(0.05) if message == "WATCHDOG=1"]
        assert pets and not [t for t in pets if 3.6 < t < 5], f"petted while the loop was blocked: {pets}"
        thread.join(15)
        assert result and result[0].status == 200, result
        assert "WATCHDOG=1" in notify.collect(1.0)


def test_watchdog_pid_of_another_process_means_no_watchdog(notify: NotifySocket) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    with run_fcgibridge(APP, "-b", address, "-w", "2", address=address, env=env):
        notify.wait_for("READY=1")
        got = notify.collect(0.6)
    assert "WATCHDOG=1" not in got and all(message != "WATCHDOG=1" for _, message in notify.seen), got
