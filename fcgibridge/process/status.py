"""The status and ping pages, and the per-request bookkeeping behind them and the access log.

``--status-path`` and ``--ping-path`` (off by default) are answered by the worker that
receives them, before any app runs, like PHP-FPM's ``pm.status_path`` and ``ping.path``;
``--status-bind`` answers the same page from the master (``status_listener.py``, through
:func:`status_page`). The figures come from the shared
:mod:`~fcgibridge.process.scoreboard`, so they add up every worker process. Formats:
plain text (default), ``?json``, ``?prometheus`` (text format 0.0.4) and
``?openmetrics`` (OpenMetrics 1.0.0); also ``?format=text|json|prometheus|openmetrics``.

What the page adds at read time, costing the request path nothing: each worker's RSS and
CPU time (``/proc/PID/stat``), the listen queues (:mod:`~fcgibridge.process.sockdiag`).
What costs the request path, only while a status page is on (the scoreboard also serves
the scaler and ``--timeout``, which need none of it): the duration histogram and the busy
map (about 0.6 µs a request, in shared memory), and each request's CPU time and the
worker's peak RSS after it (two ``getrusage`` calls, about 1.4 µs).

:class:`~fcgibridge.process.runtime.Runtime` gives every worker's :class:`WorkerState`
an :class:`Observer` when any of status, ping or access log is on, or a scoreboard
exists; otherwise the connection layer pays nothing. :class:`ScoreboardSampler` is the
master's part: it samples the listen queue every second.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from ..cgi import format_head, head_size
from ..config import Config
from ..server.connection import FastCGIProtocol, RequestStream
from .accesslog import AccessLog
from .scoreboard import BUCKETS, Scoreboard, Slot, SlotView, Totals
from .sockdiag import listen_queues, socket_inodes
from .supervisor import Supervisor, SupervisorEvents, WorkerProcess

__all__ = ["ObservedStream", "Observer", "ScoreboardSampler", "listen_queue", "render_status", "status_page",
           "status_report"]

#: Bytes of a response kept to read its head (status and headers) for the access log.
HEAD_LIMIT = 8192

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = b"application/openmetrics-text; version=1.0.0; charset=utf-8"

#: ``ru_maxrss`` is in KiB on Linux and the BSDs, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def _cpu_time() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ObservedStream(RequestStream):
    """A request stream that remembers when it started, its response head and its size."""

    __slots__ = ("booked", "cpu0", "duration", "head", "head_done", "sent", "t0", "wall")

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
        self.cpu0 = -1.0  # the process's CPU time at the start, when measured

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


def status_enabled(config: Config) -> bool:
    """Whether anyone can read the status page (the scoreboard may exist without one)."""
    return bool(config.status_path or config.status_bind)


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
        #: Each request's CPU time and the peak RSS after it: only when a status page shows them.
        self.measure = slot is not None and status_enabled(config)
        if slot is not None:  # the histogram and the busy map too
            slot.shown = self.measure
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
            if self.measure and isinstance(stream, ObservedStream):
                stream.cpu0 = _cpu_time()
        if self.pages:
            uri_path, script_path = request_paths(params)
            page = self.pages.get(uri_path) or self.pages.get(script_path)
            if page is not None:
                page(stream)
                return True
        return False

    def request_refused(self, stream: RequestStream) -> None:
        """The connection layer answered the request 503 past ``--limit-concurrency``."""
        if self.slot is not None:
            self.slot.request_refused()

    def book(self, stream: ObservedStream) -> None:
        """The request is over: its duration, and the scoreboard (once per request)."""
        if stream.booked:
            return
        stream.booked = True
        stream.duration = duration = time.monotonic() - stream.t0
        slot = self.slot
        if slot is not None:
            slot.request_done(duration, bool(self.slow_after) and duration >= self.slow_after)
            if stream.cpu0 >= 0:
                usage = resource.getrusage(resource.RUSAGE_SELF)
                slot.request_usage(max(0.0, usage.ru_utime + usage.ru_stime - stream.cpu0),
                                   usage.ru_maxrss * _MAXRSS_UNIT)

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
        if self.board is None:
            stream.end(format_head(503, _no_cache(b"text/plain; charset=utf-8")) + b"no scoreboard\n")
            return
        body, ctype = status_page(self.config, self.board, stream.params.get("QUERY_STRING", ""))
        stream.end(format_head(200, _no_cache(ctype)) + body)


def _no_cache(ctype: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Content-Type", ctype), (b"Cache-Control", b"no-cache, no-store, must-revalidate")]


def status_format(query_string: str) -> str:
    """The format a query string asks for: ``?json``, ``?format=json``, ...; "" for text."""
    query = parse_qs(query_string, keep_blank_values=True)
    fmt = (query.get("format") or [""])[0].lower()
    for name in ("json", "prometheus", "openmetrics", "text"):
        if name in query:
            fmt = name
    return fmt


def status_page(config: Config, board: Scoreboard, query_string: str,
                listeners: Iterable[int] | None = None) -> tuple[bytes, bytes]:
    """The whole status page (body, content type) for a request with *query_string*.

    Reads the scoreboard and the listen queues of *listeners* (socket inodes; None: as
    :func:`listen_queue` finds them), and raises the board's peaks to what it saw.
    """
    totals, slots = board.read()
    queue = listen_queue_state(listeners)
    report = status_report(config, totals, slots, None if queue is None else queue[0],
                           None if queue is None else queue[1])
    board.note_peaks(report["active_workers"], report["listen_queue"])
    return render_status(report, status_format(query_string))


# ---------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class Usage:
    """What ``/proc/PID/stat`` says of a process: resident memory and CPU time."""

    rss: int
    cpu_time: float


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_usage(pid: int) -> Usage | None:
    """RSS (bytes) and CPU time (user + system, seconds) of process *pid*; None where
    ``/proc`` does not tell (another system, the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # the name may hold spaces and parentheses
    try:
        return Usage(int(fields[21]) * _PAGE_SIZE, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    except (IndexError, ValueError):
        return None


def histogram(counts: Sequence[int], total: float) -> dict[str, Any]:
    """The request-duration histogram as the JSON page shows it: cumulative buckets by
    upper bound (``+Inf`` last), the count and the sum of the durations."""
    buckets: dict[str, int] = {}
    running = 0
    for bound, count in zip((*map(_number, BUCKETS), "+Inf"), counts or (0,) * (len(BUCKETS) + 1), strict=True):
        running += count
        buckets[bound] = running
    return {"buckets": buckets, "count": running, "sum": round(total, 6)}


def _number(value: float) -> str:
    return repr(float(value))


def _worker(s: SlotView, now: float) -> dict[str, Any]:
    busy = s.in_flight > 0
    usage = process_usage(s.pid)
    return {
        "pid": s.pid,
        "state": "busy" if busy else "idle",
        "requests": s.served,
        "refused_requests": s.refused,
        "accepted_conn": s.accepted,
        "in_flight": s.in_flight,
        "request_method": s.method,
        "request_uri": s.uri,
        # A busy worker: how long its latest request has run; an idle one: how long its last one took.
        "request_duration": round(now - s.request_start if busy else s.last_duration, 6),
        "slot": s.number,
        "start_time": int(s.started),
        "start_since": int(now - s.started) if s.started else 0,
        "rss": None if usage is None else usage.rss,
        "cpu_time": None if usage is None else round(usage.cpu_time, 2),
        # PHP-FPM's "last request cpu": CPU time as a share of the request's duration, in %.
        "last_request_cpu": round(100 * s.last_cpu / s.last_duration, 2) if s.last_duration > 0 else 0.0,
        "last_request_cpu_time": round(s.last_cpu, 6),
        "last_request_memory": s.last_memory,
    }


def status_report(config: Config, totals: Totals, slots: list[SlotView],
                  queue: int | None, queue_len: int | None = None) -> dict[str, Any]:
    """The status figures as one JSON-ready dict (*queue_len*: the kernel's size of the
    listen queue, when known; else ``--backlog``)."""
    now = time.time()
    workers = [_worker(s, now) for s in slots if s.alive]
    active = sum(1 for w in workers if w["state"] == "busy")
    return {
        "start_time": int(totals.start_time),
        "start_since": int(now - totals.start_time),
        "accepted_conn": totals.accepted,
        "requests_served": totals.served,
        "listen_queue": queue,
        "listen_queue_len": None if queue is None else queue_len or config.backlog,
        "active_workers": active,
        "idle_workers": sum(1 for w in workers if w["state"] == "idle"),
        "total_workers": len(workers),
        "in_flight_requests": sum(w["in_flight"] for w in workers),
        "max_workers_reached": totals.saturated,
        "slow_requests": totals.slow,
        "refused_requests": totals.refused,
        "process_manager": config.pm,
        "max_active_workers": max(totals.max_active_workers, active),
        "max_listen_queue": _most(totals.max_listen_queue, queue),
        "max_children_reached": totals.max_children_reached,
        "request_duration_seconds": histogram(totals.durations, totals.duration_sum),
        "workers": workers,
    }


def _most(seen: int, now: int | None) -> int | None:
    """The longest listen queue: the board's, or the one just measured; None when never known."""
    if now is None:
        return seen or None
    return max(seen, now)


# ---------------------------------------------------------------- the formats


@dataclass
class Metric:
    """One metric family: its name (without ``_total``), kind, help, unit and samples
    (name suffix, labels, value)."""

    name: str
    kind: str
    help: str
    unit: str = ""
    samples: list[tuple[str, dict[str, str], float | int]] = field(default_factory=list)


#: report key -> (kind, help, unit); the metric is ``fcgibridge_`` + the key (+ ``_seconds``
#: for start_time), a counter's sample has ``_total``.
_SERVER_METRICS = {
    "start_time": ("gauge", "When the server started (Unix time).", "seconds"),
    "start_since": ("gauge", "Seconds since the server started.", ""),
    "accepted_conn": ("counter", "Connections accepted by all workers.", ""),
    "requests_served": ("counter", "Requests served by all workers.", ""),
    "listen_queue": ("gauge", "Connections waiting in the listen queues.", ""),
    "listen_queue_len": ("gauge", "Size of each listen queue.", ""),
    "max_listen_queue": ("gauge", "The most connections seen waiting in the listen queues.", ""),
    "active_workers": ("gauge", "Workers with a request in flight.", ""),
    "idle_workers": ("gauge", "Workers without a request in flight.", ""),
    "total_workers": ("gauge", "Worker processes.", ""),
    "max_active_workers": ("gauge", "The most workers seen with a request in flight at once.", ""),
    "in_flight_requests": ("gauge", "Requests in flight in all workers.", ""),
    "max_workers_reached": ("counter", "Requests that started while their worker was at capacity.", ""),
    "slow_requests": ("counter", "Requests that ran longer than --slowlog-timeout.", ""),
    "refused_requests": ("counter", "Requests answered 503 past --limit-concurrency.", ""),
    "max_children_reached": ("counter", "Times another worker was wanted past --max-workers.", ""),
}

#: worker field -> (metric name after fcgibridge_worker_, kind, help, unit).
_WORKER_METRICS = {
    "pid": ("pid", "gauge", "The process id of the worker in this slot.", ""),
    "requests": ("requests", "counter", "Requests served by one worker.", ""),
    "refused_requests": ("refused_requests", "counter", "Requests one worker answered 503 past --limit-concurrency.",
                         ""),
    "accepted_conn": ("accepted_conn", "counter", "Connections accepted by one worker.", ""),
    "in_flight": ("in_flight", "gauge", "Requests in flight in one worker.", ""),
    "request_duration": ("request_duration_seconds", "gauge",
                         "How long the busy worker's request has run, or the idle worker's last one took.",
                         "seconds"),
    "rss": ("rss_bytes", "gauge", "Resident memory of one worker.", "bytes"),
    "cpu_time": ("cpu_seconds", "counter", "CPU time (user + system) one worker used.", "seconds"),
    "last_request_cpu_time": ("last_request_cpu_seconds", "gauge",
                              "CPU time the worker used while its last request ran.", "seconds"),
    "last_request_memory": ("last_request_memory_bytes", "gauge",
                            "The worker's peak resident memory when its last request ended.", "bytes"),
}


def metrics(report: dict[str, Any]) -> list[Metric]:
    """The report as metric families, labelled ``worker="N"`` (the slot number) per worker."""
    families = []
    for key, (kind, text, unit) in _SERVER_METRICS.items():
        value = report.get(key)
        if value is not None:
            families.append(Metric(f"fcgibridge_{key}" + ("_seconds" if unit else ""), kind, text, unit,
                                   [("_total" if kind == "counter" else "", {}, value)]))
    hist = report["request_duration_seconds"]
    samples: list[tuple[str, dict[str, str], float | int]] = [
        ("_bucket", {"le": bound}, count) for bound, count in hist["buckets"].items()]
    samples += [("_count", {}, hist["count"]), ("_sum", {}, hist["sum"])]
    families.append(Metric("fcgibridge_request_duration_seconds", "histogram",
                           "How long requests took, from their start to their END_REQUEST.", "seconds", samples))
    for key, (name, kind, text, unit) in _WORKER_METRICS.items():
        family = Metric(f"fcgibridge_worker_{name}", kind, text, unit)
        for worker in report["workers"]:
            if worker.get(key) is not None:
                family.samples.append(("_total" if kind == "counter" else "", {"worker": str(worker["slot"])},
                                       worker[key]))
        if family.samples:
            families.append(family)
    return families


def _sample(name: str, labels: dict[str, str], value: float | int) -> str:
    shown = ",".join(f'{key}="{text}"' for key, text in labels.items())
    return f"{name}{{{shown}}} {value}" if shown else f"{name} {value}"


def render_prometheus(families: list[Metric]) -> bytes:
    """Prometheus text format 0.0.4 (a counter's family is named with its ``_total``)."""
    lines = []
    for family in families:
        name = family.name + ("_total" if family.kind == "counter" else "")
        lines += [f"# HELP {name} {family.help}", f"# TYPE {name} {family.kind}"]
        lines += [_sample(family.name + suffix, labels, value) for suffix, labels, value in family.samples]
    return ("\n".join(lines) + "\n").encode()


def render_openmetrics(families: list[Metric]) -> bytes:
    """OpenMetrics 1.0.0 text: families without ``_total``, units declared, ``# EOF`` at the end."""
    lines = []
    for family in families:
        lines += [f"# TYPE {family.name} {family.kind}", f"# HELP {family.name} {family.help}"]
        if family.unit:
            lines.append(f"# UNIT {family.name} {family.unit}")
        lines += [_sample(family.name + suffix, labels, value) for suffix, labels, value in family.samples]
    lines.append("# EOF")
    return ("\n".join(lines) + "\n").encode()


def render_text(report: dict[str, Any]) -> bytes:
    """Aligned ``name: value`` lines, the histogram's buckets indented, then one block per worker."""
    width = max(len(key) for key in report) + 2
    out = []
    for key, value in report.items():
        if key == "workers":
            continue
        if isinstance(value, dict):  # the histogram
            out.append(f"{key}:")
            out += [f"{'  le ' + bound + ':':<{width}}{count}" for bound, count in value["buckets"].items()]
            out += [f"{'  ' + name + ':':<{width}}{value[name]}" for name in ("count", "sum")]
            continue
        out.append(f"{key + ':':<{width}}{'-' if value is None else value}")
    for worker in report["workers"]:
        out.append("")
        out.append("*" * 40)
        out += [f"{key + ':':<{width}}{'-' if value is None else value}" for key, value in worker.items()]
    return ("\n".join(out) + "\n").encode()


def render_status(report: dict[str, Any], fmt: str) -> tuple[bytes, bytes]:
    """The body and content type of the status page in *fmt* (text, json, prometheus, openmetrics)."""
    if fmt == "json":
        return json.dumps(report).encode() + b"\n", b"application/json"
    if fmt == "prometheus":
        return render_prometheus(metrics(report)), PROMETHEUS_TYPE
    if fmt == "openmetrics":
        return render_openmetrics(metrics(report)), OPENMETRICS_TYPE
    return render_text(report), b"text/plain; charset=utf-8"


# ---------------------------------------------------------------- the listen queue

#: The inodes of the server's listening sockets, once the master said which
#: (:class:`ScoreboardSampler`, before forking); empty: every socket this process has.
_listeners: list[int] = []


def watch_listeners(sockets: Iterable[socket.socket]) -> None:
    """Measure the listen queue of these sockets only (not, say, the status listener's)."""
    _listeners[:] = [os.fstat(sock.fileno()).st_ino for sock in sockets]


def listen_queue_state(inodes: Iterable[int] | None = None) -> tuple[int, int | None] | None:
    """Connections waiting in the listening sockets' accept queues, summed, and the
    queues' size (the largest; None when not told); None when no queue is known."""
    queues = listen_queues(list(inodes) if inodes is not None else _listeners or socket_inodes())
    if not queues:
        return None
    backlogs = [q.backlog for q in queues.values()]
    return (sum(q.waiting for q in queues.values()),
            None if None in backlogs else max(b for b in backlogs if b is not None))


def listen_queue(inodes: Iterable[int] | None = None) -> int | None:
    """Connections waiting to be accepted, summed over the listening sockets (*inodes*,
    else the server's, else every one this process has): unix sockets and TCP, through
    sock_diag, TCP from ``/proc/net/tcp*`` where netlink fails. None when none is known."""
    state = listen_queue_state(inodes)
    return None if state is None else state[0]


class ScoreboardSampler(SupervisorEvents):
    """The master's part of the status page: which listeners to measure, the slot each new
    worker tries first (its number's), a dead worker's slot out of the busy map, and every
    second the listen queue, so its maximum sees what happens between two status requests."""

    def __init__(self, board: Scoreboard, listeners: Sequence[socket.socket] = ()) -> None:
        self.board = board
        if listeners:
            watch_listeners(listeners)

    def child_started(self, worker: WorkerProcess) -> None:
        self.board.preferred = worker.number - 1

    def exited(self, supervisor: Supervisor, worker: WorkerProcess, code: int) -> None:
        self.board.released(worker.pid)

    def tick(self, supervisor: Supervisor, now: float) -> None:
        self.board.note_peaks(0, listen_queue())
