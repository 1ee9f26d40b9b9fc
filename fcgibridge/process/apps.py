"""From a loaded app and the :class:`Config` to what a worker serves: the app adapter the
connection layer drives, and the app's :class:`~fcgibridge.server.lifecycle.Lifecycle`.

The one place that knows which adapter serves which interface; the worker after it
special-cases no app flavour.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.compatibility import guarantee_single_callable

from ..accept import AcceptApp
from ..config import Config
from ..importer import Interface, LoadedApp
from ..server.asgi import ASGIAdapter
from ..server.connection import AppAdapter
from ..server.lifecycle import Lifecycle, NoLifecycle
from ..server.wsgi import WSGIAdapter
from .contract import ExitCode

log = logging.getLogger("fcgibridge.server")


def build(loaded: LoadedApp, config: Config) -> tuple[AppAdapter, Lifecycle]:
    """The adapter for ``loaded`` as ``config`` says, and its lifecycle."""
    if loaded.interface.is_wsgi:
        adapter = WSGIAdapter(loaded.app, threads=config.threads, root_path=config.root_path,
                              spool_threshold=config.spool_threshold, multiprocess=config.workers > 1,
                              sync=config.sync, inline=config.inline == "auto",
                              buffering=config.request_buffering)
        lifecycle: Lifecycle = AcceptHooks(loaded.app) if isinstance(loaded.app, AcceptApp) else NoLifecycle()
        return adapter, lifecycle
    app = loaded.app
    if loaded.interface is Interface.ASGI2:
        app = guarantee_single_callable(app)  # type: ignore[no-untyped-call]
    asgi = ASGIAdapter(app, root_path=config.root_path, lifespan=config.lifespan, capacity=config.max_connections)
    return asgi, asgi


class AcceptHooks:
    """The lifecycle of an accept-style script (Python or Lua): its optional hooks.

    - ``start()`` before serving: a non-zero return ends the worker with that exit code
      (``start function returned non-zero value: N``), an exception with exit code 3
      (:attr:`~fcgibridge.process.contract.ExitCode.BOOT_FAILED`).
    - ``restart()`` on SIGHUP, between requests.
    - ``stop()`` on SIGTERM: a non-zero return vetoes the stop.

    The restart and stop hooks run in a thread, so requests go on while they do.
    """

    def __init__(self, script: AcceptApp) -> None:
        self.script = script
        self.restarts = script.has_hook("restart")
        self.asks_to_stop = script.has_hook("stop")

    async def startup(self) -> int:
        try:
            code = self.script.start()
        except Exception:
            log.exception("start function raised an error")
            return ExitCode.BOOT_FAILED
        if code:
            log.error("start function returned non-zero value: %d", code)
        return code

    async def restart(self) -> None:
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

    async def stop(self) -> bool:
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, self.script.stop)
        except Exception:
            log.exception("SIGTERM: stop function raised an error; stopping anyway")
            return True
        if code:
            log.warning("SIGTERM: stop function returned non-zero value: %d; not stopping, still serving", code)
            return False
        return True

    async def shutdown(self) -> None:
        return None
