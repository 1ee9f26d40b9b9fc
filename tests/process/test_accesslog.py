"""The access log (``--access-log``, ``--access-log-format``) on real server processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from support import ROOT, free_port, process_log, run_fcgibridge

from fcgibridge.client import FastCGIClient

APP = "tests.apps.ops_app:app"


def wait_lines(path: Path, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines


def test_every_atom_in_a_custom_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    fmt = ("%(h)s|%(l)s|%(u)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(f)s|%(a)s|%({x-trace}i)s|"
           "%({x-code}o)s|%({SERVER_NAME}e)s|%(p)s|%(T)s|%(M)s|%(D)s|%(L)s|%(r)s|%(t)s|%(zz)s")
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--access-log", str(log), "--access-log-format", fmt,
                        address=address) as proc:
        client = FastCGIClient(address)
        client.request("GET", "/code/404?a=1", headers={"Referer": "http://x/", "User-Agent": "t/1",
                                                        "X-Trace": "abc"}, params={"REMOTE_USER": "bob"})
        client.request("GET", "/redirect")
        client.request("POST", "/slow?s=0.25", body=b"hello")
        lines = wait_lines(log, 3)
        assert process_log(proc).count("Traceback") == 0
    first, redirect, slow = (line.split("|") for line in lines)
    assert first[:16] == ["127.0.0.1", "-", "bob", "GET", "/code/404", "a=1", "HTTP/1.1", "404", "3", "3",
                          "http://x/", "t/1", "abc", "404", "localhost", first[15]]
    assert first[15].strip("<>").isdigit() and int(first[15].strip("<>")) != os.getpid()
    assert first[20] == "GET /code/404?a=1 HTTP/1.1"
    assert first[21].startswith("[") and first[21].endswith("]") and first[22] == "-"
    assert redirect[7:10] == ["302", "0", "-"]
    assert slow[3] == "POST" and slow[7] == "200"
    seconds, millis, micros, decimal = int(slow[16]), int(slow[17]), int(slow[18]), float(slow[19])
    assert seconds == 0 and 250 <= millis < 2000 and micros // 1000 == millis and 0.25 <= decimal < 2


def test_default_format_to_stdout() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--access-log", "-", address=address) as proc:
        FastCGIClient(address).request("GET", "/pid", headers={"User-Agent": "agent/2"})
        deadline = time.monotonic() + 5
        while '"GET /pid HTTP/1.1" 200' not in process_log(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in process_log(proc).splitlines() if "GET /pid" in line)
    # gunicorn's default: %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith('] "GET /pid HTTP/1.1" 200 ' + line.split()[-3] + ' "-" "agent/2"')


def test_no_access_log_by_default(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, address=address) as proc:
        FastCGIClient(address).request("GET", "/pid")
        time.sleep(0.2)
        assert "GET /pid" not in process_log(proc)


def test_bad_format_is_a_user_error_at_check_config(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "fcgibridge", APP, "--check-config", "--access-log-format",
                             "%(h)s %(s"], capture_output=True, text=True, timeout=30,
                            cwd=ROOT)
    assert result.returncode == 2
    assert "--access-log-format: bad access log format" in result.stderr


def test_usr1_reopens_the_access_log_in_every_worker(tmp_path: Path) -> None:
    import signal

    log = tmp_path / "access.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--access-log", str(log), address=address) as proc:
        deadline = time.monotonic() + 10
        while process_log(proc).count("worker ready") < 2:  # both handle USR1 from then on
            assert time.monotonic() < deadline, process_log(proc)
            time.sleep(0.05)
        client = FastCGIClient(address)
        client.request("GET", "/before")
        assert len(wait_lines(log, 1)) == 1
        log.rename(tmp_path / "access.log.1")
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while process_log(proc).count("SIGUSR1: reopening the log files") < 3:  # the parent and both workers
            assert time.monotonic() < deadline, process_log(proc)
            time.sleep(0.05)
        for _ in range(10):  # new connections: both workers answer some
            client.request("GET", "/after")
        lines = wait_lines(log, 10)
    assert len(lines) == 10 and all("GET /after" in line for line in lines)
    assert (tmp_path / "access.log.1").read_text().count("GET /before") == 1


def test_an_aborted_request_is_logged_without_a_status(tmp_path: Path) -> None:
    from support import RawConnection

    log = tmp_path / "access.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--access-log", str(log), "--access-log-format", "%(U)s %(s)s %(B)s",
                        address=address):
        with RawConnection(address) as conn:
            request_id = conn.begin("GET", "/slow?s=0.3", body=b"")
            conn.abort(request_id)
            conn.wait_end(request_id)
        assert wait_lines(log, 1) == ["/slow - 0"]
