"""Running the server: bind the listeners, load the app, serve in one process or under a supervisor."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Config
from ..errors import UserError
from ..importer import LoadedApp, load
from ..logs import reopen_logs
from ..server.asgi import LifespanFailure
from .contract import ExitCode, Report
from .hardkill import HardKill
from .hooks import HookEvents, Hooks
from .identity import Identity, IdentityEvents, PidFile, display_name, prepare, set_title, socket_defaults
from .listeners import UnixAddress, open_listeners, parse_bind, unix_access
from .runtime import Runtime
from .scaling import Scaler, connection_workers
from .shares import ConnectionShares
from .status import ScoreboardSampler
from .status_listener import StatusListenerEvents
from .supervisor import Supervisor, SupervisorEvents
from .systemd import LoopLiveness, SystemdNotifier, Watchdog, notify_socket_set, sd_notify
from .worker import run_worker

log = logging.getLogger("fcgibridge.server")


def run(config: Config, *, app: LoadedApp | None = None,
        hook_functions: Mapping[str, Callable[..., object]] | None = None) -> int:
    """Bind, load the app, and serve until stopped; returns the exit code.

    *app*: an app object the caller already has (``fcgibridge.compat.flup`` passes the one
    a script gave it), served in place of importing ``config.app``, as with ``--preload``.
    *hook_functions*: hook functions by hook name, beside those the config names (replacing one of the same name).

    A supervisor forks the workers (each loads the app itself, unless ``--preload``) when
    there is more than one, or when something needs a parent: ``--max-requests``,
    ``--timeout`` (a stuck worker is replaced), ``--reload``, ``--status-bind``. Otherwise everything runs in
    this process, as mod_fcgid and spawn-fcgi expect.

    The process model (:mod:`~fcgibridge.process.identity`): ``--chdir``, ``--umask``
    and the environment first, the hooks imported, ``--user`` and ``--pid`` checked, then
    ``on_starting``, the binding, the pid file; the privilege drop where a worker begins.
    """
    prepare(config)
    hooks = Hooks.load(config)
    hooks.functions.update(hook_functions or {})
    identity = Identity.from_config(config)
    pidfile = PidFile.claim(config.pidfile)
    supervised = needs_supervisor(config)
    set_title(f"fcgibridge: {'master ' if supervised else ''}{display_name(config)}")
    previous_term = _exit_on_term()
    hooks.on_starting()
    try:
        listeners = open_listeners(socket_defaults(config, identity))
    except BaseException:  # a port in use: on_starting ran, so on_exit does too
        _finish(hooks, None, previous_term)
        raise
    # Absolute, as bound: the app may chdir (a single process runs it in this one).
    own_socket_files = [os.path.abspath(a.path) for a in map(parse_bind, config.bind) if isinstance(a, UnixAddress)]
    if config.reload:
        # Python checks a .pyc against the source's mtime in whole seconds and its size: an
        # edit within the second of the import that keeps the size would reload stale code.
        sys.dont_write_bytecode = True
    try:
        if pidfile is not None:
            pidfile.write()
        if identity is not None:
            identity.own_log_files(config)  # the workers open them as --user
        for sock in listeners:
            log.info("listening on %s", describe(sock))
        preloaded = app if app is not None else (load_or_exit(config) if config.preload else None)
        if isinstance(preloaded, int):
            return preloaded
        # Status, ping, access log, the peer filter, the connection shares: made before
        # any worker forks.
        sharing = connection_workers(config)
        shares = ConnectionShares(sharing) if sharing > 1 else None
        runtime = Runtime.from_config(config)
        work = _worker_body(runtime, listeners, preloaded, shares, hooks)
        if not supervised:
            if identity is not None:  # where a worker would begin: bound, pid file and logs written
                identity.drop()
            liveness = LoopLiveness()  # pets only while the loop runs: a blocked one is a hang
            watchdog = Watchdog.from_environ(liveness)

            def ready() -> None:
                liveness.attach()
                _notify_ready()
                hooks.when_ready()

            stopping: list[bool] = []

            def stop_begins() -> None:  # systemd: STOPPING=1 as the stop begins, not once it is done
                if not stopping:
                    stopping.append(True)
                    sd_notify("STOPPING=1")

            code = work(ready, on_stopping=stop_begins)
            stop_begins()  # ended without a signal (the app's startup failed, say)
            if watchdog is not None:
                watchdog.stop()
            _exit_past_stuck_threads(code, own_socket_files, lambda: _finish(hooks, pidfile))
            return code
        return _supervise(config, work, supervisor_events(config, runtime, listeners, hooks), identity)
    finally:
        _finish(hooks, pidfile, previous_term)
        _remove_socket_files(own_socket_files)


#: What ``signal.signal`` takes and gives back.
_Handler = Callable[[int, Any], object] | int | signal.Handlers


def _finish(hooks: Hooks, pidfile: PidFile | None, previous_term: _Handler | None = None) -> None:
    """The master's last steps: the on_exit hook, then the pid file goes (a SIGTERM
    meanwhile is ignored: the server is ending, and the signal would cut them short)."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        hooks.on_exit()
        if pidfile is not None:
            pidfile.remove()
    finally:
        if main and previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


