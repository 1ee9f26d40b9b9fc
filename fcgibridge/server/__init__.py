"""The FastCGI application server: listeners, workers, and the app adapters."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ..config import Config
from .supervisor import BOOT_FAILED, Supervisor
from .worker import run_worker

log = logging.getLogger("fcgibridge.server")


def _load(config: Config) -> tuple[Any, str]:
    from ..importer import detect_interface, load_app

    app = load_app(config.app, cwd=Path.cwd())
    interface = config.interface if config.interface != "auto" else detect_interface(app)
    return app, interface


def run(config: Config) -> int:
    """Bind, load the app, and serve until stopped; returns the exit code.

    With one worker everything runs in this process; with more, this process
    supervises forked workers, each of which loads the app itself.
    """
    from ..errors import UserError
    from ..listeners import open_listeners, peer_allowed, web_server_addrs

    listeners = open_listeners(config)
    addrs = web_server_addrs(os.environ)
    allowed = None if addrs is None else (lambda peer: peer_allowed(peer, addrs))
    for sock in listeners:
        log.info("listening on %s", _describe(sock))

    def work(on_ready: Any) -> int:
        try:
            app, interface = _load(config)
        except UserError as exc:
            print(f"fcgibridge: error: {exc}", file=sys.stderr)
            return 2
        from .asgi import LifespanFailure

        try:
            return run_worker(config, listeners, app, interface, allowed=allowed, on_ready=on_ready)
        except LifespanFailure as exc:
            print(f"fcgibridge: error: the app's lifespan startup failed: {exc}", file=sys.stderr)
            return BOOT_FAILED

    if config.workers <= 1:
        code = work(None)
        _exit_past_stuck_threads(code)
        return code
    return Supervisor(config.workers, work, config.graceful_timeout).run()


def _describe(sock: Any) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"unix:{name}" if name else f"fd {sock.fileno()}"


def _exit_past_stuck_threads(code: int) -> None:
    """An app thread stuck past the graceful timeout must not keep the process alive."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
