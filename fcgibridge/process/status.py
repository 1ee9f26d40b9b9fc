"""The status and ping pages, and the per-request bookkeeping behind them and the access log.

``--status-path`` and ``--ping-path`` (off by default) are answered by the worker that
receives them, before any app runs, like PHP-FPM's ``pm.status_path`` and ``ping.path``.
The status figures come from the shared :mod:`~fcgibridge.process.scoreboard`, so they
add up every worker process. Formats: plain text (default), ``?json``, and
``?prometheus`` (also ``?format=text|json|prometheus``; ``?openmetrics`` is the same as
``?prometheus``).

:class:`~fcgibridge.process.runtime.Runtime` gives every worker's :class:`WorkerState`
an :class:`Observer` when any of status, ping or access log is on; otherwise the
connection layer pays nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from ..cgi import format_head, head_size
from ..config import Config
from ..server.connection import FastCGIProtocol, RequestStream
from .accesslog import AccessLog
from .scoreboard import Scoreboard, Slot, SlotView, Totals

__all__ = ["ObservedStream", "Observer", "listen_queue", "render_status"]

#: Bytes of a response kept to read its head (status and headers) for the access log.
HEAD_LIMIT = 8192


class ObservedStream(RequestStream):
    """A request stream that remembers when it started, its response head and its size."""

    __slots__ = ("booked", "duration", "head", "head_done", "sent", "t0", "wall")

    def __init__(self, conn: FastCGIProtocol, request_id: int, role: Any, keep_conn: bool,
                 params: dict[str, str]) -> None:
        super().__init__(conn, request_id, role, keep_conn, params)
        self.t0 = time.monotonic()
        self.wall = time.time()
        self.head = b""
        self.head_done = False
        self.sent = 0
        self.booked = False
        self.duration = 0.0

    def write(self, data: bytes) -> None:
        super().write(data)
        self._count(data)

    def end(self, data: bytes = b"", app_status: int = 0, head: bytes = b"") -> None:
        if not self.closed:
            self._count(head)
            self._count(data)
            observer = self._conn.state.observer
            if isinstance(observer, Observer):
                # The scoreboard first: once the web server has the answer, a status
                # request it sends next (to any worker) must count this one as served.
                observer.book(self)
        super().end(data, app_status, head)

    def _count(self, data: bytes) -> None:
        self.sent += len(data)
        if not self.head_done:
            self.head += data[: HEAD_LIMIT - len(self.head)]
            self.head_done = len(self.head) >= HEAD_LIMIT or head_size(self.head) is not None

    @property
    def body_sent(self) -> int:
        """Response body bytes sent: all but the CGI head (all but what was kept of it, if
        the head never ended)."""
        size = head_size(self.head)
        return max(0, self.sent - (len(self.head) if size is None else size))


def request_paths(params: dict[str, str]) -> tuple[str, str]:
    """The request's path as REQUEST_URI says it, and as SCRIPT_NAME + PATH_INFO."""
    return (params.get("REQUEST_URI", "").partition("?")[0],
            params.get("SCRIPT_NAME", "") + params.get("PATH_INFO", ""))


class Observer:
    """Per-worker hooks the connection layer calls (see :class:`WorkerState`)."""

    stream_class: type[RequestStream] = ObservedStream

    def __init__(self, config: Config, slot: Slot | None, board: Scoreboard | None, access: AccessLog | None,
                 capacity: int) -> None:
        self.config = config
        self.slot = slot
        self.board = board
        self.access = access
        self.capacity = capacity
        self.slow_after = float(config.slowlog_timeout or 0.0)
        self.pages: dict[str, Callable[[RequestStream], None]] = {}
        if config.status_path:
            self.pages[config.status_path] = self.answer_status
        if config.ping_path:
            self.pages[config.ping_path] = self.answer_ping

    def connection_made(self) -> None:
        if self.slot is not None:
            self.slot.connection_accepted()

    def request_started(self, stream: RequestStream) -> bool:
        """Book the request; True when it was answered here (status or ping)."""
        params = stream.params
        if self.slot is not None:
            self.slot.request_started(params.get("REQUEST_METHOD", ""), params.get("REQUEST_URI", "")
                                      or "".join(request_paths(params)[1:]),
                                      self.slot.in_flight >= self.capacity)
        if self.pages:
            uri_path, script_path = request_paths(params)
            page = self.pages.get(uri_path) or self.pages.get(script_path)
            if page is not None:
                page(stream)
                return True
        return False

    def book(self, stream: ObservedStream) -> None:
        """The request is over: its duration, and the scoreboard (once per request)."""
        if stream.booked:
            return
        stream.booked = True
        stream.duration = duration = time.monotonic() - stream.t0
        if self.slot is not None:
            self.slot.request_done(duration, bool(self.slow_after) and duration >= self.slow_after)

    def request_done(self, stream: RequestStream) -> None:
        assert isinstance(stream, ObservedStream)
        self.book(stream)  # aborted or lost: not booked by end()
        if self.access is not None:
            self.access.log(stream.params, stream.head, stream.body_sent, stream.wall, stream.duration)

    # -- the pages

    def answer_ping(self, stream: RequestStream) -> None:
        body = (self.config.ping_response + "\n").encode()
        stream.end(format_head(200, _no_cache(b"text/plain; charset=utf-8")) + body)

    def answer_status(self, stream: RequestStream) -> None:
        query = parse_qs(stream.params.get("QUERY_STRING", ""), keep_blank_values=True)
        fmt = (query.get("format") or [""])[0].lower()
        for name in ("json", "prometheus", "openmetrics", "text"):
            if name in query:
                fmt = name
        if self.board is None:
            stream.end(format_head(503, _no_cache(b"text/plain; charset=utf-8")) + b"no scoreboard\n")
            return
        totals, slots = self.board.read()
        report = status_report(self.config, totals, slots, listen_queue())
        body, ctype = render_status(report, fmt)
        stream.end(format_head(200, _no_cache(ctype)) + body)