def _exit_on_term() -> _Handler | None:
    """Until a worker or the supervisor handles SIGTERM (while the app imports, say), it
    ends the start as SIGINT does, through the ``finally`` that runs ``on_exit`` and
    removes the pid file, instead of killing the process where it stands; returns the
    handler it replaced (None outside the main thread, where signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    return signal.SIG_DFL if previous is None else previous


def needs_supervisor(config: Config) -> bool:
    return config.workers > 1 or bool(config.max_requests or config.timeout or config.reload or config.status_bind
                                      or config.pm != "static")


def supervisor_events(config: Config, runtime: Runtime, listeners: list[socket.socket],
                      hooks: Hooks | None = None) -> list[SupervisorEvents]:
    """Everything in the master that follows the workers' lives: one entry per concern."""
    # First: a new worker takes its title and drops its privileges before anything else runs in it.
    identity = Identity.from_config(config)
    events: list[SupervisorEvents] = [IdentityEvents(config, identity)]
    if hooks:
        events.append(HookEvents(hooks))
    if notify_socket_set():
        events.append(SystemdNotifier(runtime.board))
    if config.status_bind and runtime.board is not None:
        # Its socket file is the app's sockets' kind: the same owner, group and mode (as PHP-FPM's pm.status_listen).
        events.append(StatusListenerEvents(socket_defaults(config, identity), runtime.board))
    if runtime.board is not None:
        events.append(ScoreboardSampler(runtime.board, listeners))
    if config.pm != "static":
        events.append(Scaler(config, runtime.board, listeners))
    if config.timeout and runtime.board is not None:
        events.append(HardKill.from_config(config, runtime.board))
    return events


def _supervise(config: Config, work: Callable[..., int], events: list[SupervisorEvents],
               identity: Identity | None = None) -> int:
    def child(report: Callable[[Report], None]) -> int:
        return work(lambda: report(Report.READY), report)

    def reopen() -> None:
        """SIGUSR1 in the master: its own log files, then (before the workers reopen
        theirs) a file it made anew, as root, given to --user. A file that cannot be
        opened is logged (the old one stays in use): the master must not stop for it."""
        try:
            reopen_logs()
            if identity is not None:
                identity.own_log_files(config)
        except UserError as exc:
            log.error("SIGUSR1: %s", exc)

    supervisor = Supervisor(config.workers, child, config.graceful_timeout, on_reopen=reopen, events=events)
    reloader = None
    if config.reload:
        from .reloader import Reloader, reload_roots

        reloader = Reloader(reload_roots(config), config.reload_include, config.reload_exclude)
        reloader.start()
    try:
        return supervisor.run()
    finally:
        if reloader is not None:
            reloader.stop()


def _notify_ready() -> None:
    """systemd ``Type=notify``: READY=1 once the single process serves (under a
    supervisor, :class:`SystemdNotifier` says it)."""
    sd_notify("READY=1")


def load_or_exit(config: Config) -> LoadedApp | int:
    try:
        return load(config)
    except UserError as exc:
        print(f"fcgibridge: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE


def _worker_body(runtime: Runtime, listeners: list[socket.socket],
                 preloaded: LoadedApp | None = None, shares: ConnectionShares | None = None,
                 hooks: Hooks | None = None) -> Callable[..., int]:
    """What each worker process runs: load the app (unless preloaded), then serve until stopped."""

    def work(on_ready: Callable[[], None] | None, report: Callable[[Report], None] | None = None,
             on_stopping: Callable[[], None] | None = None) -> int:
        try:
            loaded = preloaded if preloaded is not None else load_or_exit(runtime.config)
            if isinstance(loaded, int):
                return loaded
            return run_worker(runtime, listeners, loaded, on_ready=on_ready, report=report, reopen_logs=reopen_logs,
                              shares=shares, hooks=hooks, on_stopping=on_stopping)
        except LifespanFailure as exc:
            print(f"fcgibridge: error: the app's lifespan startup failed: {exc}", file=sys.stderr)
            return ExitCode.BOOT_FAILED
        finally:  # every way out, an app that does not import included (post_fork ran)
            if hooks is not None:
                hooks.worker_exit()

    return work


def describe(sock: socket.socket) -> str:
    """The address for the startup log; a unix socket's says who may connect to it."""
    name = sock.getsockname()
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if not name:
        return f"fd {sock.fileno()}"
    if isinstance(name, str):  # a path (an abstract name is bytes, and has no file)
        return f"unix:{name} ({unix_access(name)})"
    return f"unix:{name!r}"


def _remove_socket_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _exit_past_stuck_threads(code: int, socket_files: list[str], finish: Callable[[], None] = lambda: None) -> None:
    """An app thread stuck past the graceful timeout must not keep the process alive
    (*finish*: what must still run first)."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        finish()
        _remove_socket_files(socket_files)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
