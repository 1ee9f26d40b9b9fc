"""``fcgibridge bench``: load on a FastCGI server, straight over FastCGI, and a report of
how fast it answered.

One asyncio :class:`asyncio.Protocol` per connection (:class:`_Connection`) writes
requests whose records were encoded once, by the protocol core, before the run (one
byte string per request id; nothing is encoded per request), and splits the answers into
records with the core's :class:`~fcgibridge.protocol.RecordReader`; the CGI head is
parsed by the package's one parser (:mod:`fcgibridge.cgi`), once per distinct head.
A :class:`Load` hands out the requests (``-n``) or the time (``-d``) to its connections
and counts what they report in a :class:`~fcgibridge.client._bench_stats.Tally`. With
``-P N`` each of N forked processes runs a :class:`Load` of its own on its own event
loop, and the parent merges their tallies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from ..cgi import MAX_HEAD_SIZE, CGIResponseError, find_head_end, parse_head
from ..errors import UserError
from ..protocol import FCGI_MAX_REQS, FCGI_MPXS_CONNS, ClientConnection, RecordReader, RemoteProtocolError
from ..protocol.records import parse_end_request
from ._base import FastCGIError, build_params, parse_address
from ._bench_stats import RunShape, Tally, report, summary
from ._cli import request_head
from ._sync import FastCGIClient

# Record types and protocol statuses as plain ints, for the per-record path.
_STDOUT, _STDERR, _END_REQUEST = 6, 7, 3
_REFUSALS = {1: "cant_mpx_conn", 2: "overloaded", 3: "unknown_role"}

#: How often the load looks for requests past their timeout and publishes its progress.
TICK = 0.1

#: Distinct response heads whose status is remembered (a head is parsed once).
_HEAD_CACHE_SIZE = 1024

#: Without keep-alive, how long to wait for the server to close the connection after
#: END_REQUEST (the spec has the application close it) before closing it ourselves.
#: Closing second leaves the TIME_WAIT on the server's side, not on our local ports.
CLOSE_GRACE = 1.0


@dataclass(frozen=True)
class Plan:
    """Everything one process needs to make its share of the load."""

    address: str
    family: int
    sockaddr: Any
    #: The bytes of one whole request (BEGIN_REQUEST, PARAMS, STDIN) for request id
    #: ``i + 1``: one per request in flight on a connection.
    payloads: tuple[bytes, ...]
    connections: int
    #: How many requests to make (None: as many as ``duration`` allows).
    requests: int | None
    duration: float | None
    warmup: float
    keep_alive: bool
    timeout: float

    @property
    def streams(self) -> int:
        return len(self.payloads)


def encode_requests(params: dict[str, str], body: bytes, *, keep_alive: bool, streams: int) -> tuple[bytes, ...]:
    """The request's records, once for each request id from 1 to ``streams``, by the protocol core."""
    core = ClientConnection()
    payloads = []
    for _ in range(streams):
        request_id, data = core.begin_request(params, keep_conn=keep_alive)
        payloads.append(data + core.end_stdin(request_id, body))
    return tuple(payloads)


# ------------------------------------------------------------------------ one process