def _no_cache(ctype: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Content-Type", ctype), (b"Cache-Control", b"no-cache, no-store, must-revalidate")]


def status_report(config: Config, totals: Totals, slots: list[SlotView],
                  queue: int | None) -> dict[str, Any]:
    """The status figures as one JSON-ready dict."""
    now = time.time()
    live = [s for s in slots if s.alive]
    workers = []
    for s in live:
        busy = s.in_flight > 0
        workers.append({
            "pid": s.pid,
            "state": "busy" if busy else "idle",
            "requests": s.served,
            "accepted_conn": s.accepted,
            "in_flight": s.in_flight,
            "request_method": s.method,
            "request_uri": s.uri,
            # A busy worker: how long its latest request has run; an idle one: how long its last one took.
            "request_duration": round(now - s.request_start if busy else s.last_duration, 6),
        })
    return {
        "start_time": int(totals.start_time),
        "start_since": int(now - totals.start_time),
        "accepted_conn": totals.accepted,
        "requests_served": totals.served,
        "listen_queue": queue,
        "listen_queue_len": None if queue is None else config.backlog,
        "active_workers": sum(1 for w in workers if w["state"] == "busy"),
        "idle_workers": sum(1 for w in workers if w["state"] == "idle"),
        "total_workers": len(workers),
        "in_flight_requests": sum(s.in_flight for s in live),
        "max_workers_reached": totals.saturated,
        "slow_requests": totals.slow,
        "workers": workers,
    }


_HELP = {
    "start_since": "Seconds since the server started.",
    "accepted_conn": "Connections accepted by all workers.",
    "requests_served": "Requests served by all workers.",
    "listen_queue": "Connections waiting in the listen queues (TCP on Linux only).",
    "listen_queue_len": "Size (--backlog) of each listen queue (TCP on Linux only).",
    "active_workers": "Workers with a request in flight.",
    "idle_workers": "Workers without a request in flight.",
    "total_workers": "Worker processes.",
    "in_flight_requests": "Requests in flight in all workers.",
    "max_workers_reached": "Requests that started while their worker was at capacity.",
    "slow_requests": "Requests that ran longer than --slowlog-timeout.",
}


def render_status(report: dict[str, Any], fmt: str) -> tuple[bytes, bytes]:
    """The body and content type of the status page in *fmt* (text, json, prometheus)."""
    if fmt == "json":
        return json.dumps(report).encode() + b"\n", b"application/json"
    if fmt in ("prometheus", "openmetrics"):
        lines = []
        for key, text in _HELP.items():
            value = report[key]
            if value is None:
                continue
            name = f"fcgibridge_{key}" + ("_total" if key in ("accepted_conn", "requests_served",
                                                                "max_workers_reached", "slow_requests") else "")
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        lines += ["# HELP fcgibridge_worker_requests_total Requests served by one worker.",
                  "# TYPE fcgibridge_worker_requests_total counter"]
        lines += [f'fcgibridge_worker_requests_total{{pid="{w["pid"]}"}} {w["requests"]}' for w in report["workers"]]
        lines += ["# HELP fcgibridge_worker_in_flight Requests in flight in one worker.",
                  "# TYPE fcgibridge_worker_in_flight gauge"]
        lines += [f'fcgibridge_worker_in_flight{{pid="{w["pid"]}"}} {w["in_flight"]}' for w in report["workers"]]
        return ("\n".join(lines) + "\n").encode(), b"text/plain; version=0.0.4; charset=utf-8"
    width = max(len(key) for key in report) + 2
    out = []
    for key, value in report.items():
        if key == "workers":
            continue
        shown = "-" if value is None else value
        out.append(f"{key + ':':<{width}}{shown}")
    for worker in report["workers"]:
        out.append("")
        out.append("*" * 40)
        for key, value in worker.items():
            out.append(f"{key + ':':<{width}}{value}")
    return ("\n".join(out) + "\n").encode(), b"text/plain; charset=utf-8"


def listen_queue() -> int | None:
    """Connections waiting to be accepted, summed over this process's listening TCP sockets.

    Best effort, Linux only: for a socket in LISTEN state, ``/proc/net/tcp`` shows the
    accept queue length as rx_queue. None when no listener is TCP (unix sockets do not
    tell) or the platform does not tell.
    """
    inodes = set()
    try:
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        return None
    waiting = 0
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                        waiting += int(fields[4].partition(":")[2], 16)
                        found = True
        except OSError:
            continue
    return waiting if found else None
