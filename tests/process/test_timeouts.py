"""--timeout and the slow log on real processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import children_of, free_port, process_log, run_fcgibridge, wait_until

from fcgibridge.client import FastCGIClient


def test_a_wsgi_request_past_the_timeout_gets_504_and_its_worker_is_replaced() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.pm_app:app", "-b", address, "--timeout", "1", "--graceful-timeout", "1",
                        address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)  # --timeout runs a supervisor
        (old,) = children_of(proc.pid)
        started = time.monotonic()
        response = FastCGIClient(address, timeout=10).request("GET", "/slow?s=8")
        assert response.status == 504 and time.monotonic() - started < 3
        wait_until(lambda: "request timed out after 1 s (--timeout), ended: GET /slow?s=8" in process_log(proc))
        # The thread cannot be interrupted: a new worker takes over, the old one retires.
        wait_until(lambda: any(pid != old for pid in children_of(proc.pid)))
        wait_until(lambda: FastCGIClient(address).request("GET", "/pid").body.startswith(b"pid=")
                   and old not in children_of(proc.pid), timeout=10)


def test_an_asgi_request_past_the_timeout_is_cancelled_in_the_same_worker() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.pm_app:asgi_app", "-b", address, "--timeout", "0.5", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (worker,) = children_of(proc.pid)
        started = time.monotonic()
        assert FastCGIClient(address, timeout=10).request("GET", "/slow?s=30").status == 504
        assert time.monotonic() - started < 3
        assert FastCGIClient(address).request("GET", "/pid").status == 200
        assert children_of(proc.pid) == {worker}
        assert "request timed out after 0.5 s (--timeout), ended: GET /slow?s=30" in process_log(proc)


@pytest.mark.parametrize("app", ["tests.apps.pm_app:app", "tests.apps.pm_app:asgi_app"], ids=["wsgi", "asgi"])
def test_the_slow_log_gets_the_stack_of_a_slow_request_which_keeps_running(tmp_path: Path, app: str) -> None:
    slowlog = tmp_path / "slow.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(app, "-b", address, "--slowlog-timeout", "0.3", "--slowlog", str(slowlog),
                        address=address):
        response = FastCGIClient(address, timeout=10).request("GET", "/slow?s=1")
        assert response.status == 200  # it kept running
        assert FastCGIClient(address).request("GET", "/pid").status == 200  # a quick one is not logged
    text = slowlog.read_text()
    assert text.count("request running for more than 0.3 s: GET /slow?s=1") == 1
    assert "pm_app.py" in text and ("time.sleep" in text or "asyncio.sleep" in text), text
