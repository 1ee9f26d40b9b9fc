"""Per-request time limits of one worker: ``--timeout`` and the slow log.

``--timeout``: a timer on the event loop per request. When it fires the request is
ended — 504 if nothing was sent yet, else its END_REQUEST with app status 1 — and the
event is logged with the request line. An ASGI call is cancelled. A WSGI thread cannot
be interrupted: its output is thrown away from then on, and the worker asks its
supervisor for a replacement, so a thread stuck for good leaves with its worker.

The timer cannot fire while the request holds the loop itself (a ``--sync`` WSGI call, an
ASGI app calling ``time.sleep``). For that case the supervisor watches the scoreboard and
kills the worker past ``--timeout`` plus ``--timeout-grace``
(:mod:`~fcgibridge.process.hardkill`); first it sends
:data:`~fcgibridge.process.contract.STACK_SIGNAL`, on which :class:`StackDump` (set up
here with ``--timeout``) has faulthandler write every thread's stack to the slow log
file or stderr (the error log) from the signal handler, which needs no event loop.

Slow log (PHP-FPM's ``request_slowlog_timeout``): a watchdog thread, woken by a
condition at the earliest deadline (it never polls), writes the Python stack of the
thread serving a request that is still running past ``--slowlog-timeout`` to
``--slowlog`` (or the error log). The request keeps running. It is a thread of its own
so that it also sees requests that block the event loop (``--sync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import heapq
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from ..config import Config
from ..server.connection import RequestStream, WorkerState
from .contract import STACK_SIGNAL

log = logging.getLogger("fcgibridge.server")


def request_line(stream: RequestStream) -> str:
    params = stream.params
    return f"{params.get('REQUEST_METHOD', '?')} {params.get('REQUEST_URI', params.get('SCRIPT_NAME', '?'))}"


class RequestTimeouts:
    """Both limits for one worker; its hooks are ``WorkerState.on_start`` / ``on_done``."""

    def __init__(self, config: Config, state: WorkerState, on_timeout: Callable[[RequestStream], None]) -> None:
        self.timeout = config.timeout
        self.state = state
        self.on_timeout = on_timeout
        self.loop = asyncio.get_running_loop()
        self.timers: dict[RequestStream, asyncio.TimerHandle] = {}
        self.slowlog: SlowLog | None = None
        if config.slowlog_timeout:
            self.slowlog = SlowLog(config.slowlog_timeout, config.slowlog)
        self.stack_dump: StackDump | None = None
        if config.timeout and threading.current_thread() is threading.main_thread():
            self.stack_dump = StackDump.install(config.slowlog)

    def started(self, stream: RequestStream) -> None:
        if self.timeout:
            self.timers[stream] = self.loop.call_later(self.timeout, self._expired, stream)
        if self.slowlog is not None:
            self.slowlog.watch(stream)

    def done(self, stream: RequestStream) -> None:
        timer = self.timers.pop(stream, None)
        if timer is not None:
            timer.cancel()

    def _expired(self, stream: RequestStream) -> None:
        self.timers.pop(stream, None)
        if stream.closed:
            return
        handler = stream.handler
        log.error("request timed out after %g s (--timeout), ended: %s", self.timeout, request_line(stream))
        stream.fail(504, "Gateway Timeout")
        if handler is not None and not handler.cancel():
            self.on_timeout(stream)

    def close(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        if self.slowlog is not None:
            self.slowlog.close()


class StackDump:
    """faulthandler on :data:`~fcgibridge.process.contract.STACK_SIGNAL`: every thread's
    stack to *path* (kept open, appended to), or to stderr. Only in a worker's main
    thread: a worker run in a thread (the tests) leaves its process's signals alone.
    It stays registered for the life of the process, through the graceful stop too (a
    request may get stuck then), so the file is never closed here."""

    def __init__(self, signum: int, out: TextIO, path: str = "") -> None:
        self.signum = signum
        self.out = out
        self.path = path

    def reopen(self) -> None:
        """SIGUSR1 after a rotation: the dump goes to a file of that name again (not to
        the one renamed away, beside a stuck line the master writes to the new one)."""
        if not self.path:
            return
        try:
            out = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        except OSError as exc:
            log.error("cannot reopen the slow log %s for stack dumps: %s", self.path, exc)
            return
        faulthandler.register(self.signum, file=out, all_threads=True)
        old, self.out = self.out, out
        if old is not sys.stderr:
            old.close()

    @classmethod
    def install(cls, path: str) -> StackDump | None:
        """Register the dump; None where there is no such signal. A slow log that cannot
        be opened (a directory missing, the file not the dropped --user's) is logged and
        the stack goes to stderr (the error log) instead."""
        if STACK_SIGNAL is None:
            return None
        out = sys.stderr
        try:
            if path:
                out = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        except OSError as exc:
            log.error("cannot open the slow log %s for stack dumps (they go to the error log): %s", path, exc)
        faulthandler.register(STACK_SIGNAL, file=out, all_threads=True)
        return cls(STACK_SIGNAL, out, path if out is not sys.stderr else "")


class SlowLog:
    """The watchdog thread: a heap of (deadline, request) and a condition to wait on."""

    def __init__(self, threshold: float, path: str) -> None:
        self.threshold = threshold
        self.path = path
        self.heap: list[tuple[float, int, RequestStream]] = []
        self.counter = itertools.count()
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="fcgibridge-slowlog", daemon=True)
        self.thread.start()

    def watch(self, stream: RequestStream) -> None:
        with self.cond:
            first = not self.heap
            heapq.heappush(self.heap, (time.monotonic() + self.threshold, next(self.counter), stream))
            if first:
                self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closed and (not self.heap or self.heap[0][0] > time.monotonic()):
                    self.cond.wait(self.heap[0][0] - time.monotonic() if self.heap else None)
                if self.closed:
                    return
                _, _, stream = heapq.heappop(self.heap)
            if not stream.closed:
                with contextlib.suppress(Exception):  # the slow log must never hurt the worker
                    self._write(stream)

    def _write(self, stream: RequestStream) -> None:
        handler = stream.handler
        stack = handler.current_stack() if handler is not None else None
        if stack is None:
            return
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        text = (f"[{when}] [pid {os.getpid()}] request running for more than {self.threshold:g} s: "
                f"{request_line(stream)}\n{stack}\n")
        if self.path:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(text)
        else:
            log.warning("%s", text.rstrip("\n"))

