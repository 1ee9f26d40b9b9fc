"""``fcgibridge probe``, run as a subprocess against a real PHP-FPM (with ``pm.status_path``
and ``ping.path``) and real fcgibridge servers: exit statuses, the lines and the JSON."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from phpfpm import PhpFpm, php_fpm
from support import (
    ROOT,
    fcgibridge_command,
    free_port,
    listening_socket,
    request_in_thread,
    run_fcgibridge,
    wait_until,
)

from fcgibridge.client import FastCGIClient

APP = "tests.apps.pm_app:app"


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m fcgibridge probe ARGS``; bounded, so a hanging probe fails the test."""
    return subprocess.run(fcgibridge_command("probe", *args), cwd=ROOT, capture_output=True, text=True, timeout=20)


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def sockets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the module's PHP-FPM and fcgibridge sockets (the glob test)."""
    return tmp_path_factory.mktemp("sockets")


@pytest.fixture(scope="module")
def fpm(sockets: Path) -> Iterator[PhpFpm]:
    with php_fpm(sockets, children=2, status=True) as running:
        yield running


@pytest.fixture(scope="module")
def bridge(sockets: Path) -> Iterator[str]:
    """A real fcgibridge with two workers and its status and ping pages, on a unix socket."""
    address = f"unix:{sockets / 'bridge.sock'}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--status-path", "/status", "--ping-path", "/ping",
                        address=address):
        wait_until(lambda: _workers(address) == 2, 15, "both workers serving")
        yield address


def _workers(address: str) -> int:
    return int(json.loads(FastCGIClient(address).request("GET", "/status?json").body)["total_workers"])


def test_ping_answers_on_php_fpm_both_pools_and_on_fcgibridge(fpm: PhpFpm, bridge: str) -> None:
    result = probe(fpm.unix, fpm.tcp, bridge)
    assert result.returncode == 0, result
    shown = lines(result)
    assert [line.split()[:3] for line in shown] == [["ok", fpm.unix, "ping"], ["ok", fpm.tcp, "ping"],
                                                    ["ok", bridge, "ping"]], shown
    assert all(line.endswith(" ms") for line in shown) and result.stderr == ""


def test_thresholds_kept_read_the_status_page_of_either_kind(fpm: PhpFpm, bridge: str) -> None:
    result = probe(fpm.unix, bridge, "--max", "listen-queue=10", "--min", "idle=1")
    assert result.returncode == 0, result
    php, ours = lines(result)
    assert php.startswith(f"ok {fpm.unix} status ") and php.endswith(" PHP-FPM listen-queue=0 idle-processes=1"), php
    assert ours.startswith(f"ok {bridge} status ") and " fcgibridge listen-queue=0 idle-processes=1" in ours, ours


def test_json_holds_every_figure_under_the_probe_names(fpm: PhpFpm, bridge: str) -> None:
    result = probe(fpm.tcp, bridge, "--status", "/status", "--json")
    assert result.returncode == 0, result
    report = json.loads(result.stdout)
    assert report["ok"] is True and [r["address"] for r in report["results"]] == [fpm.tcp, bridge]
    php, ours = report["results"]
    assert (php["ok"], php["check"], php["format"], php["reason"]) == (True, "status", "PHP-FPM", None)
    assert php["metrics"]["total-processes"] == 2 and php["metrics"]["active-processes"] == 1  # itself
    assert php["metrics"]["max-children-reached"] == 0 and "in-flight-requests" not in php["metrics"]
    assert ours["format"] == "fcgibridge" and ours["metrics"]["total-processes"] == 2
    assert ours["metrics"]["in-flight-requests"] == 1 and ours["metrics"]["accepted-conn"] >= 1
    assert 0 < php["elapsed"] < 3 and 0 < ours["elapsed"] < 3


def test_ping_and_status_together_and_a_wrong_ping_answer(bridge: str) -> None:
    both = probe(bridge, "--ping", "/ping", "--max", "slow-requests=0")
    assert both.returncode == 0 and lines(both)[0].startswith(f"ok {bridge} ping+status "), both
    wrong = probe(bridge, "--ping-response", "hello")
    assert wrong.returncode == 1 and lines(wrong) == [f"FAIL {bridge} ping /ping answered 'pong', not 'hello'"]


def test_a_busy_pool_breaks_the_thresholds(tmp_path: Path) -> None:
    with php_fpm(tmp_path, children=2, status=True) as busy:
        wait_until(lambda: _fpm_status(busy)["total processes"] == 2, 10, "both children started")
        client = FastCGIClient(busy.unix, root=str(busy.root), timeout=15)
        with client.stream("GET", "/sleep.php?s=10") as held:  # its head came: one child is sleeping
            assert held.status == 200
            wait_until(lambda: _fpm_status(busy)["active processes"] == 2, 10, "the sleeping child counted")
            result = probe(busy.unix, "--max", "active-processes=1", "--min", "idle-processes=1", "--json")
            text = probe(busy.unix, "--max", "active=1")
    assert result.returncode == 1, result
    (answer,) = json.loads(result.stdout)["results"]
    assert answer["ok"] is False and answer["reason"] == "active-processes=2 > 1, idle-processes=0 < 1", answer
    assert answer["metrics"]["active-processes"] == 2
    assert text.returncode == 1 and lines(text) == [f"FAIL {busy.unix} active-processes=2 > 1"], text


def _fpm_status(fpm: PhpFpm) -> Any:
    """PHP-FPM's status page, asked as the probe asks it (SCRIPT_NAME is the path)."""
    return json.loads(FastCGIClient(fpm.unix, timeout=5).request("GET", "/status?json",
                                                                 script_filename="/status").body)