class Load:
    """One process's load: hands out the requests, counts their outcomes, knows when to stop."""

    def __init__(self, plan: Plan, loop: asyncio.AbstractEventLoop) -> None:
        self.plan = plan
        self.loop = loop
        self.tally = Tally()
        #: Requests not yet handed out (None: no limit).
        self.left = plan.requests
        self.running = True
        self.measuring = plan.warmup <= 0
        self.in_flight = 0
        self.connections: set[_Connection] = set()
        self.heads: dict[bytes, int] = {}
        self.started = time.perf_counter()
        self.stopped = loop.create_future()

    def take(self) -> bool:
        """May one more request start? (It is counted as in flight until it ends or is given back.)"""
        if not self.running:
            return False
        if self.measuring and self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        self.in_flight += 1
        return True

    def give_back(self) -> None:
        """A request that was taken but never ran to an end (its connection went away)."""
        self.in_flight -= 1
        if self.measuring and self.left is not None and self.running:
            self.left += 1

    def ended(self, micros: int | None, status: int | None, error: str | None) -> None:
        """A request ended: its latency (None without an answer), status and error kind."""
        self.in_flight -= 1
        tally = self.tally
        # Beyond -n: requests in flight when the warm-up ended are counted only up to it.
        if self.left != 0 or tally.requests != self.plan.requests:
            tally.requests += 1
            if micros is not None:
                tally.latency.add(micros)
            if status is not None:
                tally.statuses[status] += 1
            if error is not None:
                tally.errors[error] += 1
        if self.left == 0 and self.in_flight == 0 and self.measuring:
            self.stop()

    def note(self, error: str, message: str) -> None:
        """What went wrong the first time a request failed with ``error``, for the report."""
        self.tally.notes.setdefault(error, message)

    def start_measuring(self) -> None:
        """The warm-up is over: forget its counts; the requests in flight count against ``-n``."""
        self.tally = Tally()
        self.started = time.perf_counter()
        self.measuring = True
        if self.left is not None:
            self.left = max(self.left - self.in_flight, 0)
        if self.plan.duration is not None:
            self.loop.call_later(self.plan.duration, self.stop)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.tally.duration = time.perf_counter() - self.started
        for connection in list(self.connections):
            connection.close()
        if not self.stopped.done():
            self.stopped.set_result(None)

    def expire(self) -> None:
        """End the requests older than the timeout (their connections are closed)."""
        limit = time.perf_counter_ns() - int(self.plan.timeout * 1e9)
        for connection in list(self.connections):
            connection.expire(limit)

    def status_of(self, head: bytes) -> int:
        """The status of a response head; a :class:`CGIResponseError` if it is not CGI."""
        status = self.heads.get(head)
        if status is None:
            status = parse_head(head).status
            if len(self.heads) >= _HEAD_CACHE_SIZE:
                self.heads.clear()
            self.heads[head] = status
        return status


