"""The hard kill of a worker stuck in a request past --timeout + --timeout-grace, on real processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support import children_of, free_port, process_log, run_fcgibridge, wait_until

from fcgibridge.client import FastCGIClient, FastCGIError
from fcgibridge.process.contract import STACK_SIGNAL
from fcgibridge.process.hardkill import STACK_WAIT, HardKill
from fcgibridge.process.scoreboard import Scoreboard
from fcgibridge.process.supervisor import Supervisor, WorkerProcess

LIMITS = ("--timeout", "1", "--timeout-grace", "1", "--graceful-timeout", "1")


@pytest.mark.parametrize(("app", "mode"), [("tests.apps.stuck_app:app", "--sync"),
                                           ("tests.apps.stuck_app:asgi_app", "--interface=asgi3")],
                         ids=["wsgi-sync", "asgi-time-sleep"])
def test_a_worker_whose_request_holds_the_loop_is_killed_and_replaced(tmp_path: Path, app: str, mode: str) -> None:
    slowlog = tmp_path / "slow.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(app, mode, "-b", address, *LIMITS, "--slowlog", str(slowlog), address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (stuck,) = children_of(proc.pid)
        started = time.monotonic()
        with pytest.raises(FastCGIError):  # the worker dies under the request: its connection closes
            FastCGIClient(address, timeout=15).request("GET", "/stuck")
        took = time.monotonic() - started
        assert 2 <= took < 6, took  # past --timeout + --timeout-grace, at most a tick or two later
        wait_until(lambda: any(pid != stuck for pid in children_of(proc.pid)), what="a new worker")
        assert stuck not in children_of(proc.pid)
        response = FastCGIClient(address, timeout=5).request("GET", "/pid")
        assert response.status == 200 and response.body != f"pid={stuck}".encode()
        log = process_log(proc)
        assert f"killing worker {stuck}: request stuck for" in log, log
        assert "(past --timeout 1 s + --timeout-grace 1 s): GET /stuck" in log, log
        assert f"worker {stuck} was killed (request stuck for" in log, log
    text = slowlog.read_text()
    assert f"[pid {stuck}] request stuck for" in text and "killing its worker: GET /stuck; its stack:" in text, text
    assert "in stuck_in_the_app" in text and "stuck_app.py" in text, text


def test_a_threaded_wsgi_request_past_the_timeout_gets_504_and_no_kill() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.stuck_app:app", "-b", address, *LIMITS, address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (worker,) = children_of(proc.pid)
        started = time.monotonic()
        response = FastCGIClient(address, timeout=10).request("GET", "/stuck?s=4")
        assert response.status == 504 and time.monotonic() - started < 2
        # Its thread runs on past --timeout + --timeout-grace; the loop is free, so no hard kill:
        # the worker is replaced gracefully (the existing behaviour) and finishes the thread.
        time.sleep(3)
        log = process_log(proc)
        assert "request stuck" not in log and f"killing worker {worker}" not in log, log
        assert FastCGIClient(address, timeout=5).request("GET", "/pid").status == 200


def test_without_a_slow_log_the_stack_goes_to_the_error_log() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.stuck_app:asgi_app", "--interface=asgi3", "-b", address, *LIMITS,
                        address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (stuck,) = children_of(proc.pid)
        with pytest.raises(FastCGIError):
            FastCGIClient(address, timeout=15).request("GET", "/stuck")
        wait_until(lambda: f"worker {stuck} was killed" in process_log(proc))
        log = process_log(proc)
        assert "killing its worker: GET /stuck; its stack:" in log, log
        assert "in stuck_in_the_app" in log and "in asgi_app" in log, log


@pytest.mark.parametrize("ends_in_between", [False, True], ids=["still-stuck", "ended-after-the-signal"])
def test_the_kill_follows_the_stack_signal_only_while_the_request_is_still_there(
        monkeypatch: pytest.MonkeyPatch, ends_in_between: bool) -> None:
    """In one process (the slot is this one's, the signals are recorded, not sent): a
    request past the limit gets the stack signal at once and SIGKILL a tick later, unless
    it ended in between."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    board = Scoreboard(4)
    slot = board.claim()
    assert slot is not None
    supervisor = Supervisor(1, lambda report: 0, 1.0)
    worker = WorkerProcess(os.getpid(), -1, -1)
    supervisor.workers[worker.pid] = worker
    hard_kill = HardKill(board, 0.05, 0.05)
    try:
        slot.request_started("GET", "/stuck?x=1", False)
        now = time.monotonic()
        hard_kill.tick(supervisor, now)
        assert sent == []  # not past --timeout + --timeout-grace yet
        time.sleep(0.15)
        hard_kill.tick(supervisor, now + 0.1)
        assert sent == [(worker.pid, STACK_SIGNAL)]
        hard_kill.tick(supervisor, now + 0.1 + STACK_WAIT / 2)
        assert len(sent) == 1  # the stack gets its moment
        if ends_in_between:
            slot.request_done(0.2, False)
        hard_kill.tick(supervisor, now + 0.1 + STACK_WAIT)
        if ends_in_between:
            assert len(sent) == 1 and worker.killed_for is None
        else:
            assert sent[1:] == [(worker.pid, signal.SIGKILL)]
            assert worker.killed_for is not None and "GET /stuck?x=1" in worker.killed_for
    finally:
        supervisor.selector.close()


def test_one_reading_past_the_limit_is_not_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker writes its in-flight count just before the start of a new request: one
    reading may pair them wrongly, so the same start must be seen on two ticks."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    board = Scoreboard(4)
    slot = board.claim()
    assert slot is not None
    supervisor = Supervisor(1, lambda report: 0, 1.0)
    supervisor.workers[os.getpid()] = WorkerProcess(os.getpid(), -1, -1)
    hard_kill = HardKill(board, 0.05, 0.05)
    try:
        slot.request_started("GET", "/", False)
        time.sleep(0.15)
        hard_kill.tick(supervisor, time.monotonic())
        assert sent == []
        slot.request_done(0.15, False)
        slot.request_started("GET", "/next", False)  # another start: a candidate again, no more
        time.sleep(0.15)
        hard_kill.tick(supervisor, time.monotonic())
        assert sent == []
        hard_kill.tick(supervisor, time.monotonic())
        assert sent == [(os.getpid(), STACK_SIGNAL)]
    finally:
        supervisor.selector.close()
