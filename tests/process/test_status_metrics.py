"""The status page's figures beyond PHP-FPM's basics, on real server processes: per-worker
RSS and CPU time, the last request's CPU and memory, the most workers busy at once, the
longest listen queue of a unix socket, the duration histogram, and the Prometheus and
OpenMetrics formats as prometheus_client's parsers read them."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from support import machine_has, run_fcgibridge, wait_until

from fcgibridge.client import FastCGIClient
from fcgibridge.process import sockdiag

APP = "tests.apps.status_app:app"


def page(address: str, query: str) -> Any:
    response = FastCGIClient(address).request("GET", f"/status?{query}")
    assert response.status == 200
    return response


def report(address: str) -> Any:
    return json.loads(page(address, "json").body)


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def samples(families: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, over every family."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def netlink_works() -> bool:
    try:
        sockdiag.unix_queues()
    except OSError:
        return False
    return True


def test_busy_workers_the_unix_listen_queue_and_what_requests_cost(tmp_path: Path) -> None:
    machine_has(netlink_works(), "sock_diag netlink")
    path = tmp_path / "s.sock"
    address = f"unix:{path}"
    # --sync: a worker in the app accepts nothing, so two slow requests take both workers
    # and the connections after them wait in the listen queue.
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--sync", "--status-path", "/status", address=address):
        wait_until(lambda: report(address)["total_workers"] == 2, 15, "both workers")
        first = report(address)
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        # The kernel's size of the queue (--backlog, capped), for a unix socket too
        assert first["listen_queue"] == 0 and first["listen_queue_len"] == min(1024, somaxconn)
        assert first["max_active_workers"] == 1 and first["process_manager"] == "static"
        assert first["max_children_reached"] == 0
        assert {w["slot"] for w in first["workers"]} == {1, 2}  # the worker numbers

        client = FastCGIClient(address)
        slow = [threading.Thread(target=client.request, args=("GET", "/sleep?s=1.6")) for _ in range(2)]
        for thread in slow:
            thread.start()
            time.sleep(0.15)
        waiting = [socket.socket(socket.AF_UNIX) for _ in range(3)]
        try:
            for sock in waiting:
                sock.connect(str(path))
            for thread in slow:
                thread.join()
            after = report(address)  # the supervisor sampled it all at least once
        finally:
            for sock in waiting:
                sock.close()
        assert after["max_active_workers"] == 2 and after["active_workers"] == 1
        assert after["max_listen_queue"] >= 3

        hist = after["request_duration_seconds"]
        assert hist["count"] == hist["buckets"]["+Inf"] == after["requests_served"]
        assert hist["buckets"]["2.5"] - hist["buckets"]["1.0"] == 2 == hist["count"] - hist["buckets"]["1.0"]
        assert hist["sum"] >= 3.2

        for worker in after["workers"]:
            assert 0.5 < worker["rss"] / vm_rss(worker["pid"]) < 2 and worker["cpu_time"] >= 0
            assert worker["start_since"] < 30

        burner = int(client.request("GET", "/burn?s=0.3").body.split()[1])
        burnt = next(w for w in report(address)["workers"] if w["pid"] == burner)
        assert 0.25 <= burnt["last_request_cpu_time"] < 1 and burnt["last_request_cpu"] > 50
        assert burnt["cpu_time"] >= 0.25  # from /proc: the worker's whole life

        allocator = int(client.request("GET", "/alloc?mb=64").body.split()[1])
        grown = next(w for w in report(address)["workers"] if w["pid"] == allocator)
        assert grown["last_request_memory"] >= 64 << 20


def test_prometheus_and_openmetrics_parse_and_agree_with_json() -> None:
    from support import free_port

    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--status-path", "/status", address=address):
        wait_until(lambda: report(address)["total_workers"] == 2, 15, "both workers")
        client = FastCGIClient(address)
        # Durations no status page takes (one can take 25 ms on a busy machine).
        for query in ("", "s=0.15", "s=0.3"):
            client.request("GET", f"/sleep?{query}")
        before = report(address)

        prom = page(address, "prometheus")
        assert prom.headers.get("content-type") == "text/plain; version=0.0.4; charset=utf-8"
        values = samples(parse_prometheus(prom.body.decode()))
        # Every request but this one is served: the ones before, and the JSON page.
        assert values[("fcgibridge_requests_served_total", ())] == before["requests_served"] + 1
        assert values[("fcgibridge_request_duration_seconds_count", ())] == before["requests_served"] + 1
        assert values[("fcgibridge_request_duration_seconds_bucket", (("le", "+Inf"),))] == \
            before["requests_served"] + 1
        buckets = {le: values[("fcgibridge_request_duration_seconds_bucket", (("le", le),))]
                   for le in ("0.1", "0.25", "0.5")}
        assert buckets["0.25"] - buckets["0.1"] == 1 and buckets["0.5"] - buckets["0.25"] == 1
        pids = {(("worker", str(w["slot"])),): w["pid"] for w in before["workers"]}
        assert {labels: values[("fcgibridge_worker_pid", labels)] for labels in pids} == pids
        assert values[("fcgibridge_max_children_reached_total", ())] == 0
        assert all(values[("fcgibridge_worker_rss_bytes", labels)] > 1 << 20 for labels in pids)

        om = page(address, "openmetrics")
        assert om.headers.get("content-type") == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        text = om.body.decode()
        assert text.endswith("# EOF\n")
        families = {family.name: family for family in parse_openmetrics(text)}
        assert families["fcgibridge_requests_served"].type == "counter"
        assert families["fcgibridge_request_duration_seconds"].type == "histogram"
        assert families["fcgibridge_request_duration_seconds"].unit == "seconds"
        assert families["fcgibridge_worker_cpu_seconds"].type == "counter"
        om_values = samples(families.values())
        assert om_values[("fcgibridge_requests_served_total", ())] == before["requests_served"] + 2
        assert om_values[("fcgibridge_request_duration_seconds_count", ())] == before["requests_served"] + 2
        assert {labels: om_values[("fcgibridge_worker_pid", labels)] for labels in pids} == pids
        assert ("fcgibridge_worker_requests_total", (("worker", "1"),)) in om_values

        assert page(address, "format=openmetrics").body.endswith(b"# EOF\n")
        assert b"fcgibridge_request_duration_seconds_bucket" in page(address, "format=prometheus").body
        text_page = page(address, "").body.decode()
        assert "request_duration_seconds:\n" in text_page and "\n  le +Inf:" in text_page


def test_the_histogram_survives_recycled_workers_counted_once() -> None:
    """-w 2 --max-requests 3: requests until six worker processes have served, the later ones
    in the slots of the first; requests served, the histogram's count,
    its +Inf bucket and the Prometheus _count all say each request once."""
    from support import free_port

    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--max-requests", "3", "--max-requests-jitter", "0",
                        "--status-path", "/status", address=address):
        client = FastCGIClient(address)
        pids: set[bytes] = set()
        sent = 0
        deadline = time.monotonic() + 30
        while len(pids) < 6:  # a worker serves on until its replacement is ready
            assert time.monotonic() < deadline, pids
            pids.add(client.request("GET", "/pid").body.split()[1])
            sent += 1
            time.sleep(0.02)
        after = report(address)
        hist = after["request_duration_seconds"]
        assert after["requests_served"] == hist["count"] == hist["buckets"]["+Inf"] == sent, after
        assert sum(w["requests"] for w in after["workers"]) <= sent
        values = samples(parse_prometheus(page(address, "prometheus").body.decode()))
        assert values[("fcgibridge_request_duration_seconds_count", ())] == sent + 1  # and the JSON page
        assert values[("fcgibridge_requests_served_total", ())] == sent + 1
