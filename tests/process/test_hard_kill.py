"""The hard kill of a worker stuck in a request past --timeout + --timeout-grace, on real processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from support import children_of, free_port, machine_has, process_log, request_in_thread, run_fcgibridge, wait_until

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


@pytest.mark.parametrize("ends_in_between", [False, True, "another-in-flight"],
                         ids=["still-stuck", "ended-after-the-signal", "ended-with-an-earlier-one-in-flight"])
def test_the_kill_follows_the_stack_signal_only_while_the_request_is_still_there(
        monkeypatch: pytest.MonkeyPatch, ends_in_between: bool | str) -> None:
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
        if ends_in_between == "another-in-flight":
            slot.request_started("GET", "/waiting", False)  # started first; still in flight at the end
        slot.request_started("GET", "/stuck?x=1", False)
        now = time.monotonic()
        hard_kill.tick(supervisor, now)
        assert sent == []  # not past --timeout + --timeout-grace yet
        time.sleep(0.15)
        hard_kill.tick(supervisor, now + 0.15)
        assert sent == [(worker.pid, STACK_SIGNAL)]
        hard_kill.tick(supervisor, now + 0.15 + STACK_WAIT / 2)
        assert len(sent) == 1  # the stack gets its moment
        if ends_in_between:
            slot.request_done(0.2, False)
        hard_kill.tick(supervisor, now + 0.15 + STACK_WAIT)
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


def test_a_retiring_worker_whose_loop_runs_ends_its_request_at_the_timeout_and_is_not_killed() -> None:
    """A reload retires the worker while its (threaded) request runs: the worker's own
    --timeout still ends it with a 504 while it drains, so the hard kill never takes the
    retiring worker for a stuck one (it used to SIGKILL it at --timeout + --timeout-grace)."""
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.stuck_app:app", "-b", address, "--timeout", "1", "--timeout-grace", "1",
                        "--graceful-timeout", "10", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (old,) = children_of(proc.pid)
        wait_until(lambda: f"[{old}] [INFO] worker ready" in process_log(proc))  # a booting one ignores HUP
        thread, result = request_in_thread(address, "/stuck?s=5")
        time.sleep(0.3)  # the request is in the worker's thread
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: f"retiring worker {old}" in process_log(proc), what="the old worker retired")
        thread.join(10)
        (response,) = result
        assert not isinstance(response, Exception) and response.status == 504, response
        time.sleep(2.5)  # past --timeout + --timeout-grace and a tick or two
        log = process_log(proc)
        assert f"killing worker {old}" not in log and "request stuck" not in log, log
        assert f"[{old}] [ERROR] request timed out after 1 s" in log, log  # the retiring worker's own 504


def test_a_worker_with_no_stack_dump_registered_lives_through_the_stack_signal() -> None:
    """A real-time signal's default action ends the process: a worker that has not
    registered faulthandler on it (no --timeout here) must not die of it."""
    machine_has(STACK_SIGNAL is not None, "a stack signal (SIGRTMIN or SIGINFO)")
    assert STACK_SIGNAL is not None
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.stuck_app:app", "-w", "2", "-b", address, address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        workers = children_of(proc.pid)
        # The hard kill signals only a worker with a request in flight, so one that serves:
        # signalled a moment after its fork, before its handlers are set, any worker dies.
        wait_until(lambda: all(f"[{pid}] [INFO] worker ready" in process_log(proc) for pid in workers))
        for pid in workers:
            os.kill(pid, STACK_SIGNAL)
        time.sleep(0.5)
        assert children_of(proc.pid) == workers, process_log(proc)
        assert "died" not in process_log(proc)


def test_a_slow_log_that_cannot_be_opened_still_gets_the_stack_and_the_kill_by_name(tmp_path: Path) -> None:
    """The worker's stack goes to the error log when --slowlog cannot be opened (a missing
    directory here; a file the dropped --user cannot write in production), and the worker
    is killed as stuck, naming the request, not killed by the stack signal itself."""
    address = f"127.0.0.1:{free_port()}"
    slowlog = tmp_path / "missing" / "slow.log"
    with run_fcgibridge("tests.apps.stuck_app:app", "--sync", "-b", address, *LIMITS, "--slowlog", str(slowlog),
                        address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (stuck,) = children_of(proc.pid)
        with pytest.raises(FastCGIError):
            FastCGIClient(address, timeout=15).request("GET", "/stuck")
        wait_until(lambda: f"worker {stuck} was killed" in process_log(proc))
        log = process_log(proc)
        assert f"killing worker {stuck}: request stuck for" in log, log
        assert "killing its worker: GET /stuck; its stack:" in log and "in stuck_in_the_app" in log, log
        assert "died" not in log, log


def test_the_slot_of_a_worker_that_died_in_a_request_is_not_a_new_worker_with_its_pid(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed in a request leaves its slot "in flight" with its pid; the kernel
    may give that pid to a later worker (forked, not yet on the board): the old slot must
    not get that one signalled and killed. Once the slot is claimed anew, it counts again."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    board = Scoreboard(4)
    slot = board.claim()
    assert slot is not None
    supervisor = Supervisor(1, lambda report: 0, 1.0)
    dead = WorkerProcess(os.getpid(), -1, -1)
    hard_kill = HardKill(board, 0.05, 0.05)
    try:
        slot.request_started("GET", "/stuck", False)
        hard_kill.exited(supervisor, dead, 137)  # it died in the request
        supervisor.workers[os.getpid()] = WorkerProcess(os.getpid(), -1, -1)  # a new worker, the same pid
        time.sleep(0.15)
        for _ in range(3):
            hard_kill.tick(supervisor, time.monotonic())
        assert sent == []
        time.sleep(0.01)
        board._claimed.clear()  # this process claims the slot anew, as the new worker would
        board.preferred = slot.index
        again = board.claim()
        assert again is not None and again.index == slot.index
        again.request_started("GET", "/stuck", False)
        time.sleep(0.15)
        hard_kill.tick(supervisor, time.monotonic())
        hard_kill.tick(supervisor, time.monotonic())
        assert sent == [(os.getpid(), STACK_SIGNAL)]
    finally:
        supervisor.selector.close()


@pytest.mark.parametrize("step", [3600.0, -3600.0], ids=["clock-forward", "clock-back"])
def test_a_step_of_the_wall_clock_neither_kills_requests_nor_hides_a_stuck_one(
        monkeypatch: pytest.MonkeyPatch, step: float) -> None:
    """The slot's request start is wall clock; the running time is reckoned from when the
    master first saw it, on the monotonic clock: an hour's step forward (NTP, a resumed
    VM) killed every worker with a request in flight, one back hid a stuck one an hour."""
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    board = Scoreboard(4)
    slot = board.claim()
    assert slot is not None
    supervisor = Supervisor(1, lambda report: 0, 1.0)
    supervisor.workers[os.getpid()] = WorkerProcess(os.getpid(), -1, -1)
    hard_kill = HardKill(board, 0.5, 0.5)
    real_time = time.time
    try:
        slot.request_started("GET", "/report", False)
        now = time.monotonic()
        hard_kill.tick(supervisor, now)
        monkeypatch.setattr(time, "time", lambda: real_time() + step)  # the clock steps
        hard_kill.tick(supervisor, now + 0.5)
        hard_kill.tick(supervisor, now + 0.9)
        assert sent == []  # under a second: running, not stuck
        hard_kill.tick(supervisor, now + 1.1)
        assert sent == [(os.getpid(), STACK_SIGNAL)]  # past the limit by the monotonic clock
    finally:
        supervisor.selector.close()


def test_after_a_rotation_and_sigusr1_the_stack_goes_to_the_new_slow_log(tmp_path: Path) -> None:
    """The worker keeps its slow log open for the stack dump: SIGUSR1 (logrotate) opens it
    again, so the stack lands under the master's stuck line, in the new file."""
    slowlog = tmp_path / "slow.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.stuck_app:app", "--sync", "-b", address, *LIMITS, "--slowlog", str(slowlog),
                        address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (stuck,) = children_of(proc.pid)
        # Once it serves, the worker has its slow log open (and handles SIGUSR1).
        wait_until(lambda: f"[{stuck}] [INFO] worker ready" in process_log(proc))
        slowlog.rename(tmp_path / "slow.log.1")
        os.kill(proc.pid, signal.SIGUSR1)
        wait_until(lambda: process_log(proc).count("SIGUSR1: reopening the log files") == 2, what="both reopened")
        with pytest.raises(FastCGIError):
            FastCGIClient(address, timeout=15).request("GET", "/stuck")
        wait_until(lambda: f"worker {stuck} was killed" in process_log(proc))
    text = slowlog.read_text()
    assert "killing its worker: GET /stuck; its stack:" in text and "in stuck_in_the_app" in text, text
    assert "stuck_in_the_app" not in (tmp_path / "slow.log.1").read_text()
