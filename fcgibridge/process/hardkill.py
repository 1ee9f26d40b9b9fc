"""The hard kill of a stuck request (uWSGI's harakiri, PHP-FPM's request_terminate_timeout).

A worker ends a request past ``--timeout`` itself, by a timer on its event loop
(:mod:`~fcgibridge.process.timeouts`). That timer cannot fire while the request holds
the loop: a ``--sync`` WSGI call, an ASGI app that calls ``time.sleep``. One such request
stuck for good would hang its worker for good, so the supervisor watches from outside.

What it reads is the shared scoreboard: per worker, the requests in flight and the wall
clock of the latest request start. That is enough: while a worker's loop is blocked no
request starts in it, so the latest start is frozen; a worker whose loop runs ends every
request past ``--timeout`` itself, within ``--timeout-grace``. So a slot with requests in
flight whose latest start is older than ``--timeout`` plus ``--timeout-grace`` is a stuck
worker. (A WSGI request in a thread past ``--timeout`` is ended by the loop and leaves
the slot; that worker is replaced gracefully, as before.)

On every supervisor tick (about once a second) :class:`HardKill`:

1. finds the stuck workers (past the limit, with the same request start as on the tick
   before: :meth:`HardKill._find_stuck` says why); for each it writes a line naming the
   request to the slow log (or logs it) and sends
   :data:`~fcgibridge.process.contract.STACK_SIGNAL`, on which the worker's faulthandler
   writes every thread's stack after that line;
2. on a later tick, at least :data:`STACK_WAIT` after the signal, SIGKILLs the worker
   with :meth:`Supervisor.kill`, which logs an error naming the pid, the request (method,
   URI) and how long it ran; the worker is replaced like one that died. A worker whose
   slot moved on in between (a request ended or started: its loop runs) is left alone.

The request named is the latest one the worker started: the one holding the loop, but
for the rare case of two that started in the same turn of the loop before the first of
them blocked it. The stack shows which it is.

The supervisor never waits here: the moment between the two steps is a deadline that a
later tick checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from ..config import Config
from ..logs import open_append
from .contract import STACK_SIGNAL
from .scoreboard import Scoreboard, SlotView
from .supervisor import Supervisor, SupervisorEvents, WorkerProcess

log = logging.getLogger("fcgibridge.supervisor")

#: Seconds between the stack signal and the kill, for the stack to be written.
STACK_WAIT = 0.5


@dataclass
class Stuck:
    """A worker told to dump its stack, to be killed at ``kill_at`` (monotonic)."""

    worker: WorkerProcess
    view: SlotView
    kill_at: float
    #: When its request began, as this master reckons it (monotonic).
    began: float


class HardKill(SupervisorEvents):
    """Kills the workers whose request runs past ``--timeout`` + ``--timeout-grace``."""

    def __init__(self, board: Scoreboard, timeout: float, grace: float, slowlog: str = "") -> None:
        self.board = board
        self.timeout = timeout
        self.grace = grace
        self.slowlog = slowlog
        #: pid -> the stuck worker, between its stack signal and its kill.
        self.stuck: dict[int, Stuck] = {}
        #: pid -> (request start, when this master first saw it (monotonic), its age then)
        #: for every worker with a request in flight on the last tick.
        self.seen: dict[int, tuple[float, float, float]] = {}
        #: slot index -> when it was claimed, for the slots of workers that exited: what
        #: they hold (a request "in flight" forever, if the worker died in it) names a pid
        #: the kernel may give a new worker, which must not be taken for that one.
        self.left: dict[int, float] = {}

    @classmethod
    def from_config(cls, config: Config, board: Scoreboard) -> HardKill:
        return cls(board, config.timeout, config.timeout_grace, config.slowlog)

    @property
    def limit(self) -> float:
        return self.timeout + self.grace

    def tick(self, supervisor: Supervisor, now: float) -> None:
        self._kill_due(supervisor, now)
        self._find_stuck(supervisor, now)

    def exited(self, supervisor: Supervisor, worker: WorkerProcess, code: int) -> None:
        self.stuck.pop(worker.pid, None)
        _, views = self.board.read()
        for view in views:
            if view.pid == worker.pid:
                self.left[view.index] = view.started

    def _find_stuck(self, supervisor: Supervisor, now: float) -> None:
        """Past the limit, and seen with the same request start on the tick before: a
        worker writes its in-flight count just before the start of a new request, so one
        read alone may pair the new count with the previous request's start.

        How long a request has run is its age when first seen (the slot's wall clock
        start, a tick old at most) plus the monotonic time since: a step of the wall
        clock (NTP, a resumed VM, ``date -s``) would otherwise make every request in
        flight look stuck at once, or hide a stuck one."""
        wall = time.time()
        seen, self.seen = self.seen, {}
        _, views = self.board.read()
        for view in views:
            if view.index in self.left:
                if self.left[view.index] == view.started:
                    continue  # still the exited worker's figures
                del self.left[view.index]  # claimed anew
            worker = supervisor.workers.get(view.pid)
            if (worker is None or view.in_flight <= 0 or view.pid in self.stuck
                    or worker.killed_for is not None):
                continue
            known = seen.get(view.pid)
            if known is None or known[0] != view.request_start:  # first seen: a candidate for the next tick
                self.seen[view.pid] = (view.request_start, now, max(0.0, wall - view.request_start))
                continue
            self.seen[view.pid] = known
            running = known[2] + (now - known[1])
            if running <= self.limit:
                continue
            self._dump_stack(view, running)
            self.stuck[view.pid] = Stuck(worker, view, now + STACK_WAIT, now - running)

    def _dump_stack(self, view: SlotView, running: float) -> None:
        """The slow log's line naming the request, then the worker's own stack dump."""
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        line = (f"[{when}] [pid {view.pid}] request stuck for {running:.1f} s (past --timeout {self.timeout:g} s "
                f"+ --timeout-grace {self.grace:g} s), killing its worker: {describe(view)}; its stack:")
        written = False
        if self.slowlog:
            try:
                with open(open_append(self.slowlog), "a", encoding="utf-8") as out:  # root: a user's link not followed
                    out.write(line + "\n")
                written = True
            except OSError as exc:
                log.error("cannot write the slow log %s: %s", self.slowlog, exc)
        if not written:  # the error log, where the worker's stack then goes too
            log.warning("%s", line)
        if STACK_SIGNAL is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(view.pid, STACK_SIGNAL)

    def _kill_due(self, supervisor: Supervisor, now: float) -> None:
        for pid, stuck in list(self.stuck.items()):
            if now < stuck.kill_at:
                continue
            del self.stuck[pid]
            if supervisor.workers.get(pid) is not stuck.worker:
                continue  # gone meanwhile
            current = self.board.read_slot(stuck.view.index)
            if (current.pid != pid or current.in_flight <= 0 or current.served != stuck.view.served
                    or current.request_start != stuck.view.request_start):
                # A request ended (served moved, even with another still in flight): the
                # loop runs again, and ends what is left past --timeout itself.
                log.info("worker %d moved on after all (its request ended); not killing it", pid)
                continue
            running = now - stuck.began
            supervisor.kill(stuck.worker, f"request stuck for {running:.1f} s (past --timeout {self.timeout:g} s + "
                                          f"--timeout-grace {self.grace:g} s): {describe(current)}")


def describe(view: SlotView) -> str:
    """The request line as the scoreboard holds it (the latest request of the slot)."""
    return f"{view.method or '?'} {view.uri or '?'}"