class _Connection(asyncio.Protocol):
    """One connection: keeps each of its request ids busy with the same request.

    Per request id (the index in the lists): when it was sent (0: idle), its status
    (None: the head is still coming, -1: the head was not CGI), and the head so far when
    it came in more than one record.
    """

    def __init__(self, load: Load, first_taken: bool) -> None:
        self.load = load
        self.payloads = (b"", *load.plan.payloads)
        self.keep_alive = load.plan.keep_alive
        count = len(self.payloads)
        self.sent = [0] * count
        self.status: list[int | None] = [None] * count
        self.heads: list[bytearray | None] = [None] * count
        self.reader = RecordReader()
        self.transport: asyncio.Transport | None = None
        #: Closed, or waiting for the server to close it: nothing more is written or counted.
        self.closing = False
        self.close_later: asyncio.TimerHandle | None = None
        self.first_taken = first_taken
        self.lost = load.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no subclass of it
        if not self.load.running:  # connected just after the end
            if self.first_taken:
                self.load.give_back()
            self.transport.close()
            return
        self.load.connections.add(self)
        writes = []
        for request_id in range(1, len(self.payloads)):
            if (request_id == 1 and self.first_taken) or self.load.take():
                writes.append(self._send(request_id))
        if writes:
            self.transport.write(b"".join(writes))
        else:
            self.transport.close()

    def _send(self, request_id: int) -> bytes:
        self.sent[request_id] = time.perf_counter_ns()
        self.status[request_id] = None
        self.heads[request_id] = None
        return self.payloads[request_id]

    def data_received(self, data: bytes) -> None:
        tally = self.load.tally
        tally.total_bytes += len(data)
        try:
            records = self.reader.feed_raw(data)
        except RemoteProtocolError as exc:
            self._fail_all("protocol", f"broke the FastCGI protocol: {exc}")
            return
        writes: list[bytes] = []
        sent = self.sent
        for rtype, request_id, content in records:
            if request_id >= len(sent) or not sent[request_id]:
                continue  # management records, and records of no request in flight
            if rtype == _STDOUT:
                if not content:
                    continue
                if self.status[request_id] is None:
                    self._head(request_id, content)
                else:
                    tally.body_bytes += len(content)
            elif rtype == _END_REQUEST:
                self._end(request_id, content, writes)
                if self.closing:
                    return
            elif rtype != _STDERR:
                self._fail_all("protocol", f"sent a record of type {rtype} for request {request_id}")
                return
        if writes and self.transport is not None:
            self.transport.write(b"".join(writes))

    def _head(self, request_id: int, content: bytes) -> None:
        partial = self.heads[request_id]
        if partial is not None:
            partial += content
            data: bytes | bytearray = partial
        else:
            data = content
        found = find_head_end(data)
        if found is None:
            if len(data) > MAX_HEAD_SIZE:
                self.status[request_id] = -1
            elif partial is None:
                self.heads[request_id] = bytearray(content)
            return
        end, body_start = found
        try:
            self.status[request_id] = self.load.status_of(bytes(data[:end]))
        except CGIResponseError:
            self.status[request_id] = -1
        self.heads[request_id] = None
        self.load.tally.body_bytes += len(data) - body_start

    def _end(self, request_id: int, content: bytes, writes: list[bytes]) -> None:
        try:
            app_status, protocol_status = parse_end_request(content)
        except RemoteProtocolError as exc:
            self._fail_all("protocol", f"broke the FastCGI protocol: {exc}")
            return
        micros = (time.perf_counter_ns() - self.sent[request_id]) // 1000
        self.sent[request_id] = 0
        status = self.status[request_id]
        if status is None and not protocol_status:
            status = self._head_without_blank_line(request_id)
        error = _REFUSALS.get(protocol_status, "protocol") if protocol_status else None
        if status == -1:
            status, error = None, error or "protocol"
            self.load.note("protocol", "sent a response that is not CGI (a malformed head)")
        elif error is None and status is not None and not 200 <= status < 400:
            error = "status"
        elif error is None and app_status:
            error = "app_status"
        load = self.load
        load.ended(micros, status, error)
        if not self.keep_alive:
            self.closing = True
            self.close_later = load.loop.call_later(CLOSE_GRACE, self.close)
        elif load.take():
            writes.append(self._send(request_id))

    def _head_without_blank_line(self, request_id: int) -> int:
        """The status of a response that ended inside its head (or sent nothing): as the
        client does, the head is what came."""
        head = bytes(self.heads[request_id] or b"")
        self.heads[request_id] = None
        try:
            return self.load.status_of(head.rstrip(b"\r\n"))
        except CGIResponseError:
            return -1

    def _fail_all(self, error: str, message: str) -> None:
        """End every request in flight with ``error`` and close the connection."""
        self.load.note(error, message)
        for request_id, sent in enumerate(self.sent):
            if sent:
                self.sent[request_id] = 0
                self.load.ended(None, None, error)
        self.close(abort=True)

    def expire(self, limit: int) -> None:
        """Requests sent before ``limit`` (ns) time out; the others on this connection are given back."""
        if not any(0 < sent < limit for sent in self.sent):
            return
        for request_id, sent in enumerate(self.sent):
            if sent:
                self.sent[request_id] = 0
                if sent < limit:
                    self.load.note("timeout", f"no END_REQUEST within {self.load.plan.timeout:g} s")
                    self.load.ended(None, None, "timeout")
                else:
                    self.load.give_back()
        self.close(abort=True)

    def close(self, *, abort: bool = False) -> None:
        """Close the connection; ``abort``, or requests in flight: at once, unsent bytes dropped."""
        if self.transport is None:
            return
        self.closing = True
        if abort or any(self.sent):
            self.transport.abort()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.connections.discard(self)
        if self.close_later is not None:
            self.close_later.cancel()
        for request_id, sent in enumerate(self.sent):
            if sent:
                self.sent[request_id] = 0
                if self.load.running:
                    self.load.note("closed", "closed the connection before END_REQUEST" if exc is None
                                   else f"broke the connection before END_REQUEST: {_reason(exc)}")
                    self.load.ended(None, None, "closed")
                else:
                    self.load.give_back()
        if not self.lost.done():
            self.lost.set_result(None)


async def _connect(load: Load, first_taken: bool) -> _Connection:
    plan = load.plan
    loop = load.loop
    connection = _Connection(load, first_taken)
    async with asyncio.timeout(plan.timeout):
        if plan.family == socket.AF_UNIX:
            await loop.create_unix_connection(lambda: connection, plan.sockaddr)
        else:
            await loop.create_connection(lambda: connection, plan.sockaddr[0], plan.sockaddr[1])
    return connection


async def _slot(load: Load) -> None:
    """One connection at a time, for as long as the load wants requests: a new one after
    each request without keep-alive, and after the server closed or an error."""
    while load.take():
        try:
            connection = await _connect(load, True)
        except (OSError, TimeoutError) as exc:
            if load.running:
                load.note("connect", f"cannot connect: {_reason(exc)}")
                load.ended(None, None, "connect")
            else:
                load.give_back()
            continue
        await connection.lost


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _tick(load: Load, publish: Callable[[Tally], None]) -> None:
    if not load.running:
        return
    load.expire()
    publish(load.tally)
    load.loop.call_later(TICK, _tick, load, publish)


