"""One worker process: one event loop serving every listener until told to stop.

SIGTERM or SIGINT starts a graceful stop: the listeners close, idle connections close,
requests in flight finish (up to ``--graceful-timeout``), then the ASGI lifespan
shutdown runs. A second signal stops at once.

An accept-style app (:class:`~fcgibridge.accept.AcceptApp`, Lua included) has hooks:

- ``start()`` runs before the worker serves; a non-zero return ends the worker with that
  exit code (and ``start function returned non-zero value: N`` in the log), an exception
  with exit code 3.
- SIGHUP calls ``restart()`` between requests; without a ``restart`` hook HUP is logged
  and ignored (it never kills the server).
- SIGTERM first calls ``stop()``. 0 (or nothing) goes on with the graceful stop; a
  non-zero value *vetoes* it: the worker logs it and keeps serving. The worker tells a
  supervising parent which way it went (``report``: ``b"S"`` stopping, ``b"V"`` veto), so
  the parent neither waits for nor kills a worker that stays. SIGINT stops without asking.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

from asgiref.compatibility import guarantee_single_callable

from ..accept import AcceptApp
from ..config import Config
from .asgi import ASGIAdapter, Lifespan
from .connection import AppAdapter, FastCGIProtocol, WorkerState
from .wsgi import WSGIAdapter

log = logging.getLogger("fcgibridge.server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Exit code of a worker whose start() hook raised.
START_FAILED = 3

#: What a worker tells its supervisor after SIGTERM (one byte on its status pipe).
REPORT_STOPPING = b"S"
REPORT_VETO = b"V"


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
    config: Config,
    listeners: list[socket.socket],
    app: Any,
    interface: str,
    *,
    allowed: Callable[[Any], bool] | None = None,
    on_ready: Callable[[], None] | None = None,
    report: Callable[[bytes], None] | None = None,
) -> int:
    """Serve until stopped; returns the process exit code."""
    with asyncio.Runner(loop_factory=functools.partial(new_event_loop, config.loop)) as runner:
        return runner.run(Worker(config, listeners, app, interface, allowed).serve(on_ready, report))


class Worker:
    def __init__(
        self,
        config: Config,
        listeners: list[socket.socket],
        app: Any,
        interface: str,
        allowed: Callable[[Any], bool] | None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.app = app
        self.interface = interface
        self.allowed = allowed
        self.servers: list[asyncio.Server] = []
        self.lifespan: Lifespan | None = None
        self.state: WorkerState | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self.script = app if isinstance(app, AcceptApp) else None
        self._report: Callable[[bytes], None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    def _adapter(self) -> AppAdapter:
        config = self.config
        if self.interface in ("wsgi", "accept", "lua"):
            return WSGIAdapter(self.app, threads=config.threads, root_path=config.root_path,
                               spool_threshold=config.spool_threshold, multiprocess=config.workers > 1,
                               sync=config.sync)
        app = guarantee_single_callable(self.app) if self.interface == "asgi2" else self.app  # type: ignore[no-untyped-call]
        self.lifespan = Lifespan(app, config.lifespan)
        return ASGIAdapter(app, root_path=config.root_path, state=self.lifespan.state)

    async def serve(self, on_ready: Callable[[], None] | None = None,
                    report: Callable[[bytes], None] | None = None) -> int:
        loop = asyncio.get_running_loop()
        config = self.config
        self._report = report
        if self.script is not None:
            code = self._start_script(self.script)
            if code:
                return code
        adapter = self._adapter()
        if self.lifespan is not None:
            await self.lifespan.startup()
            if not self.lifespan.supported:
                self.lifespan.state.clear()
                adapter.state = None  # type: ignore[attr-defined]
        total = config.max_connections * max(1, config.workers)
        self.state = state = WorkerState(adapter, max_connections=config.max_connections, max_reqs=total,
                                         max_params_size=config.max_params_size,
                                         max_body_size=config.max_body_size, allowed=self.allowed)
        state.idle.set()
        for sock in self.listeners:
            factory = functools.partial(FastCGIProtocol, state)
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(factory, sock=sock, backlog=config.backlog)
            else:
                server = await loop.create_server(factory, sock=sock, backlog=config.backlog)
            self.servers.append(server)
        if threading.current_thread() is threading.main_thread():
            for signum in (*STOP_SIGNALS, signal.SIGHUP):
                loop.add_signal_handler(signum, self._on_signal, signum)
        log.info("worker ready, serving %s app %s", self.interface.upper(), config.app)
        if on_ready is not None:
            on_ready()
        await self._stop.wait()
        await self._shutdown(adapter)
        return 0

    @staticmethod
    def _start_script(script: AcceptApp) -> int:
        try:
            code = script.start()
        except Exception:
            log.exception("start function raised an error")
            return START_FAILED
        if code:
            log.error("start function returned non-zero value: %d", code)
        return code

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._on_hup()
            return
        self._signals += 1
        if self._signals == 1:
            if signum == signal.SIGTERM and self.script is not None and self.script.has_hook("stop"):
                self._spawn(self._ask_stop())
                return
            self._begin_stop(signum)
        else:
            log.info("%s again: stopping now", signal.Signals(signum).name)
            self._tell(REPORT_STOPPING)
            self._stop.set()
            assert self.state is not None
            for conn in list(self.state.connections):
                conn._lose()

    def _begin_stop(self, signum: int) -> None:
        log.info("%s: finishing requests in flight, then stopping", signal.Signals(signum).name)
        self._tell(REPORT_STOPPING)
        self._stop.set()

    def _tell(self, what: bytes) -> None:
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
        """SIGTERM with a stop hook: stop() decides (between requests) whether to stop."""
        assert self.script is not None
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, self.script.stop)
        except Exception:
            log.exception("SIGTERM: stop function raised an error; stopping anyway")
            code = 0
        if self._stop.is_set():  # a second signal stopped the worker meanwhile
            return
        if code:
            log.warning("SIGTERM: stop function returned non-zero value: %d; not stopping, still serving", code)
            self._signals = 0
            self._tell(REPORT_VETO)
            return
        self._begin_stop(signal.SIGTERM)

    def _on_hup(self) -> None:
        if self.script is not None and self.script.has_hook("restart"):
            self._spawn(self._restart())
        else:
            log.info("SIGHUP ignored: graceful reload is not implemented yet, and the app has no restart function")

    async def _restart(self) -> None:
        assert self.script is not None
        log.info("SIGHUP: calling the restart function")
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, self.script.restart)
        except Exception:
            log.exception("SIGHUP: restart function raised an error; still serving")
            return
        if code:
            log.warning("SIGHUP: restart function returned non-zero value: %d; still serving", code)
        else:
            log.info("SIGHUP: restart function done")

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self, adapter: AppAdapter) -> None:
        state = self.state
        assert state is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.graceful_timeout
        state.stopping = True
        for server in self.servers:
            server.close()
        for conn in list(state.connections):
            conn.close_if_idle()
        try:
            await asyncio.wait_for(state.idle.wait(), self.config.graceful_timeout)
        except TimeoutError:
            log.warning("graceful timeout: %d requests still running, closing their connections",
                        state.active_requests)
        for conn in list(state.connections):
            conn._lose()
        await asyncio.sleep(0)
        if isinstance(adapter, ASGIAdapter):
            # Calls whose response is out may still be working (background tasks).
            await adapter.join(deadline - loop.time())
            adapter.close()
        if self.lifespan is not None:
            await self.lifespan.shutdown()
        if isinstance(adapter, WSGIAdapter):
            await loop.run_in_executor(None, adapter.close)