def test_a_listen_queue_past_its_bound_is_unhealthy() -> None:
    """One worker held by a slow request (--sync: its loop accepts nothing meanwhile), two
    connections waiting in its listen queue; the master's --status-bind sees them."""
    address, status = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "1", "--sync", "--status-bind", status, "--graceful-timeout", "1",
                        address=address):
        thread, _ = request_in_thread(address, "/slow?s=4")  # long enough for the probes, even under load
        waiting: list[socket.socket] = []
        try:
            wait_until(lambda: _status(status)["active_workers"] == 1, 10, "the worker busy")
            host, port = address.rsplit(":", 1)
            waiting = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
            wait_until(lambda: _status(status)["listen_queue"] == 2, 10, "two connections waiting")
            result = probe(status, "--max", "listen-queue=1", "--max", "active-processes=1")
            kept = probe(status, "--max", "listen-queue=2")
        finally:
            for sock in waiting:
                sock.close()
    thread.join(15)
    assert result.returncode == 1 and lines(result) == [f"FAIL {status} listen-queue=2 > 1"], result
    assert kept.returncode == 0 and "fcgibridge listen-queue=2" in kept.stdout, kept


def _status(address: str) -> Any:
    return json.loads(FastCGIClient(address, timeout=5).request("GET", "/status?json").body)


def test_nothing_listening_is_unhealthy(tmp_path: Path) -> None:
    gone, port = f"unix:{tmp_path / 'gone.sock'}", f"127.0.0.1:{free_port()}"
    result = probe(gone, port)
    assert result.returncode == 1, result
    assert lines(result) == [f"FAIL {gone} cannot connect: No such file or directory",
                             f"FAIL {port} cannot connect: Connection refused"]


def test_one_unhealthy_address_makes_the_whole_probe_fail(fpm: PhpFpm, tmp_path: Path) -> None:
    result = probe(fpm.unix, f"unix:{tmp_path / 'gone.sock'}", "--json")
    assert result.returncode == 1, result
    report = json.loads(result.stdout)
    assert report["ok"] is False and [r["ok"] for r in report["results"]] == [True, False]
    assert report["results"][1]["reason"] == "cannot connect: No such file or directory"


def test_a_glob_checks_every_socket_it_matches(fpm: PhpFpm, bridge: str, sockets: Path) -> None:
    (sockets / "not-a-socket.sock").write_text("")  # a plain file the glob matches: left out
    result = probe(f"unix:{sockets}/*.sock")
    assert result.returncode == 0, result
    assert [line.split()[:2] for line in lines(result)] == [["ok", bridge], ["ok", fpm.unix]], result


def test_a_glob_matching_nothing_is_unhealthy(tmp_path: Path) -> None:
    result = probe(f"unix:{tmp_path}/*.sock")
    assert result.returncode == 1, result
    assert lines(result) == [f"FAIL unix:{tmp_path}/*.sock no unix socket matches {tmp_path}/*.sock"]


def test_a_status_page_that_is_not_one_is_unhealthy(fpm: PhpFpm, tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'plain.sock'}"
    with run_fcgibridge(APP, "-b", address, address=address):  # no --status-path: the app answers
        result = probe(address, "--max", "listen-queue=10")
        ping = probe(address)
    assert result.returncode == 1 and lines(result) == [f"FAIL {address} status /status?json: its answer is not JSON"]
    assert ping.returncode == 1 and lines(ping)[0].startswith(f"FAIL {address} ping /ping answered 'pid="), ping
    script = fpm.script("info.php")  # JSON, but no status page: SCRIPT_FILENAME is the path asked
    other = probe(fpm.unix, "--status", script)
    assert other.returncode == 1, other
    assert lines(other) == [f"FAIL {fpm.unix} status {script}?json: not a PHP-FPM or fcgibridge status page "
                            "(its keys: content_type, length, method, path_info, pid, post)"]
    missing = probe(fpm.unix, "--status", "/nowhere")
    assert missing.returncode == 1, missing
    assert lines(missing) == [f"FAIL {fpm.unix} status /nowhere?json answered 404 Not Found"]


def test_a_server_that_never_answers_times_out_in_time() -> None:
    silent = listening_socket()  # listens, never accepts: the connection is made, nothing comes
    try:
        host, port = silent.getsockname()
        began = time.monotonic()
        result = probe(f"{host}:{port}", "--timeout", "1", "--json")
        took = time.monotonic() - began
    finally:
        silent.close()
    assert result.returncode == 1 and took < 5, (result, took)
    (answer,) = json.loads(result.stdout)["results"]
    assert answer["reason"] == "the request did not finish within 1.0 s" and 0.9 < answer["elapsed"] < 2, answer


@pytest.mark.parametrize(("args", "message"), [
    (["127.0.0.1:9", "--max", "queue-length=3"],
     "unknown metric 'queue-length'; the metrics are listen-queue, max-listen-queue"),
    (["127.0.0.1:9", "--min", "idle"], "--min 'idle' must look like NAME=N"),
    (["127.0.0.1:9", "--max", "listen-queue=-1"], "the bound must be a whole number"),
    (["/run/php/www.sock"], "write unix:/run/php/www.sock"),
    (["unix:"], "'unix:' has no path"),
    ([], "the following arguments are required: ADDR"),
    (["127.0.0.1:9", "--timeout", "0"], "must be more than 0 seconds"),
    (["127.0.0.1:9", "--status", "status"], "must be a path starting with /"),
])
def test_a_usage_mistake_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = probe(*args)
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.startswith("fcgibridge: error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1
