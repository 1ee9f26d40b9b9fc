"""One worker process: one event loop serving every listener until told to stop.

SIGTERM (or SIGUSR2, which its supervisor sends to retire it) starts a graceful stop:
the listeners close, idle connections close, requests in flight finish (up to
``--graceful-timeout``), then the ASGI lifespan shutdown runs. SIGINT or SIGQUIT, or a
second stop signal, stops at once: every connection is dropped.

Under a supervisor a worker may ask to be replaced (``R`` on its status pipe): on SIGHUP
without a restart hook (a graceful reload), past ``--max-requests``, and after a WSGI
request ran past ``--timeout``. It keeps serving until its replacement is ready and the
supervisor retires it. SIGUSR1 reopens the log files.

The app takes part through its :class:`~fcgibridge.server.lifecycle.Lifecycle` (made by
:func:`fcgibridge.process.apps.build`; the worker knows no app flavour):

- ``startup()`` runs before the worker serves (the ASGI lifespan, or an accept-style
  ``start()``); a non-zero exit code ends the worker with it.
- SIGHUP calls ``restart()`` between requests when the app ``restarts`` (an accept-style
  ``restart`` hook); otherwise HUP asks the supervisor for a reload (a single process
  logs and ignores it).
- SIGTERM first calls ``stop()`` when the app ``asks_to_stop`` (an accept-style ``stop``
  hook): agreeing goes on with the graceful stop; refusing *vetoes* it: the worker keeps
  serving. The worker tells a
  supervising parent which way it went (``report``: ``S`` stopping, ``V`` veto), so the
  parent neither waits for nor kills a worker that stays. SIGINT, SIGQUIT and SIGUSR2
  stop without asking.

What a worker and its supervisor tell each other is written down once, in
:mod:`~fcgibridge.process.contract`. The server hooks it runs (``post_worker_init``,
``pre_request``, ``post_request``; ``worker_exit`` is run.py's) are :mod:`~fcgibridge.process.hooks`'.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

from ..errors import UserError
from ..importer import LoadedApp
from ..server.connection import ConnectionSweeper, FastCGIProtocol, RequestStream, WorkerState
from ..server.lifecycle import Lifecycle
from .apps import build
from .contract import RETIRE_SIGNAL, ExitCode, Report
from .hooks import Hooks
from .runtime import Runtime
from .scaling import connection_workers
from .shares import ConnectionShares
from .timeouts import RequestTimeouts

log = logging.getLogger("fcgibridge.server")

#: Graceful stop (TERM asks a stop() hook first; USR2 is the supervisor retiring the worker).
GRACEFUL_SIGNALS = (signal.SIGTERM, RETIRE_SIGNAL)
#: Fast stop.
FAST_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
STOP_SIGNALS = (*GRACEFUL_SIGNALS, *FAST_SIGNALS)

#: Seconds a stopping worker leaves its idle keep-alive connections open.
KEEPALIVE_GRACE = 1.0

#: Loop turns a stopping worker lets pass after closing its listeners, for the
#: connections accepted just before to be made (asyncio and uvloop need one or two).
ACCEPT_TURNS = 3

#: Seconds between a worker's reports of its open connections to the others (it also
#: reports on each new one): how long a closed connection may still count.
SHARES_INTERVAL = 0.25


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when installed (``auto``) or asked for, else the stdlib loop."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def run_worker(
    runtime: Runtime,
    listeners: list[socket.socket],
    loaded: LoadedApp,
    *,
    on_ready: Callable[[], None] | None = None,
    report: Callable[[Report], None] | None = None,
    reopen_logs: Callable[[], None] | None = None,
    shares: ConnectionShares | None = None,
    hooks: Hooks | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> int:
    """Serve until stopped; returns the process exit code. *shares*: the workers' table
    of open connections, made before they forked (with more than one worker). *hooks*:
    the server hooks (``worker_exit`` is the caller's, as it runs also for an app that
    does not import).
    *on_stopping*: called once as the stop begins, before what is in flight finishes (a
    single process tells systemd STOPPING=1 there)."""
    worker = Worker(loaded, listeners, runtime)
    worker.on_stopping = on_stopping
    worker.reopen_logs = reopen_logs
    worker.shares = shares
    worker.hooks = hooks or None
    with asyncio.Runner(loop_factory=functools.partial(new_event_loop, runtime.config.loop)) as runner:
        return runner.run(worker.serve(on_ready, report))


class Worker:
    def __init__(self, loaded: LoadedApp, listeners: list[socket.socket], runtime: Runtime) -> None:
        self.config = config = runtime.config
        self.runtime = runtime
        self.listeners = listeners
        self.loaded = loaded
        self.servers: list[asyncio.Server] = []
        self.state: WorkerState | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._report: Callable[[Report], None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._fast = False  # a fast stop: drop everything, skip the graceful shutdown
        self._replace_asked = False
        self.reopen_logs: Callable[[], None] | None = None
        self.on_stopping: Callable[[], None] | None = None
        jitter = random.randint(0, config.max_requests_jitter) if config.max_requests else 0
        self.max_requests = config.max_requests + jitter if config.max_requests else 0
        self.timeouts: RequestTimeouts | None = None
        self.lifecycle: Lifecycle | None = None
        #: The whole server's connections: each worker's share times the workers (with
        #: --pm dynamic or ondemand, the most that may run). What GET_VALUES reports
        #: (FCGI_MAX_CONNS, FCGI_MAX_REQS), and, with the shares table, what the
        #: workers hold between them however the connections fall.
        self.total_connections = config.max_connections * max(1, connection_workers(config))
        self.shares: ConnectionShares | None = None
        self._shares_timer: asyncio.TimerHandle | None = None
        self._accepting = 0  # connections accepted whose connection_made has not run
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The server hooks (post_worker_init, pre_request, post_request); None: none set.
        self.hooks: Hooks | None = None

    async def serve(self, on_ready: Callable[[], None] | None = None,
                    report: Callable[[Report], None] | None = None) -> int:
        loop = asyncio.get_running_loop()
        config = self.config
        self._report = report
        adapter, self.lifecycle = build(self.loaded, config)
        if self.hooks is not None and not self.hooks.post_worker_init():
            return ExitCode.BOOT_FAILED
        code = await self.lifecycle.startup()
        if code:
            return code
        total = self.total_connections
        self.state = state = WorkerState(adapter, max_connections=config.max_connections, max_reqs=total,
                                         max_params_size=config.max_params_size,
                                         max_body_size=config.max_body_size, allowed=self.runtime.allowed,
                                         observer=self.runtime.observer(adapter.capacity),
                                         header_timeout=config.header_timeout, idle_timeout=config.idle_timeout,
                                         body_timeout=config.body_timeout, send_timeout=config.send_timeout,
                                         limit_concurrency=config.limit_concurrency)
        state.idle.set()
        self._install_hooks(state)
        sweeper = ConnectionSweeper(state, loop)
        sweeper.start()
        self._loop = loop
        if self.shares is not None and self.shares.claim():
            self._report_connections()
        else:
            self.shares = None
        for sock in self.listeners:
            factory = cast(Callable[[], asyncio.Protocol], self._new_connection)
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(factory, sock=sock, backlog=config.backlog)
            else:
                server = await loop.create_server(factory, sock=sock, backlog=config.backlog)
            self.servers.append(server)
        if threading.current_thread() is threading.main_thread():
            for signum in (*STOP_SIGNALS, signal.SIGHUP):
                loop.add_signal_handler(signum, self._on_signal, signum)
            loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)
        log.info("worker ready, serving %s app %s", self.loaded.interface.upper(), config.app)
        if on_ready is not None:
            on_ready()
        await self._stop.wait()
        if self._shares_timer is not None:
            self._shares_timer.cancel()
        try:
            if self._fast:
                self._close_servers()
                return 0
            # The connection timeouts and --timeout still hold while it drains: a request
            # the loop does not end past --timeout would look stuck to the supervisor's
            # hard kill, which would SIGKILL a worker that is only retiring.
            await self._shutdown()
            return 0
        finally:
            if self.timeouts is not None:
                self.timeouts.close()
            sweeper.close()

    def _new_connection(self) -> FastCGIProtocol:
        """The protocol of a connection just accepted (asyncio calls this before its
        ``connection_made``, where ``--max-connections`` is applied).

        With more than one worker, the line is the whole server's: a worker may hold
        more than its share while the others hold less than theirs, and makes room only
        once the workers together hold ``workers x --max-connections`` (see
        :mod:`~fcgibridge.process.shares`). GET_VALUES answers for the whole server too:
        the web server sees one address, not the workers behind it.
        """
        state = self.state
        assert state is not None
        if self.shares is not None:
            # The stdlib loop accepts a batch before any of its connection_made runs: the
            # connections in between are counted here, or a worker just below its share
            # would take a whole batch as room and then close idle connections for it
            # (1,906 of 2,048 held with --loop asyncio). Counting and publishing cost
            # about 1 µs; reading the others' counts, the dearer part, waits until this
            # worker holds its own share (below it there is room whatever they hold).
            held = len(state.connections) + self._accepting
            self._accepting += 1
            assert self._loop is not None
            # Runs just before this connection's connection_made, scheduled right after.
            self._loop.call_soon(self._accepted)
            self.shares.publish(held + 1)
            if held >= self.config.max_connections:
                # At least one: room is made (an idle connection closed) in the worker
                # that accepted; one holding none has nothing to close, and takes the
                # newcomer rather than refuse it while the others' idle ones stay open.
                state.max_connections = max(1, self.total_connections - self.shares.others())
            elif state.max_connections < self.config.max_connections:
                state.max_connections = self.config.max_connections  # lowered while the others were full
        conn = FastCGIProtocol(state)
        conn.core.max_conns = self.total_connections
        return conn

    def _accepted(self) -> None:
        self._accepting -= 1

    def _report_connections(self) -> None:
        """Tell the other workers how many connections this one holds, now and every
        :data:`SHARES_INTERVAL` (a closed connection is not seen as it closes)."""
        if self.shares is None or self.state is None:
            return
        self.shares.publish(len(self.state.connections) + self._accepting)
        assert self._loop is not None
        self._shares_timer = self._loop.call_later(SHARES_INTERVAL, self._report_connections)

    def _install_hooks(self, state: WorkerState) -> None:
        """--timeout and the slow log, --max-requests: per-request hooks of the connections."""
        config = self.config
        if config.timeout or config.slowlog_timeout:
            self.timeouts = RequestTimeouts(config, state, self._timed_out)
            state.on_start = self.timeouts.started
            state.on_done = self.timeouts.done
        if self.max_requests:
            on_done = state.on_done

            def count(stream: RequestStream) -> None:
                if on_done is not None:
                    on_done(stream)
                if state.requests_served >= self.max_requests and not self._replace_asked:
                    log.info("served %d requests (--max-requests): asking for a replacement", state.requests_served)
                    self._ask_replacement()

            state.on_done = count
        if self.hooks is not None:
            self._install_server_hooks(state, self.hooks)
        if self._report is not None:
            self._report_first_request(state)

    def _report_first_request(self, state: WorkerState) -> None:
        """Tell the supervisor once, as the first request starts, then step aside: the
        requests after it cost nothing here."""
        then = state.on_start

        def first(stream: RequestStream) -> None:
            state.on_start = then
            self._tell(Report.FIRST_REQUEST)
            if then is not None:
                then(stream)

        state.on_start = first

    @staticmethod
    def _install_server_hooks(state: WorkerState, hooks: Hooks) -> None:
        """pre_request and post_request, after the hooks above (chained, not replaced);
        an unset one adds nothing to a request."""
        pre, post = hooks.request_hooks()
        if pre is not None:
            state.on_start = _chain(state.on_start, pre)
        if post is not None:
            state.on_done = _chain(state.on_done, post)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._on_hup()
            return
        self._signals += 1
        if signum in FAST_SIGNALS or self._signals > 1:
            log.info("%s%s: stopping now", signal.Signals(signum).name, " again" if self._signals > 1 else "")
            self._tell(Report.STOPPING)
            self._fast = True
            self._stop.set()
            self._close_servers()
            assert self.state is not None
            self.state.stopping = True
            for conn in list(self.state.connections):
                conn.drop()
            return
        if signum == signal.SIGTERM and self.lifecycle is not None and self.lifecycle.asks_to_stop:
            self._spawn(self._ask_stop())
            return
        self._begin_stop(signum)

    def _on_usr1(self) -> None:
        log.info("SIGUSR1: reopening the log files")
        if self.reopen_logs is not None:
            try:
                self.reopen_logs()
            except UserError as exc:  # the old file stays in use
                log.error("SIGUSR1: %s", exc)
        if self.timeouts is not None and self.timeouts.stack_dump is not None:
            self.timeouts.stack_dump.reopen()

    def _ask_replacement(self) -> None:
        """Ask the supervisor for a successor; keep serving until it retires this worker."""
        if self._replace_asked or self._report is None:
            return
        self._replace_asked = True
        self._tell(Report.REPLACE_ME)

    def _timed_out(self, stream: RequestStream) -> None:
        """A request ran past --timeout, was ended, and its call cannot be stopped (a WSGI thread)."""
        self._ask_replacement()

    def _close_servers(self) -> None:
        for server in self.servers:
            server.close()

    def _begin_stop(self, signum: int) -> None:
        log.info("%s: finishing requests in flight, then stopping", signal.Signals(signum).name)
        self._tell(Report.STOPPING)
        self._stop.set()

    def _tell(self, what: Report) -> None:
        if what is Report.STOPPING and self.on_stopping is not None:
            on_stopping, self.on_stopping = self.on_stopping, None
            on_stopping()
        if self._report is not None:
            try:
                self._report(what)
            except OSError:  # the parent is gone
                self._report = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask_stop(self) -> None:
        """SIGTERM with a stop hook: the app decides (between requests) whether to stop."""
        assert self.lifecycle is not None
        agreed = await self.lifecycle.stop()
        if self._stop.is_set():  # a second signal stopped the worker meanwhile
            return
        if not agreed:
            self._signals = 0
            self._tell(Report.VETO)
            return
        self._begin_stop(signal.SIGTERM)

    def _on_hup(self) -> None:
        if self.lifecycle is not None and self.lifecycle.restarts:
            self._spawn(self.lifecycle.restart())
        elif self._report is not None:
            if not self._replace_asked:
                log.info("SIGHUP: asking for a replacement (graceful reload)")
            self._ask_replacement()
        else:
            log.info("SIGHUP ignored: a single process cannot reload (run with a supervisor: -w 2 or more, "
                     "--max-requests, --timeout or --reload), and the app has no restart function")

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self) -> None:
        state = self.state
        assert state is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.graceful_timeout
        state.stopping = True
        self._close_servers()
        # A connection the loop accepted just before has its connection_made a turn or
        # two later (after this wake-up): let it run, so that connection is waited for
        # below like the others rather than dropped before its request arrives.
        for _ in range(ACCEPT_TURNS):
            await asyncio.sleep(0)
        # A connection closes once its last request is answered. An idle keep-alive
        # connection (nginx fastcgi_keep_conn) is given a moment first: closing it right
        # when the web server sends it a request fails that request (nginx retries only
        # idempotent ones). Under load the web server uses it again soon and it closes
        # after that response; one still idle after the moment is one it does not need.
        if state.connections:
            state.no_connections.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.no_connections.wait(),
                                       min(KEEPALIVE_GRACE, self.config.graceful_timeout))
        for conn in list(state.connections):
            conn.close_if_idle()
        try:
            await asyncio.wait_for(state.idle.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("graceful timeout: %d requests still running, closing their connections",
                        state.active_requests)
        for conn in list(state.connections):
            conn.drop()
        await asyncio.sleep(0)
        # Calls whose response is out may still be working (ASGI background tasks).
        await state.adapter.drain(deadline - loop.time())
        assert self.lifecycle is not None
        await self.lifecycle.shutdown()


def _chain(first: Callable[[RequestStream], None] | None,
           then: Callable[[RequestStream], None]) -> Callable[[RequestStream], None]:
    """*first* (when there is one), then *then*, for one per-request hook slot."""
    if first is None:
        return then

    def both(stream: RequestStream) -> None:
        first(stream)
        then(stream)

    return both
