"""The supervisor's signals and options on real processes: INT/QUIT (fast stop), TTIN/TTOU,
USR1 (reopen logs), sd_notify, --preload, --reload."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support import ROOT, children_of, free_port, process_log, request_in_thread, run_fcgibridge, wait_until

from fcgibridge.client import FastCGIClient, Response

APP = "tests.apps.pm_app:app"


def ident(address: str, path: str = "/pid") -> dict[str, str]:
    body = FastCGIClient(address, timeout=10).request("GET", path).body.decode()
    return dict(part.split("=", 1) for part in body.split())


@pytest.mark.usefixtures("reaping")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_at_once_without_waiting_for_requests(sig: signal.Signals) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        thread, result = request_in_thread(address, "/slow?s=10")
        time.sleep(0.5)  # in the app now
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(5) == 0
        thread.join(10)
    assert time.monotonic() - started < 3
    assert not isinstance(result[0], Response)  # its connection was dropped


@pytest.mark.usefixtures("reaping")
def test_ttin_adds_a_worker_and_ttou_retires_one() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        proc.send_signal(signal.SIGTTIN)
        wait_until(lambda: len(children_of(proc.pid)) == 3)
        proc.send_signal(signal.SIGTTOU)  # (two at once would be one: signals do not queue)
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        proc.send_signal(signal.SIGTTOU)
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        proc.send_signal(signal.SIGTTOU)  # never below one
        time.sleep(0.5)
        assert len(children_of(proc.pid)) == 1
        assert "one worker is the least" in process_log(proc)
        assert ident(address)["pid"] == str(min(children_of(proc.pid)))


def test_usr1_reopens_the_error_log(tmp_path: Path) -> None:
    log, rotated = tmp_path / "error.log", tmp_path / "error.log.1"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--error-log", str(log), address=address) as proc:
        # (a worker handles USR1 once it serves)
        wait_until(lambda: log.read_text().count("worker ready") == 2)
        log.rename(rotated)  # what logrotate does, then it sends USR1
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: rotated.read_text().count("SIGUSR1: reopening the log files") == 3)
        proc.send_signal(signal.SIGTTIN)  # the parent logs to the new file
        wait_until(lambda: log.exists() and "worker ready" in log.read_text())
        for pid in children_of(proc.pid):  # and so do the workers
            os.kill(pid, signal.SIGUSR1)
        wait_until(lambda: log.read_text().count("SIGUSR1: reopening") == 3)
    assert "SIGTTIN" not in rotated.read_text()


def test_ready_is_notified_to_systemd(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(15)
        address = f"127.0.0.1:{free_port()}"
        with run_fcgibridge(APP, "-b", address, "-w", "2", address=address, env={"NOTIFY_SOCKET": str(path)}):
            assert notify.recv(100) == b"READY=1"


def test_preload_imports_the_app_once_in_the_parent() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--preload", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        seen = [ident(address) for _ in range(10)]
    assert {s["import"] for s in seen} == {str(proc.pid)}
    assert {s["pid"] for s in seen} <= {str(pid) for pid in children_of(proc.pid)} | {s["pid"] for s in seen}
    assert all(s["pid"] != s["import"] for s in seen)


def test_reload_restarts_the_workers_when_a_source_file_changes(tmp_path: Path) -> None:
    (tmp_path / "devapp.py").write_text(_DEVAPP.replace("VERSION", "one"))
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("devapp:app", "-b", address, "--reload", address=address, cwd=tmp_path,
                        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
                             # Bytecode caching on: a stale .pyc must not hide the change.
                             "PYTHONDONTWRITEBYTECODE": ""}) as proc:
        assert FastCGIClient(address).request("GET", "/").body == b"one"
        # The watcher thread may not watch yet (a loaded machine): write again until it saw one.
        def seen() -> bool:
            return "--reload: devapp.py changed" in process_log(proc)

        for _ in range(10):
            (tmp_path / "devapp.py").write_text(_DEVAPP.replace("VERSION", "two"))
            deadline = time.monotonic() + 2
            while not seen() and time.monotonic() < deadline:
                time.sleep(0.05)
            if seen():
                break
        wait_until(lambda: FastCGIClient(address).request("GET", "/").body == b"two")


_DEVAPP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"VERSION"]
'''
