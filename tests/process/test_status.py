"""The status and ping pages, on real server processes (``--status-path``, ``--ping-path``)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import free_port, run_fcgibridge

from fcgibridge.client import FastCGIClient

APP = "tests.apps.ops_app:app"


def text_field(text: str, name: str) -> str:
    """The value of one ``name: value`` line of the text status page."""
    match = re.search(rf"^{name}:\s+(\S+)$", text, re.MULTILINE)
    assert match is not None, (name, text)
    return match.group(1)


def status(address: str, query: str = "json", path: str = "/status") -> Any:
    response = FastCGIClient(address).request("GET", f"{path}?{query}" if query else path)
    assert response.status == 200
    return json.loads(response.body) if query == "json" else response


def test_status_adds_up_both_workers_and_ping_answers() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--status-path", "/status", "--ping-path", "/ping",
                        address=address):
        client = FastCGIClient(address)  # a new connection per request: the kernel spreads them
        pids: dict[str, int] = {}
        deadline = time.monotonic() + 15
        while len(pids) < 2 or sum(pids.values()) < 10:
            assert time.monotonic() < deadline, pids
            pid = client.request("GET", "/pid").body.decode().split()[1]
            pids[pid] = pids.get(pid, 0) + 1
        ping = client.request("GET", "/ping")
        assert (ping.status, ping.body) == (200, b"pong\n")
        assert "no-cache" in ping.headers.get("cache-control")

        report = status(address)
        served_before = sum(pids.values()) + 1  # and the ping; the status request is in flight
        assert report["total_workers"] == 2
        assert {str(w["pid"]) for w in report["workers"]} == set(pids)
        assert report["requests_served"] == served_before
        assert report["accepted_conn"] == served_before + 2  # with this one and the test's readiness probe
        assert sum(w["requests"] for w in report["workers"]) == served_before
        assert report["in_flight_requests"] == 1  # this one
        assert (report["active_workers"], report["idle_workers"]) == (1, 1)
        busy = next(w for w in report["workers"] if w["state"] == "busy")
        assert busy["request_uri"] == "/status?json"
        # --backlog, as the kernel caps it (sock_diag), or as given (the /proc fallback)
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert report["listen_queue"] == 0 and report["listen_queue_len"] in (1024, min(1024, somaxconn))
        assert 0 <= report["start_since"] < 60 and report["slow_requests"] == 0

        text = status(address, "").body.decode()
        assert text_field(text, "requests_served") == str(served_before + 1)
        assert text_field(text, "total_workers") == "2" and text.count("\npid:") == 2

        prom = status(address, "prometheus")
        assert prom.headers.get("content-type").startswith("text/plain; version=0.0.4")
        body = prom.body.decode()
        assert "# TYPE fcgibridge_requests_served_total counter" in body
        assert f"fcgibridge_requests_served_total {served_before + 2}" in body
        for worker in report["workers"]:  # labelled by slot, not pid
            assert f'fcgibridge_worker_pid{{worker="{worker["slot"]}"}} {worker["pid"]}' in body
        assert json.loads(status(address, "format=json").body)["total_workers"] == 2
        assert status(address, "format=prometheus").body.startswith(b"# HELP")


def test_status_shows_requests_in_flight_with_their_uri_and_duration_in_one_process() -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--status-path", "/fpm-status", "--slowlog-timeout", "0.3",
                        address=address):
        client = FastCGIClient(address)
        slow = threading.Thread(target=client.request, args=("GET", "/slow?s=0.8"))
        slow.start()
        try:
            time.sleep(0.4)
            report = status(address, path="/fpm-status")
        finally:
            slow.join()
        assert report["total_workers"] == 1
        assert report["in_flight_requests"] == 2
        (worker,) = report["workers"]
        assert worker["state"] == "busy" and worker["in_flight"] == 2
        after = status(address, path="/fpm-status")
        assert after["slow_requests"] == 1
        assert after["workers"][0]["requests"] == 2


def test_status_is_off_by_default_and_matches_script_name_too(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, address=address):
        assert FastCGIClient(address).request("GET", "/status").body.startswith(b"app ")
    sock = tmp_path / "s.sock"
    address = f"unix:{sock}"
    with run_fcgibridge(APP, "-b", address, "--status-path", "/status", address=address):
        # nginx with plain fastcgi_params: SCRIPT_NAME is the path; no REQUEST_URI here
        response = FastCGIClient(address).request(
            "GET", "/other", params={"REQUEST_URI": "", "SCRIPT_NAME": "/status", "PATH_INFO": "",
                                     "QUERY_STRING": "json"})
        report = json.loads(response.body)
        assert report["total_workers"] == 1 and report["workers"][0]["request_uri"] == "/status"


@pytest.mark.e2e
def test_status_ping_and_access_log_through_nginx(nginx_factory: Any, tmp_path: Path) -> None:
    from nginx import Location

    backend = f"127.0.0.1:{free_port()}"
    access = tmp_path / "access.log"
    with run_fcgibridge(APP, "-b", backend, "-w", "2", "--status-path", "/status", "--ping-path", "/ping",
                        "--access-log", str(access), "--access-log-format", "%(h)s %(r)s %(s)s %({host}i)s",
                        address=backend):
        nginx = nginx_factory(Location(backend, "= /status"), Location(backend, "= /ping"), Location(backend, "/"))
        assert nginx.get("/ping").body == b"pong\n"
        for _ in range(6):
            assert nginx.get("/pid").status == 200
        reply = nginx.get("/status?json")
        assert reply.status == 200 and reply.headers["Content-Type"] == "application/json"
        report = json.loads(reply.body)
        assert report["total_workers"] == 2 and report["requests_served"] == 7
        text = nginx.get("/status").body.decode()
        assert text.startswith("start_time:") and text_field(text, "total_workers") == "2"
        deadline = time.monotonic() + 5
        while access.read_text().count("\n") < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = access.read_text().splitlines()
    assert lines[0].startswith("127.0.0.1 GET /ping HTTP/1.1 200 127.0.0.1")  # the Host header nginx passed
    assert sum("GET /pid HTTP/1.1 200" in line for line in lines) == 6


def test_totals_survive_a_killed_worker_and_its_replacement_shows_up() -> None:
    import os
    import signal

    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--status-path", "/status", address=address):
        client = FastCGIClient(address)
        deadline = time.monotonic() + 15
        while status(address)["total_workers"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(8):
            client.request("GET", "/pid")
        before = status(address)
        busiest = max(before["workers"], key=lambda w: w["requests"])
        assert busiest["requests"] > 0
        victim = busiest["pid"]
        os.kill(victim, signal.SIGKILL)
        while True:
            after = status(address)
            pids = {w["pid"] for w in after["workers"]}
            if len(pids) == 2 and victim not in pids:
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.05)
        # Nothing the dead worker served is lost: the totals only grow.
        assert after["requests_served"] >= before["requests_served"] + 1
        assert after["accepted_conn"] >= before["accepted_conn"] + 1
