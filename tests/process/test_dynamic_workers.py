"""Dynamic workers (``--pm dynamic`` and ``ondemand``) on real processes, and the
supervisor's SIGCHLD fallback (``FCGIBRIDGE_NO_PIDFD=1``) seen from outside."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    ROOT,
    children_of,
    fcgibridge_command,
    free_port,
    process_log,
    request_in_thread,
    run_fcgibridge,
    stop_process,
    wait_until,
)

from fcgibridge.client import ConnectionClosed, FastCGIClient
from fcgibridge.process import scoreboard

SLOW_APP = "tests.apps.slow_app:app"
ASGI_APP = "tests.apps.pm_app:asgi_app"
#: Scaling decisions come once a second: every wait below allows for several.
FAST = ("--worker-idle-timeout", "1")


class Load:
    """Threads sending ``/slow?s=...`` requests one after the other until stopped."""

    def __init__(self, address: str, threads: int, seconds: float = 0.5) -> None:
        self.address = address
        self.path = f"/slow?s={seconds}"
        self.done = threading.Event()
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.done.is_set():
            self.statuses.append(FastCGIClient(self.address, timeout=20).request("GET", self.path).status)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)


@contextlib.contextmanager
def server_on_unix_socket(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The CLI on a unix socket, waited for by the socket file, not by connecting (with
    ondemand a connection would fork the first worker). Stopped by its PID."""
    path = tmp_path / "app.sock"
    with tempfile.NamedTemporaryFile(prefix="fcgibridge-log-", suffix=".txt") as log:
        proc = subprocess.Popen(fcgibridge_command(*args, "-b", f"unix:{path}"), cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
        logfile = Path(log.name)
        try:
            wait_until(lambda: path.exists() or proc.poll() is not None, what="the socket file")
            assert proc.poll() is None, logfile.read_text()
            yield proc, f"unix:{path}", logfile
        finally:
            stop_process(proc)


def max_children_reached(proc: subprocess.Popen[bytes], address: str) -> int:
    """The status page's ``max_children_reached`` when it has one, else the figure read
    from the server's scoreboard itself (its memfd, through ``/proc``)."""
    report = json.loads(FastCGIClient(address).request("GET", "/status?json").body)
    if "max_children_reached" in report:
        return int(report["max_children_reached"])
    for fd in os.listdir(f"/proc/{proc.pid}/fd"):
        with contextlib.suppress(OSError):
            if "fcgibridge-scoreboard" in os.readlink(f"/proc/{proc.pid}/fd/{fd}"):
                with open(f"/proc/{proc.pid}/fd/{fd}", "rb") as board, \
                        mmap.mmap(board.fileno(), 0, prot=mmap.PROT_READ) as memory:
                    return int(struct.unpack_from("=Q", memory, scoreboard._OFF_MAX_CHILDREN)[0])
    raise AssertionError("the server has no scoreboard")


def test_dynamic_forks_under_load_and_retires_idle_workers_after_the_timeout() -> None:
    address = f"127.0.0.1:{free_port()}"
    # --sync: a busy worker takes no new connection, so the load spreads over new workers.
    with run_fcgibridge(SLOW_APP, "-b", address, "--sync", "--pm", "dynamic", "-w", "1", "--min-workers", "1",
                        "--min-spare-workers", "1", "--max-spare-workers", "1", "--max-workers", "4", *FAST,
                        address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        time.sleep(1.5)  # idle, one spare: nothing moves
        assert len(children_of(proc.pid)) == 1
        with Load(address, threads=4) as load:
            wait_until(lambda: len(children_of(proc.pid)) >= 3, what="three workers or more")
        assert len(children_of(proc.pid)) <= 4
        wait_until(lambda: len(children_of(proc.pid)) == 1, what="back to one worker")
        log = process_log(proc)
        assert FastCGIClient(address).request("GET", "/pid").status == 200
    assert load.statuses and set(load.statuses) == {200}
    assert "idle for" in log and "retiring it" in log


def test_dynamic_forks_while_connections_wait_in_the_listen_queue() -> None:
    address = f"127.0.0.1:{free_port()}"
    # No spare wanted: only the listen queue (a --sync worker running a request accepts nothing) asks for more.
    with run_fcgibridge(SLOW_APP, "-b", address, "--sync", "--pm", "dynamic", "-w", "1", "--min-spare-workers", "0",
                        "--max-spare-workers", "1", "--max-workers", "4", *FAST, address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        results = [request_in_thread(address, "/slow?s=2") for _ in range(4)]
        for thread, _ in results:
            thread.join(30)
        log = process_log(proc)
    bodies = {result[0].body.split()[-1] for _, result in results}
    assert len(bodies) >= 2, log
    assert "more wanted" in log


@pytest.mark.usefixtures("reaping")
def test_ondemand_starts_with_no_worker_forks_for_a_connection_and_returns_to_none(tmp_path: Path) -> None:
    with server_on_unix_socket(tmp_path, SLOW_APP, "--pm", "ondemand", "-w", "2", *FAST) as (proc, address, _):
        time.sleep(1.5)
        assert children_of(proc.pid) == set()
        response = FastCGIClient(address, timeout=10).request("GET", "/pid")
        (worker,) = children_of(proc.pid)
        assert response.status == 200 and response.body == str(worker).encode()
        wait_until(lambda: children_of(proc.pid) == set(), what="no worker after the idle timeout")
        again = FastCGIClient(address, timeout=10).request("GET", "/pid")  # and again, a new one
        assert again.status == 200 and again.body != response.body
        wait_until(lambda: children_of(proc.pid) == set(), what="no worker again")
        stop_process(proc)  # with no worker, it stops at once
        assert proc.returncode == 0


def test_ondemand_with_an_app_that_does_not_start_stops_with_one_error(tmp_path: Path) -> None:
    with server_on_unix_socket(tmp_path, "tests.apps.no_such_module:app", "--pm", "ondemand") as (proc, address,
                                                                                                    log):
        with contextlib.suppress(Exception), FastCGIClient(address, timeout=5) as client:
            client.request("GET", "/pid")
        assert proc.wait(15) == 2  # the usage error's code: it stopped, not forking on
        errors = [line for line in log.read_text().splitlines() if "error:" in line]
    assert len(errors) == 1 and "no_such_module" in errors[0]


def test_max_children_reached_is_counted_when_max_workers_are_busy(tmp_path: Path) -> None:
    with server_on_unix_socket(tmp_path, ASGI_APP, "--pm", "ondemand", "--max-workers", "1", "--status-path",
                               "/status", *FAST) as (proc, address, _):
        thread, result = request_in_thread(address, "/slow?s=3")
        time.sleep(2.5)  # two ticks with the one worker busy
        assert len(children_of(proc.pid)) == 1
        assert max_children_reached(proc, address) >= 1
        thread.join(10)
    assert result[0].status == 200


@pytest.mark.usefixtures("reaping")
def test_the_parent_watches_its_workers_through_pidfds_or_sigchld(reaping: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(SLOW_APP, "-b", address, "-w", "2", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        links = set()
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            with contextlib.suppress(OSError):
                links.add(os.readlink(f"/proc/{proc.pid}/fd/{fd}"))
        assert ("anon_inode:[pidfd]" in links) == (reaping == "pidfd")
        victim = min(children_of(proc.pid))
        os.kill(victim, 9)
        wait_until(lambda: victim not in children_of(proc.pid) and len(children_of(proc.pid)) == 2)
        assert "died (exit code 137)" in process_log(proc)


@pytest.mark.parametrize(("bounds", "error"), [
    (("--min-spare-workers", "4", "--max-spare-workers", "2"),
     "--min-spare-workers (4) is more than --max-spare-workers (2)"),
    (("--min-spare-workers", "3", "--max-spare-workers", "3", "--max-workers", "2"),
     "--min-spare-workers (3) is more than --max-workers (2)"),
], ids=["spares", "spares-past-max-workers"])
def test_spare_bounds_that_contradict_each_other_are_an_error(bounds: tuple[str, ...], error: str) -> None:
    proc = subprocess.run(fcgibridge_command(SLOW_APP, "-b", f"127.0.0.1:{free_port()}", "--pm", "dynamic", *bounds),
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert f"error: {error}" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


@pytest.mark.usefixtures("reaping")
def test_a_worker_that_dies_while_its_successor_starts_is_replaced_once(tmp_path: Path) -> None:
    """A reload's successor is still importing the app when its predecessor dies: the
    successor makes up the count, and no second worker is forked for the same place
    (there used to be two workers for -w 1 from then on)."""
    flag = tmp_path / "slow-import"
    (tmp_path / "slowboot.py").write_text(
        "import os, time\n"
        "if os.path.exists(os.environ['SLOWBOOT_FLAG']):\n"
        "    time.sleep(2)\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [str(os.getpid()).encode()]\n")
    address = f"127.0.0.1:{free_port()}"
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}", "SLOWBOOT_FLAG": str(flag)}
    # --max-requests: one worker under a supervisor.
    with run_fcgibridge("slowboot:app", "-b", address, "-w", "1", "--max-requests", "1000", address=address,
                        env=env) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (old,) = children_of(proc.pid)
        # A worker that does not serve yet ignores the HUP the master passes on.
        assert FastCGIClient(address, timeout=15).request("GET", "/").body == str(old).encode()
        flag.touch()
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: len(children_of(proc.pid)) == 2, what="the successor forked")
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: f"worker {old} died" in process_log(proc))
        (successor,) = children_of(proc.pid) - {old}
        wait_until(lambda: FastCGIClient(address, timeout=5).request("GET", "/").body == str(successor).encode(),
                   what="the successor serving")
        time.sleep(1)
        assert children_of(proc.pid) == {successor}, process_log(proc)


def test_the_connections_are_max_workers_shares_and_get_values_says_so(tmp_path: Path) -> None:
    """With --pm ondemand -w is only how many start (none): the server holds --max-workers
    shares of --max-connections, GET_VALUES says so, and the one worker running holds
    more than its own share while no other holds any (it used to report and hold one)."""
    with server_on_unix_socket(tmp_path, SLOW_APP, "--pm", "ondemand", "--max-workers", "3",
                               "--max-connections", "2", *FAST) as (proc, address, log):
        values = FastCGIClient(address, timeout=10).get_values()
        assert values["FCGI_MAX_CONNS"] == "6" and values["FCGI_MAX_REQS"] == "6", values
        clients = [FastCGIClient(address, timeout=10, keep_alive=True) for _ in range(4)]
        try:
            for client in clients:  # four kept-alive connections, idle between requests
                assert client.request("GET", "/pid").status == 200
            time.sleep(0.5)
            assert all(client.request("GET", "/pid").status == 200 for client in clients)
            assert len(children_of(proc.pid)) == 1
            assert "closing an idle connection" not in log.read_text()
        finally:
            for client in clients:
                client.close()


def test_ondemand_survives_requests_that_kill_their_worker(tmp_path: Path) -> None:
    """Each worker is forked for a connection, so a request that kills its worker (a
    crash in C, the OOM killer; /crash exits here) dies within the quick-death time:
    five of them used to stop the whole server as a crash loop."""
    with server_on_unix_socket(tmp_path, "tests.apps.pm_app:app", "--pm", "ondemand", *FAST) as (proc, address,
                                                                                                  log):
        for _ in range(8):
            with pytest.raises(ConnectionClosed):  # the worker dies under the request
                FastCGIClient(address, timeout=10).request("GET", "/crash")
        assert proc.poll() is None, log.read_text()
        assert FastCGIClient(address, timeout=10).request("GET", "/pid").status == 200
        assert "keep dying" not in log.read_text()


@pytest.mark.usefixtures("reaping")
def test_workers_that_die_together_are_all_reaped_and_replaced() -> None:
    """Signals coalesce: one SIGCHLD may stand for several exits, and each must be seen
    (an exit missed leaves the count short, and a stop would wait for it for good)."""
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(SLOW_APP, "-b", address, "-w", "4", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 4)
        victims = children_of(proc.pid)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(children_of(proc.pid) - victims) == 4 and not children_of(proc.pid) & victims,
                   what="four new workers")
        stop_process(proc)
        assert proc.returncode == 0, process_log(proc)
        assert process_log(proc).count("died (exit code 137)") == 4
