"""Server hooks: the user's functions, called at the points of the server's life that
gunicorn names the same way (so its recipes, such as OpenTelemetry's, port).

Each hook comes from its own option (``--post-fork pkg.mod:func``, or ``pkg.mod.func``)
or from the ``--hooks`` module (a dotted name or a ``.py`` file), whose functions named
after the hooks are used; an option beats the module's function of the same name. An
option naming a ``.py`` file alone (``--post-fork hooks.py``) takes the function named
after the hook from it. Everything named is imported at startup, before the sockets
are bound: a name that does not import is a :class:`~fcgibridge.errors.UserError`
(also for ``--check-config``).

Where each runs (docs/hooks.md has the table and an OpenTelemetry example):

- master: ``on_starting(config)`` before the sockets are bound, ``when_ready(config)``
  once the first worker serves, ``on_reload(config)`` as a reload (SIGHUP) begins,
  ``child_exit(config, worker)`` once a worker exited, ``on_exit(config)`` before the
  master exits;
- worker: ``post_fork(config, worker)`` right after the fork (already as ``--user``),
  ``post_worker_init(config, worker)`` once the app is built and before its startup (the
  ASGI lifespan) and before it serves, ``pre_request(worker, request)`` and
  ``post_request(worker, request)`` around each request (on the event loop thread),
  ``worker_exit(config, worker)`` as the worker process is about to exit, on every way
  out but SIGKILL (an app that does not import too).

A single process (no supervisor) runs them all but ``post_fork`` and ``child_exit``.

An exception in a hook is logged with the hook's name and the server goes on, but for
``post_worker_init``: a worker whose initialisation failed does not serve (it exits
with ``BOOT_FAILED``; for the first worker that stops the server, as gunicorn does).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config import Config
from ..errors import UserError
from ..importer import load_app
from ..server.connection import RequestStream
from .supervisor import Supervisor, SupervisorEvents, WorkerProcess

log = logging.getLogger("fcgibridge.hooks")

#: Every hook, by the option (and ``--hooks`` function) name.
HOOK_NAMES = ("on_starting", "when_ready", "post_fork", "post_worker_init", "pre_request", "post_request",
              "worker_exit", "child_exit", "on_reload", "on_exit")

Hook = Callable[..., Any]
RequestHook = Callable[[RequestStream], None]


@dataclass
class HookWorker:
    """The ``worker`` a hook is given: one per worker process, the same object for all of
    its hooks (a hook may keep things on it)."""

    pid: int
    #: 1, 2, ...: the lowest number no other live worker has (1 in a single process).
    number: int
    #: ``child_exit`` only: the exit code (128 + N when killed by signal N).
    exit_code: int | None = None
    #: gunicorn recipes write ``worker.log.info(...)``.
    log: logging.Logger = field(default=log, repr=False)


@dataclass
class Hooks:
    """The hooks the config names, imported; calling one that is not set does nothing."""

    config: Config
    functions: dict[str, Hook] = field(default_factory=dict)
    #: This process's worker: set right after the fork (a single process is worker 1).
    worker: HookWorker = field(default_factory=lambda: HookWorker(os.getpid(), 1))

    @classmethod
    def load(cls, config: Config) -> Hooks:
        """Import every hook the config names; a :class:`UserError` for one that does not import."""
        functions: dict[str, Hook] = {}
        if config.hooks:
            module = _import_module(config.hooks)
            functions.update((name, func) for name in HOOK_NAMES if callable(func := getattr(module, name, None)))
        for name in HOOK_NAMES:
            path: str = getattr(config, name)
            if path:
                functions[name] = _import_function(name, path)
        return cls(config, functions)

    def __bool__(self) -> bool:
        return bool(self.functions)

    def has(self, name: str) -> bool:
        return name in self.functions

    def call(self, name: str, *args: Any) -> None:
        """Run hook *name* if set; what it raises is logged with its name, and swallowed."""
        func = self.functions.get(name)
        if func is None:
            return
        try:
            func(*args)
        except Exception:
            log.exception("hook %s failed", name)

    # The hooks by where they run, so that callers need no argument lists.

    def on_starting(self) -> None:
        self.call("on_starting", self.config)

    def when_ready(self) -> None:
        self.call("when_ready", self.config)

    def on_exit(self) -> None:
        self.call("on_exit", self.config)

    def post_worker_init(self) -> bool:
        """False when the hook raised (logged): the worker should not serve."""
        func = self.functions.get("post_worker_init")
        if func is None:
            return True
        try:
            func(self.config, self.worker)
        except Exception:
            log.exception("hook post_worker_init failed; worker %d does not serve", self.worker.pid)
            return False
        return True

    def worker_exit(self) -> None:
        self.call("worker_exit", self.config, self.worker)

    def request_hooks(self) -> tuple[RequestHook | None, RequestHook | None]:
        """The per-request functions for ``WorkerState.on_start`` / ``on_done`` (None for
        an unset hook, so a request pays nothing for it)."""
        return self._request_hook("pre_request"), self._request_hook("post_request")

    def _request_hook(self, name: str) -> RequestHook | None:
        func = self.functions.get(name)
        if func is None:
            return None
        worker = self.worker

        def hook(stream: RequestStream) -> None:
            try:
                func(worker, stream)
            except Exception:
                log.exception("hook %s failed", name)

        return hook


class HookEvents(SupervisorEvents):
    """The master's hooks, as the supervisor's events; ``post_fork`` in the new worker."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    def ready(self, supervisor: Supervisor) -> None:
        self.hooks.when_ready()

    def reloading(self, supervisor: Supervisor) -> None:
        self.hooks.call("on_reload", self.hooks.config)

    def child_started(self, worker: WorkerProcess) -> None:
        self.hooks.worker = HookWorker(worker.pid, worker.number)
        self.hooks.call("post_fork", self.hooks.config, self.hooks.worker)

    def exited(self, supervisor: Supervisor, worker: WorkerProcess, code: int) -> None:
        self.hooks.call("child_exit", self.hooks.config, HookWorker(worker.pid, worker.number, code))


def _import_module(text: str) -> ModuleType:
    """The ``--hooks`` module: a dotted name, or a ``.py`` file, imported as the app and
    the hook options import theirs (the current directory first on ``sys.path``, a file
    under its own module name), so a module both name is one module, its state shared."""
    try:
        name = load_app(f"{text.strip()}:__name__", cwd=Path.cwd())
    except UserError as exc:
        raise UserError(f"--hooks {text}: {exc}") from None
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is None:
        raise UserError(f"--hooks {text}: expected a module or a .py file")
    return module


def _import_function(name: str, path: str) -> Hook:
    """One hook option: ``pkg.mod:func``, ``pkg.mod.func``, or ``file.py`` (its function *name*)."""
    flag = "--" + name.replace("_", "-")
    spec = path.strip()
    if ":" not in spec:
        if spec.endswith(".py"):
            spec = f"{spec}:{name}"
        else:
            module, dot, func = spec.rpartition(".")
            if not dot or not module or not func:
                raise UserError(f"{flag} {path}: expected a dotted path such as pkg.mod:func or pkg.mod.func")
            spec = f"{module}:{func}"
    try:
        found = load_app(spec, cwd=Path.cwd())
    except UserError as exc:
        raise UserError(f"{flag} {path}: {exc}") from None
    if not callable(found):
        raise UserError(f"{flag} {path}: names a {type(found).__name__}, not a function")
    hook: Hook = found
    return hook