async def run_load(plan: Plan, publish: Callable[[Tally], None] = lambda tally: None) -> Tally:
    """Make the load of ``plan`` on the running loop; the tally of what was measured.

    ``publish`` gets the tally so far every :data:`TICK` seconds (for the progress line).
    """
    loop = asyncio.get_running_loop()
    load = Load(plan, loop)
    if plan.warmup > 0:
        loop.call_later(plan.warmup, load.start_measuring)
    elif plan.duration is not None:
        loop.call_later(plan.duration, load.stop)
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not in the main thread
        loop.add_signal_handler(signal.SIGINT, load.stop)
    slots = asyncio.gather(*(_slot(load) for _ in range(plan.connections)))
    _tick(load, publish)
    await asyncio.wait([load.stopped, slots], return_when=asyncio.FIRST_COMPLETED)
    load.stop()  # or every slot gave up: no request is left to hand out
    await slots
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.remove_signal_handler(signal.SIGINT)
    return load.tally


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed, as the server uses, else the stdlib loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_in_this_process(plan: Plan, publish: Callable[[Tally], None] = lambda tally: None) -> Tally:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(run_load(plan, publish))


# ---------------------------------------------------------------------- N processes


def split(plan: Plan, processes: int) -> list[Plan]:
    """The plans of ``processes`` processes sharing ``plan``'s connections and requests."""
    def share(total: int, index: int) -> int:
        return total // processes + (1 if index < total % processes else 0)

    return [replace(plan, connections=share(plan.connections, index),
                    requests=None if plan.requests is None else share(plan.requests, index))
            for index in range(processes)]


