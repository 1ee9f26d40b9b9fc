"""The lifecycle hooks of accept-style scripts (Python and Lua), with real signals sent to
real processes: start, restart on SIGHUP, stop on SIGTERM (and its veto), and HUP for
apps without a restart hook."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support import (
    ROOT,
    RawConnection,
    children_of,
    fcgibridge_command,
    free_port,
    process_log,
    run_fcgibridge,
    wait_until,
)

SCRIPTS = {"python": "tests/apps/accept_script.py", "lua": "tests/apps/lua/hooks.lua"}


def get(address: str, path: str, timeout: float = 20) -> tuple[int, bytes, str | None]:
    with RawConnection(address, timeout=timeout) as conn:
        request_id = conn.begin("GET", path, body=b"")
        conn.wait_end(request_id, timeout)
        head, body = conn.response(request_id)
        return head.status, body, head.get("X-Pid")


def wait_for_workers(pid: int, log: Path, count: int) -> set[int]:
    """The workers of *pid*, once *count* of them have run start() (and so are about to serve)."""
    wait_until(lambda: len(children_of(pid)) == count and sum(" start" in line for line in hook_lines(log)) == count)
    time.sleep(0.2)
    return children_of(pid)


def hook_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def request_in_thread(address: str, path: str) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def go() -> None:
        try:
            result.append(get(address, path))
        except BaseException as exc:  # reported by the test
            result.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    return thread, result


@pytest.fixture(params=["python", "lua"])
def script(request: pytest.FixtureRequest) -> str:
    return SCRIPTS[request.param]


def run_once(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fcgibridge_command(*args), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=30)


# ---------------------------------------------------------------------------- start


@pytest.mark.parametrize("workers", ["1", "2"])
def test_start_returning_non_zero_exits_with_that_code(script: str, tmp_path: Path, workers: str) -> None:
    log = tmp_path / "hooks.log"
    proc = run_once(script, "-b", f"127.0.0.1:{free_port()}", "-w", workers,
                    env={"START_CODE": "7", "HOOK_LOG": str(log)})
    assert proc.returncode == 7, proc.stderr
    assert "start function returned non-zero value: 7" in proc.stderr
    assert [line.split()[1] for line in hook_lines(log)] == ["start"]  # the other workers never started


def test_start_raising_is_logged_and_exits_non_zero(script: str) -> None:
    proc = run_once(script, "-b", f"127.0.0.1:{free_port()}", env={"START_CODE": "raise"})
    assert proc.returncode != 0
    assert "start function raised an error" in proc.stderr
    assert "start failed on purpose" in proc.stderr


def test_start_runs_in_each_worker_before_it_serves(script: str, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(script, "-b", address, "-w", "2", address=address, env={"HOOK_LOG": str(log)}) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2 and len(hook_lines(log)) == 2)
        assert {int(line.split()[0]) for line in hook_lines(log)} == children_of(proc.pid)
        assert get(address, "/")[0] == 200


# -------------------------------------------------------------------------- restart


def test_hup_calls_restart_in_every_worker_without_dropping_requests(script: str, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(script, "-b", address, "-w", "2", address=address, env={"HOOK_LOG": str(log)}) as proc:
        workers = wait_for_workers(proc.pid, log, 2)
        thread, result = request_in_thread(address, "/slow?0.8")
        time.sleep(0.3)  # the request is in accept() now
        proc.send_signal(signal.SIGHUP)
        thread.join(20)
        wait_until(lambda: sum(line.endswith("restart") for line in hook_lines(log)) == 2)
        assert {int(line.split()[0]) for line in hook_lines(log) if line.endswith("restart")} == workers
        assert children_of(proc.pid) == workers and proc.poll() is None
        status, body, _ = result[0]  # type: ignore[misc]
        assert status == 200 and b"generation=0" in body  # the request in flight finished first
        assert all(b"generation=1" in get(address, "/")[1] for _ in range(6))


@pytest.mark.parametrize("workers", ["1"])  # with a supervisor HUP reloads: tests/process/test_reload.py
def test_hup_without_a_restart_hook_is_logged_and_never_kills_the_server(workers: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.slow_app:app", "-b", address, "-w", workers, address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == (2 if workers == "2" else 0))
        before = children_of(proc.pid)
        # No wait for the workers to serve: HUP during the app's import must not kill them either.
        proc.send_signal(signal.SIGHUP)
        assert get(address, "/pid")[0] == 200
        time.sleep(0.3)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proc.poll() is None and children_of(proc.pid) == before
        assert get(address, "/pid")[0] == 200
        wait_until(lambda: "SIGHUP ignored" in process_log(proc))


# ----------------------------------------------------------------------------- stop


def test_term_calls_stop_and_zero_finishes_requests_in_flight_then_exits(script: str, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(script, "-b", address, "-w", "2", address=address, env={"HOOK_LOG": str(log)}) as proc:
        workers = wait_for_workers(proc.pid, log, 2)
        thread, result = request_in_thread(address, "/slow?1")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        thread.join(20)
        assert proc.wait(20) == 0
    assert result[0][0] == 200, result  # type: ignore[index]
    stops = [line for line in hook_lines(log) if " stop " in f" {line} "]
    assert {int(line.split()[0]) for line in stops} == workers and all(line.endswith("stop 0") for line in stops)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_stop_returning_non_zero_vetoes_the_termination(script: str, tmp_path: Path, workers: str) -> None:
    log, code_file = tmp_path / "hooks.log", tmp_path / "stop-code"
    code_file.write_text("1")
    address = f"127.0.0.1:{free_port()}"
    env = {"HOOK_LOG": str(log), "STOP_CODE_FILE": str(code_file)}
    with run_fcgibridge(script, "-b", address, "-w", workers, "--graceful-timeout", "0.5", address=address,
                        env=env) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == (2 if workers == "2" else 0))
        # Every worker serving, so its signal handlers are in place (one answer proves only one).
        wait_until(lambda: process_log(proc).count("worker ready") == int(workers))
        assert get(address, "/")[0] == 200
        before = children_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: sum(line.endswith("stop 1") for line in hook_lines(log)) == int(workers))
        wait_until(lambda: "stop function returned non-zero value: 1; not stopping" in process_log(proc))
        # Past graceful timeout + the parent's kill grace: nobody was killed, all still serve.
        # (The parent's side does not depend on the script's language: waited out once.)
        time.sleep(0.5 + 5.5 if workers == "2" and script.endswith(".py") else 0.5)
        assert proc.poll() is None and children_of(proc.pid) == before
        assert get(address, "/")[0] == 200
        if workers == "2":
            assert "vetoed the stop" in process_log(proc) and "killing" not in process_log(proc)
        code_file.write_text("0")  # now stop() agrees
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_int_stops_without_asking_stop(script: str, tmp_path: Path) -> None:
    code_file = tmp_path / "stop-code"
    code_file.write_text("1")
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(script, "-b", address, address=address, env={"STOP_CODE_FILE": str(code_file)}) as proc:
        assert get(address, "/")[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0


def test_a_failing_restart_is_logged_and_a_failing_stop_still_stops(tmp_path: Path) -> None:
    log, code_file = tmp_path / "hooks.log", tmp_path / "stop-code"
    code_file.write_text("raise")
    address = f"127.0.0.1:{free_port()}"
    env = {"HOOK_LOG": str(log), "STOP_CODE_FILE": str(code_file), "RESTART_RAISES": "1"}
    with run_fcgibridge(SCRIPTS["python"], "-b", address, address=address, env=env) as proc:
        assert get(address, "/")[0] == 200
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "restart function raised an error; still serving" in process_log(proc))
        assert b"count=2 generation=0" in get(address, "/")[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        output = process_log(proc)
    assert "stop function raised an error; stopping anyway" in output and "stop failed on purpose" in output
