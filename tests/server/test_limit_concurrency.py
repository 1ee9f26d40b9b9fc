"""--limit-concurrency: past N requests in flight a worker answers new ones at once with 503.

Through real sockets with the project's client, for WSGI in threads, WSGI ``--sync`` and
ASGI: with N=2 and two slow requests in flight, a third gets the 503 (with Retry-After)
at once while the status page still answers, and the first two finish; without the
option, nothing is refused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from support import ServerThread, serve, wait_until

from fcgibridge.client import FastCGIClient, Response

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class Gate:
    """Holds every /slow request until :meth:`open`; bounded, so a test never hangs."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def open(self) -> None:
        self.event.set()

    def wsgi(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = environ["wsgi.input"].read()
        if environ["PATH_INFO"] == "/slow":
            self.event.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done %d" % len(body)]

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/slow":
            deadline = time.monotonic() + 10
            while not self.event.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done 0"})


def slow_body(gate: Gate) -> Iterator[bytes]:
    """A request body whose last piece waits for the gate (a slow upload)."""
    yield b"x" * 10
    gate.event.wait(10)
    yield b"y" * 10


def start_slow(pool: ThreadPoolExecutor, server: ServerThread, count: int,
               body: Callable[[], Any] | None = None) -> list[Future[Response]]:
    """``count`` slow requests in flight at once, each on its own connection."""
    def one() -> Response:
        with FastCGIClient(server.address, timeout=15) as client:
            return client.request("POST" if body else "GET", "/slow", body=body() if body else b"")

    futures = [pool.submit(one) for _ in range(count)]
    wait_until(lambda: server.state.active_requests == count, 10, f"{count} requests in flight")
    return futures


def check_third_refused(server: ServerThread, gate: Gate, futures: list[Future[Response]]) -> None:
    try:
        with FastCGIClient(server.address, timeout=5) as client:
            began = time.monotonic()
            refused = client.request("GET", "/slow")
            took = time.monotonic() - began
            assert refused.status == 503, refused
            assert took < 1.0, took
            assert refused.header("Retry-After") == "1"
            assert b"too many requests in flight" in refused.body
            assert client.request("GET", "/ping").body.strip() == b"pong"  # the observer answers past the limit
        assert server.state.refused == 1
    finally:
        gate.open()
    for future in futures:
        response = future.result(15)
        assert response.status == 200 and response.body.startswith(b"done"), response


def test_wsgi_threads_third_request_gets_503_at_once() -> None:
    gate = Gate()
    with serve(gate.wsgi, limit_concurrency=2, ping_path="/ping") as server, ThreadPoolExecutor(2) as pool:
        check_third_refused(server, gate, start_slow(pool, server, 2))


def test_wsgi_sync_third_request_gets_503_at_once() -> None:
    # --sync runs one call at a time on the loop thread: two slow uploads are in flight
    # (not yet running), and the loop is free to refuse the third.
    gate = Gate()
    with serve(gate.wsgi, sync=True, limit_concurrency=2, ping_path="/ping") as server, \
            ThreadPoolExecutor(2) as pool:
        futures = start_slow(pool, server, 2, body=lambda: slow_body(gate))
        check_third_refused(server, gate, futures)
        assert [f.result().body for f in futures] == [b"done 20", b"done 20"]


def test_asgi_third_request_gets_503_at_once() -> None:
    gate = Gate()
    with serve(gate.asgi, "asgi3", lifespan="off", limit_concurrency=2, ping_path="/ping") as server, \
            ThreadPoolExecutor(2) as pool:
        check_third_refused(server, gate, start_slow(pool, server, 2))


def test_no_limit_by_default() -> None:
    gate = Gate()
    with serve(gate.wsgi) as server, ThreadPoolExecutor(3) as pool:
        futures = start_slow(pool, server, 3)
        gate.open()
        assert [f.result(15).status for f in futures] == [200, 200, 200]
        assert server.state.refused == 0


def test_refused_requests_on_the_status_page_of_real_workers() -> None:
    """A supervised worker process (--timeout), --limit-concurrency 1: a request past the limit is refused by
    its worker, and the status page (JSON and Prometheus, as prometheus_client reads it)
    counts it for the server and for that worker's slot."""
    import json

    from prometheus_client.parser import text_string_to_metric_families
    from support import free_port, request_in_thread, run_fcgibridge

    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.pm_app:app", "-b", address, "-w", "1", "--timeout", "30",
                        "--limit-concurrency", "1", "--status-path", "/status", address=address):
        thread, result = request_in_thread(address, "/slow?s=2")
        try:
            client = FastCGIClient(address, timeout=5)
            wait_until(lambda: json.loads(client.request("GET", "/status?json").body)["active_workers"] == 1,
                       10, "the slow request in flight")
            assert client.request("GET", "/pid").status == 503
            report = json.loads(client.request("GET", "/status?json").body)
            assert report["refused_requests"] == 1, report
            assert [w["refused_requests"] for w in report["workers"]] == [1], report
            metrics = client.request("GET", "/status?prometheus").body.decode()
            values = {(s.name, tuple(s.labels.items())): s.value
                      for family in text_string_to_metric_families(metrics) for s in family.samples}
            assert values[("fcgibridge_refused_requests_total", ())] == 1
            assert values[("fcgibridge_worker_refused_requests_total", (("worker", "1"),))] == 1
        finally:
            thread.join(15)
    assert result and result[0].status == 200, result