def _child(plan: Plan, sender: multiprocessing.connection.Connection, progress: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the loop's handler stops the load

    def publish(tally: Tally) -> None:
        progress[0], progress[1] = tally.requests, tally.failed

    tally = run_in_this_process(plan, publish)
    sender.send(tally)
    sender.close()


class ProcessFailed(Exception):
    """A bench process ended without its report."""


@dataclass
class _Child:
    process: multiprocessing.process.BaseProcess
    receiver: multiprocessing.connection.Connection
    #: The child's requests and errors so far, as it last published them.
    progress: Any


def run_in_processes(plans: list[Plan], show: Callable[[int, int], None] | None) -> Tally:
    """Each plan in a forked process of its own; their tallies merged.

    ``show(requests, errors)`` is called about once a second with the sums so far.
    """
    context = multiprocessing.get_context("fork")
    children = []
    for plan in plans:
        receiver, sender = context.Pipe(duplex=False)
        progress = context.RawArray("q", 2)
        process = context.Process(target=_child, args=(plan, sender, progress), daemon=True)
        process.start()
        sender.close()
        children.append(_Child(process, receiver, progress))

    def interrupt(signum: int, frame: object) -> None:  # the children stop and report (Ctrl-C reaches them too)
        for child in children:
            if child.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        return _collect(children, show)
    finally:
        signal.signal(signal.SIGINT, previous)
        for child in children:
            child.process.join(5)


def _collect(children: list[_Child], show: Callable[[int, int], None] | None) -> Tally:
    merged = Tally()
    waiting = {child.receiver: child for child in children}
    next_show = time.monotonic() + 1
    while waiting:
        for ready in multiprocessing.connection.wait(list(waiting), timeout=max(next_show - time.monotonic(), 0)):
            assert isinstance(ready, multiprocessing.connection.Connection)
            child = waiting.pop(ready)
            try:
                merged.merge(ready.recv())
            except EOFError:
                child.process.join(5)
                raise ProcessFailed(f"bench process {child.process.pid} ended without a report "
                                    f"(exit status {child.process.exitcode})") from None
        if show is not None and time.monotonic() >= next_show:
            show(sum(child.progress[0] for child in children), sum(child.progress[1] for child in children))
            next_show += 1
    return merged


# ------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class Options:
    """``fcgibridge bench``'s options, checked."""

    plan: Plan
    processes: int
    json: bool
    progress: bool


def resolve(family: int, sockaddr: Any) -> Any:
    """A TCP address with its host name looked up, once for the whole run (an
    :class:`OSError` if it cannot be)."""
    if family == socket.AF_UNIX:
        return sockaddr
    found = socket.getaddrinfo(sockaddr[0], sockaddr[1], family, socket.SOCK_STREAM)
    return found[0][4][:2]


def options_from(args: Any) -> Options:
    """The namespace of :func:`fcgibridge.cli.bench_parser` made into a plan; an
    :class:`OSError` if the host name cannot be looked up."""
    family, sockaddr = parse_address(args.addr)
    sockaddr = resolve(family, sockaddr)
    method, headers, params = request_head(args)
    body = _body(args.data)
    all_params = build_params(method, args.path or "/", headers=headers,
                              content_length=len(body) if body else None,
                              script_filename=args.script_filename, document_root=args.root, extra=params)
    streams = args.multiplex or 1
    duration = args.duration if args.requests is None else None
    plan = Plan(args.addr, family, sockaddr, encode_requests(all_params, body, keep_alive=args.keep_alive,
                                                            streams=streams),
                args.concurrency, args.requests, duration, args.warmup, args.keep_alive, args.timeout)
    show = args.progress or (not args.json and sys.stderr.isatty())
    return Options(plan, args.processes, args.json, show)


def _body(data: str | None) -> bytes:
    """The request body, read whole once: ``@FILE`` is the file's bytes."""
    if data is None:
        return b""
    if data.startswith("@"):
        with open(data[1:], "rb") as file:
            return file.read()
    return data.encode()


def check_multiplexing(plan: Plan) -> None:
    """Ask the server (FCGI_GET_VALUES) whether it multiplexes; a :class:`UserError` if not."""
    with FastCGIClient(plan.address, timeout=plan.timeout) as client:
        values = client.get_values((FCGI_MPXS_CONNS, FCGI_MAX_REQS))
    answer = values.get(FCGI_MPXS_CONNS)
    if answer != "1":
        said = f"it answered FCGI_MPXS_CONNS={answer}" if answer is not None else "it did not answer FCGI_MPXS_CONNS"
        raise UserError(f"bench: {plan.address} does not multiplex requests on a connection ({said}); "
                        "drop --multiplex")
    most = values.get(FCGI_MAX_REQS, "")
    if most.isdigit() and int(most) < plan.streams:
        print(f"fcgibridge: warning: {plan.address} takes FCGI_MAX_REQS={most} requests at a time; "
              f"--multiplex {plan.streams} will be answered FCGI_OVERLOADED", file=sys.stderr)


class Progress:
    """The progress line on stderr, about once a second: requests so far, req/s over the
    last second, errors."""

    def __init__(self) -> None:
        self.started = self.last_time = time.monotonic()
        self.last_requests = 0

    def show(self, requests: int, errors: int) -> None:
        now = time.monotonic()
        rate = (requests - self.last_requests) / (now - self.last_time) if now > self.last_time else 0.0
        self.last_time, self.last_requests = now, requests
        print(f"fcgibridge bench: {now - self.started:5.1f} s  {requests} requests  {rate:.0f} req/s  "
              f"{errors} errors", file=sys.stderr, flush=True)

    def every_second(self) -> Callable[[Tally], None]:
        """A ``publish`` for :func:`run_load` that shows the line once a second."""
        next_show = self.started + 1

        def publish(tally: Tally) -> None:
            nonlocal next_show
            if time.monotonic() >= next_show:
                next_show += 1
                self.show(tally.requests, tally.failed)

        return publish


def main_bench(args: Any) -> int:
    """Run ``fcgibridge bench`` with the namespace of :func:`fcgibridge.cli.bench_parser`.

    Prints the summary (with ``--json``, one JSON object on stdout). Exit status 0 when
    every request ended with a 2xx or 3xx response, 1 otherwise.
    """
    try:
        options = options_from(args)
    except OSError as exc:
        print(f"fcgibridge: error: {args.addr}: cannot look up the host: {_reason(exc)}", file=sys.stderr)
        return 1
    plan = options.plan
    try:
        if plan.streams > 1:
            check_multiplexing(plan)
    except FastCGIError as exc:
        print(f"fcgibridge: error: {exc}", file=sys.stderr)
        return 1
    progress = Progress() if options.progress else None
    if options.processes == 1:
        tally = run_in_this_process(plan, progress.every_second() if progress else lambda tally: None)
    else:
        try:
            tally = run_in_processes(split(plan, options.processes), progress.show if progress else None)
        except ProcessFailed as exc:
            print(f"fcgibridge: error: {exc}", file=sys.stderr)
            return 1
    shape = RunShape(plan.connections, options.processes, plan.keep_alive, plan.streams)
    if options.json:
        print(json.dumps(report(tally, shape)))
    else:
        target = f"{plan.address} {args.path or '/'}"
        print(summary(tally, shape, target))
    sys.stdout.flush()
    if not tally.requests:
        print(f"fcgibridge: error: no request to {plan.address} ended in {tally.duration:.2f} s "
              "(the ones in flight at the end are not counted)", file=sys.stderr)
    return 0 if tally.requests and not tally.failed else 1

