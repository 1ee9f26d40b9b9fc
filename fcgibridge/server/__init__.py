"""The FastCGI application server: listeners, workers, and the app adapters."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import UserError
from ..listeners import UnixAddress, open_listeners, parse_bind, peer_allowed, web_server_addrs
from .asgi import LifespanFailure
from .supervisor import BOOT_FAILED, Supervisor
from .worker import run_worker

log = logging.getLogger("fcgibridge.server")


def load(config: Config) -> tuple[Any, str]:
    """The app object and its interface (detected unless ``--interface`` says)."""
    from ..accept import AcceptApp
    from ..importer import detect_interface, load_app

    if config.interface == "lua" or (config.interface == "auto" and config.app.endswith(".lua")):
        from ..lua import load_lua

        return load_lua(config.app, version=config.lua_version, args=config.args, cwd=Path.cwd()), "lua"
    if config.args:  # a Python script's arguments, as if it had been run with them
        sys.argv = [config.app.partition(":")[0], *config.args]
    app = load_app(config.app, cwd=Path.cwd())
    interface = config.interface if config.interface != "auto" else detect_interface(app, name=config.app)
    if interface == "accept" and not isinstance(app, AcceptApp):
        try:
            app = AcceptApp(app, name=config.app)
        except TypeError:
            raise UserError(f"{config.app} has no accept function, so it cannot be served as accept-style") from None
    return app, interface


def run(config: Config) -> int:
    """Bind, load the app, and serve until stopped; returns the exit code.

    With one worker everything runs in this process; with more, this process
    supervises forked workers, each of which loads the app itself.
    """
    listeners = open_listeners(config)
    own_socket_files = [a.path for a in map(parse_bind, config.bind) if isinstance(a, UnixAddress)]
    try:
        for sock in listeners:
            log.info("listening on %s", describe(sock))
        work = _worker_body(config, listeners)
        if config.workers <= 1:
            code = work(None)
            _exit_past_stuck_threads(code, own_socket_files)
            return code
        return Supervisor(config.workers, work, config.graceful_timeout).run()
    finally:
        _remove_socket_files(own_socket_files)


def _worker_body(config: Config, listeners: list[socket.socket]) -> Callable[..., int]:
    """What each worker process runs: load the app, then serve until stopped."""
    addrs = web_server_addrs(os.environ)
    allowed = None if addrs is None else (lambda peer: peer_allowed(peer, addrs))

    def work(on_ready: Callable[[], None] | None, report: Callable[[bytes], None] | None = None) -> int:
        try:
            app, interface = load(config)
        except UserError as exc:
            print(f"fcgibridge: error: {exc}", file=sys.stderr)
            return 2
        try:
            return run_worker(config, listeners, app, interface, allowed=allowed, on_ready=on_ready,
                              report=report)
        except LifespanFailure as exc:
            print(f"fcgibridge: error: the app's lifespan startup failed: {exc}", file=sys.stderr)
            return BOOT_FAILED

    return work


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"unix:{name}" if name else f"fd {sock.fileno()}"


def _remove_socket_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _exit_past_stuck_threads(code: int, socket_files: list[str]) -> None:
    """An app thread stuck past the graceful timeout must not keep the process alive."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        _remove_socket_files(socket_files)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
