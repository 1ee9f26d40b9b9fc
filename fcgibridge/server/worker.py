"""One worker process: one event loop serving every listener until told to stop.

SIGTERM or SIGINT starts a graceful stop: the listeners close, idle connections close,
requests in flight finish (up to ``--graceful-timeout``), then the ASGI lifespan
shutdown runs. A second signal stops at once.
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

from ..config import Config
from .asgi import ASGIAdapter, Lifespan
from .connection import AppAdapter, FastCGIProtocol, WorkerState
from .wsgi import WSGIAdapter

log = logging.getLogger("fcgibridge.server")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
) -> int:
    """Serve until stopped; returns the process exit code."""
    with asyncio.Runner(loop_factory=functools.partial(new_event_loop, config.loop)) as runner:
        return runner.run(Worker(config, listeners, app, interface, allowed).serve(on_ready))


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

    def _adapter(self) -> AppAdapter:
        config = self.config
        if self.interface == "wsgi":
            return WSGIAdapter(self.app, threads=config.threads, root_path=config.root_path,
                               spool_threshold=config.spool_threshold, multiprocess=config.workers > 1,
                               sync=config.sync)
        app = guarantee_single_callable(self.app) if self.interface == "asgi2" else self.app  # type: ignore[no-untyped-call]
        self.lifespan = Lifespan(app, config.lifespan)
        return ASGIAdapter(app, root_path=config.root_path, state=self.lifespan.state)

    async def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        loop = asyncio.get_running_loop()
        config = self.config
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
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self._on_signal, signum)
        log.info("worker ready, serving %s app %s", self.interface.upper(), config.app)
        if on_ready is not None:
            on_ready()
        await self._stop.wait()
        await self._shutdown(adapter)
        return 0

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: finishing requests in flight, then stopping", signal.Signals(signum).name)
            self._stop.set()
        else:
            log.info("%s again: stopping now", signal.Signals(signum).name)
            assert self.state is not None
            for conn in list(self.state.connections):
                conn._lose()

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
