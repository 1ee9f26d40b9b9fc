"""The parent process: binds nothing itself (the caller did), forks the workers, and
owns the signals.

Signal handlers do nothing but wake the main loop (``signal.set_wakeup_fd``); the loop
waits on that pipe and on each worker's pidfd, so it never polls. The first worker must
report ready before the others start, so a broken app fails once, with one message.

Where ``os.pidfd_open`` does not exist (macOS, the BSDs), or with the environment variable
``FCGIBRIDGE_NO_PIDFD=1`` (how the tests force it on Linux), a worker's exit is learnt
from SIGCHLD instead: its handler only wakes the loop like the others, which then reaps
every worker that exited with ``waitpid(pid, WNOHANG)``, one call per worker it knows of
(not ``waitpid(-1)``, which would also reap a child some other part of the process
started and waits for), and goes on as for a pidfd.

With ``--pm dynamic`` or ``ondemand`` the number of workers follows the load:
:class:`~fcgibridge.process.scaling.Scaler`, one of the :class:`SupervisorEvents`, sets
the count and its bounds before the first fork and moves it on every tick (Rules 6 and 8).

The parent and a worker speak as :mod:`~fcgibridge.process.contract` says: signals one
way, status bytes and the exit code the other.

Signals to the parent:

- TERM: forwarded to every worker as TERM, which asks the app (an accept-style
  ``stop()`` hook may veto). A worker that answers ``S`` has ``--graceful-timeout``
  (+5 s) to exit before SIGKILL; one that does not answer at all gets the same from the
  TERM on. A ``V`` cancels the stop of the server: the parent logs it, goes back to
  serving, and replaces the workers that did stop. It never kills a worker that vetoed.
- INT or QUIT: fast stop: INT to every worker, which drops its connections and exits;
  SIGKILL past :data:`KILL_GRACE`. The same signal again while stopping does the same.
- HUP: forwarded to every worker. One with an accept-style ``restart()`` calls it; the
  others answer ``R``, and a reload follows: a replacement is forked (it imports the app
  afresh unless ``--preload``), and only once it is ready is the old worker told to
  retire (``SIGUSR2``): it closes its listeners, finishes what it has in flight, closes
  its idle connections, and exits. The listening sockets stay open in the parent, so a
  connection is never refused in between.
- TTIN / TTOU: one worker more / one fewer (retired gracefully; never below one, or with
  ``--pm`` dynamic or ondemand outside ``--min-workers`` (0 for ondemand) and ``--max-workers``).
- USR1: reopen the log files (``--error-log``), here and in every worker.

Each worker process is in one :class:`Phase`; these rules move it (the table
:data:`AFTER_REPORT` holds the moves a status byte makes):

Rule 1. A worker forked to make up the count is STARTING. One forked because a worker
        asked to be replaced (``R``) is REPLACING and knows which worker it replaces.
        A worker has one successor at most: ``R`` is ignored from a worker that has one
        on the way or is not SERVING, and from every worker while the server stops.

Rule 2. ``1`` (ready) makes a STARTING or REPLACING worker SERVING; a REPLACING one then
        has its predecessor retired (Rule 4), unless that one is gone or the server
        stops. A RETIRING worker stays RETIRING and gets SIGUSR2 again: it was retired
        before it could take the signal.

Rule 3. ``S`` (stopping) makes a SERVING worker STOPPING; a RETIRING one stays RETIRING.
        Either way it is killed if it is still there past the graceful timeout plus
        :data:`KILL_GRACE`, unless it has a deadline already.

Rule 4. The parent retires a worker (a reload, TTOU, its successor is ready): whatever
        its phase, it becomes RETIRING, with a deadline, and gets SIGUSR2.

Rule 5. ``V`` (veto) moves no phase: the worker serves on, without a deadline. If the
        server was stopping, it is not any more: every worker that is neither RETIRING
        nor STOPPING loses its deadline too.

Rule 6. The worker count (``-w``, TTIN, TTOU) counts the STARTING and SERVING workers:
        a REPLACING worker stands in for its predecessor, which counts until it retires.
        The count lies between :attr:`Supervisor.least` and :attr:`Supervisor.most`
        (static: one and no bound). The scaler (``--pm dynamic`` or ``ondemand``) moves
        it on each tick as TTIN and TTOU do, within the same bounds: a worker more is
        forked at once; a worker fewer is a SERVING one the scaler chose, retired (Rule 4).
        So TTIN and TTOU still move the count by one, and the scaler may move it back.
        A worker retired for one fewer takes its successor on the way (Rule 1) with it;
        a REPLACING worker whose predecessor exits before it is ready is STARTING from
        then on: it makes up the count, and no other worker is forked for it.

Rule 7. A worker's exit, unless the server is stopping, is read by its phase: RETIRING
        or STOPPING: expected, the count is made up again. STARTING or REPLACING before
        any worker was ever ready: the app does not start, and the server stops with
        the worker's exit code (or ``BOOT_FAILED``). REPLACING: the reloaded app does not
        start, and its predecessor serves on. Otherwise it died: the count is made up
        again, and after :data:`MAX_QUICK_DEATHS` quick deaths in a row the server stops
        with ``BOOT_FAILED``. A death is quick within :data:`QUICK_DEATH` of the fork, and
        only before the worker's first request (``Q``): one a request kills (a crash in C,
        the OOM killer) is not the app failing to start, and five such requests must not
        stop the server (with ondemand every worker is forked for a request). Status
        bytes still unread at the exit move its phase first (the table only, without
        Rule 2's retiring).

Rule 8. While no worker is STARTING or SERVING and the supervisor was given listening
        sockets to watch (``--pm`` dynamic or ondemand), the parent watches them for
        reading, never accepting: a waiting connection raises a count of 0 to 1, and that
        worker takes it. Before the first worker was ever ready, that worker boots the
        server and Rule 7 holds: if it exits before it is ready the server stops, instead
        of forking one more worker for every connection.

    STARTING ──1──┐
                  ├──▶ SERVING ──S──▶ STOPPING
    REPLACING ─1──┘
    any phase ──retired by the parent──▶ RETIRING  (S and 1 leave it so)
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import math
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable, Sequence

from .contract import RETIRE_SIGNAL, STACK_SIGNAL, ExitCode, Report

log = logging.getLogger("fcgibridge.supervisor")

#: Signals the parent forwards to every worker, asking for a stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

#: Signals the parent handles.
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1)

_STACK = () if STACK_SIGNAL is None else (STACK_SIGNAL,)

#: The environment variable that makes the parent use SIGCHLD even where pidfds exist.
NO_PIDFD = "FCGIBRIDGE_NO_PIDFD"

#: Seconds past the graceful timeout before a stopping worker is killed.
KILL_GRACE = 5.0

#: Workers that die this soon after starting count towards a crash loop.
QUICK_DEATH = 2.0
MAX_QUICK_DEATHS = 5

#: Seconds between two calls of :meth:`SupervisorEvents.tick`.
TICK = 1.0

#: The child's entry point: serves, calling ``report(Report.READY)`` once ready and
#: ``report(...)`` later as the contract says; returns the exit code.
Work = Callable[[Callable[[Report], None]], int]


class Phase(enum.Enum):
    """Where a worker process is in its life, as its parent sees it (Rules 1-7)."""

    STARTING = "forked, not serving yet"
    REPLACING = "forked to take another worker's place, not serving yet"
    SERVING = "serving"
    STOPPING = "stopping on its own account (it said S)"
    RETIRING = "retired by the parent: not replaced when it exits"


_P = Phase

#: (phase, status byte) -> the next phase, for the bytes that move one (Rules 2 and 3).
AFTER_REPORT: dict[tuple[Phase, Report], Phase] = {
    (_P.STARTING, Report.READY): _P.SERVING,
    (_P.REPLACING, Report.READY): _P.SERVING,
    (_P.SERVING, Report.STOPPING): _P.STOPPING,
}

#: The phases that count towards the number of workers (Rule 6).
COUNTED = frozenset({_P.STARTING, _P.SERVING})

#: The phases of a worker that has not said it is ready.
NOT_READY = frozenset({_P.STARTING, _P.REPLACING})

_REPORTS = {report[0]: report for report in Report}


class WorkerProcess:
    """One forked worker, as its parent tracks it."""

    def __init__(self, pid: int, pidfd: int, status_fd: int, replaces: WorkerProcess | None = None,
                 number: int = 1) -> None:
        self.pid = pid
        #: 1, 2, ...: the lowest number no other live worker has (process titles, hooks).
        self.number = number
        #: Why the parent killed it (logged when it is reaped); None: it was not.
        self.killed_for: str | None = None
        self.pidfd = pidfd
        self.status_fd = status_fd
        self.started = time.monotonic()
        self.phase = Phase.STARTING if replaces is None else Phase.REPLACING
        #: The worker a REPLACING one takes the place of (Rules 1 and 2).
        self.replaces = replaces
        self.kill_at: float | None = None  # SIGKILL past this time
        #: It started a request (FIRST_REQUEST): its death is not a crash loop's (Rule 7).
        self.served = False

    def reported(self, what: Report) -> None:
        """Move the phase as the table says for ``what``; no row: it stays."""
        if what is Report.FIRST_REQUEST:
            self.served = True
        self.phase = AFTER_REPORT.get((self.phase, what), self.phase)


class SupervisorEvents:
    """What the supervisor tells the rest of the master process (hooks, systemd, the
    hard kill of stuck workers, the status listener). Every method here does nothing;
    an exception from one is logged and does not stop the supervisor."""

    def ready(self, supervisor: Supervisor) -> None:
        """The first worker serves."""

    def reloading(self, supervisor: Supervisor) -> None:
        """A reload (SIGHUP) begins."""

    def stopping(self, supervisor: Supervisor) -> None:
        """The server begins to stop."""

    def forked(self, supervisor: Supervisor, worker: WorkerProcess) -> None:
        """In the parent, right after *worker* was forked."""

    def child_started(self, worker: WorkerProcess) -> None:
        """In the new worker process, right after the fork (its pid is already set)."""

    def exited(self, supervisor: Supervisor, worker: WorkerProcess, code: int) -> None:
        """*worker* exited with *code* (128 + N when killed by signal N)."""

    def tick(self, supervisor: Supervisor, now: float) -> None:
        """About every :data:`TICK` seconds while the supervisor runs (*now*: ``time.monotonic()``)."""

    def starting(self, supervisor: Supervisor) -> None:
        """Before the first fork: a concern that decides the number of workers (the
        scaler) sets :attr:`Supervisor.count`, its bounds and the listeners to watch here."""


class Supervisor:
    """Keeps ``count`` workers running until told to stop."""

    def __init__(self, count: int, work: Work, graceful_timeout: float,
                 on_reopen: Callable[[], None] | None = None,
                 events: Sequence[SupervisorEvents] = ()) -> None:
        self.count = count
        #: The count's bounds (Rule 6): TTOU never goes below ``least``, TTIN never past ``most``.
        self.least = 1
        self.most: int | None = None
        #: Listening sockets' fds watched while no worker serves (Rule 8); none: never.
        self.watched: list[int] = []
        self._watching = False
        #: Exits come from pidfds, or (where there are none) from SIGCHLD and waitpid.
        self.pidfds = hasattr(os, "pidfd_open") and os.environ.get(NO_PIDFD, "") != "1"
        self.events = list(events)
        self._next_tick = time.monotonic() + TICK
        self.work = work
        self.graceful_timeout = graceful_timeout
        self.on_reopen = on_reopen
        self.workers: dict[int, WorkerProcess] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping_since: float | None = None
        self.exit_code = 0
        self.quick_deaths = 0
        self.booted = False  # the first worker was ready
        self.on_started: Callable[[], None] | None = None  # called once the first worker is ready

    def _emit(self, name: str, *args: object) -> None:
        """Call ``name`` on every :class:`SupervisorEvents`, logging what one raises."""
        for events in self.events:
            try:
                getattr(events, name)(*args)
            except Exception:
                log.exception("supervisor event %s failed in %s", name, type(events).__name__)

    # ------------------------------------------------------------------ child

    def _free_number(self) -> int:
        taken = {w.number for w in self.workers.values()}
        return next(n for n in range(1, len(taken) + 2) if n not in taken)

    def _spawn(self, replaces: WorkerProcess | None = None) -> WorkerProcess:
        status_r, status_w = os.pipe()
        number = self._free_number()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(status_r)
            code: int = ExitCode.CRASHED
            try:
                signal.set_wakeup_fd(-1)
                for signum in self._handled():
                    signal.signal(signum, signal.SIG_DFL)
                # Until the worker handles them. STACK_SIGNAL too: a real-time signal's
                # default action ends the process, and a worker that has not registered
                # its stack dump (not yet, or it could not) must live to be killed by name.
                for signum in (signal.SIGHUP, signal.SIGUSR1, RETIRE_SIGNAL, *_STACK):
                    signal.signal(signum, lambda *_: None)
                me = WorkerProcess(os.getpid(), -1, status_w, replaces, number)
                for events in self.events:
                    events.child_started(me)
                code = self.work(lambda what: _report(status_w, what))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else ExitCode.CRASHED
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(status_w)
        os.set_blocking(status_r, False)
        worker = WorkerProcess(pid, os.pidfd_open(pid) if self.pidfds else -1, status_r, replaces, number)
        self.workers[pid] = worker
        if worker.pidfd >= 0:
            self.selector.register(worker.pidfd, selectors.EVENT_READ, ("exit", worker))
        self.selector.register(worker.status_fd, selectors.EVENT_READ, ("status", worker))
        log.info("started worker %d", pid)
        self._emit("forked", self, worker)
        return worker

    # ----------------------------------------------------------------- parent

    def _handled(self) -> tuple[int, ...]:
        """The signals the parent handles: SIGCHLD too without pidfds."""
        return HANDLED_SIGNALS if self.pidfds else (*HANDLED_SIGNALS, signal.SIGCHLD)

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = {signum: signal.signal(signum, lambda *_: None) for signum in self._handled()}
        signal.set_wakeup_fd(wake_w)
        self.selector.register(wake_r, selectors.EVENT_READ, ("signal", None))
        try:
            self._emit("starting", self)
            while self.count == 0 and self.stopping_since is None:  # ondemand: until a connection comes (Rule 8)
                self._step()
            if self.stopping_since is None:
                self._boot()
            # Until the last worker is gone once the server stops (with watched listeners,
            # Rule 8, none at all is a state of a running server).
            while self.workers or (self.watched and self.stopping_since is None):
                self._step()
        finally:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
        return self.exit_code

    def _boot(self) -> None:
        """The first worker, alone until it is ready; then the others."""
        first = self._spawn()
        while first.phase in NOT_READY and first.pid in self.workers and self.stopping_since is None:
            self._step()
        if first.phase not in NOT_READY:
            self.booted = True
            if self.on_started is not None:
                self.on_started()
            self._emit("ready", self)
            self._fill()

    def counted(self) -> list[WorkerProcess]:
        """Workers that count towards ``count`` (Rule 6)."""
        return [w for w in self.workers.values() if w.phase in COUNTED]

    def _fill(self) -> None:
        """Fork workers up to the count; before the first one is ready, none (the boot rule)."""
        if not self.booted:
            return
        for _ in range(self.count - len(self.counted())):
            self._spawn()

    def add_workers(self, wanted: int) -> int:
        """Raise the count by *wanted*, but not past :attr:`most`, and fork them; returns
        how many (Rule 6)."""
        added = max(0, wanted if self.most is None else min(wanted, self.most - self.count))
        if self.stopping_since is not None:
            return 0
        self.count += added
        self._fill()
        return added

    def retire(self, worker: WorkerProcess) -> bool:
        """One worker fewer: *worker* (SERVING) retires, unless the count is at :attr:`least`
        (Rules 4 and 6); True when it does."""
        if self.count <= self.least or worker.phase is not Phase.SERVING or self.stopping_since is not None:
            return False
        self.count -= 1
        self._retire_one(worker)
        return True

    def _retire_one(self, worker: WorkerProcess) -> None:
        """One worker fewer (TTOU, the scaler): *worker* retires, and so does a successor
        on the way (Rule 1), which would otherwise count once ready (Rule 6)."""
        self._retire(worker)
        for other in list(self.workers.values()):
            if other.replaces is worker and other.phase is Phase.REPLACING:
                other.replaces = None
                self._retire(other)

    def _watch(self) -> None:
        """Rule 8: the listeners are in the selector exactly while nothing could accept."""
        wanted = bool(self.watched) and self.stopping_since is None and not self.counted()
        if wanted is self._watching:
            return
        for fd in self.watched:
            if wanted:
                self.selector.register(fd, selectors.EVENT_READ, ("listener", None))
            else:
                self.selector.unregister(fd)
        self._watching = wanted

    def _connection_waiting(self) -> None:
        """Rule 8: a connection waits on a listener and no worker could take it."""
        if self.stopping_since is not None or self.counted():
            return
        if self.count == 0:
            log.info("a connection is waiting: starting a worker")
            self.count = 1
        self._fill()

    def _step(self) -> None:
        self._watch()
        now = time.monotonic()
        timeout = None
        deadlines = [w.kill_at for w in self.workers.values() if w.kill_at is not None]
        if deadlines:
            timeout = max(0.0, min(deadlines) - now)
            if timeout == 0:
                self._kill_late()
                timeout = 1.0
        if self.events:
            if now >= self._next_tick:
                self._next_tick = now + TICK
                self._emit("tick", self, now)
            timeout = min(timeout if timeout is not None else TICK, max(0.0, self._next_tick - now))
        for key, _ in self.selector.select(timeout):
            kind, worker = key.data
            if kind == "signal":
                self._signals(key.fd)
            elif kind == "listener":
                self._connection_waiting()
            elif kind == "status":
                if worker.pid in self.workers:
                    self._status(worker)
            elif worker.pid in self.workers:
                self._reap(worker)

    def _signals(self, fd: int) -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        for signum in data:
            getattr(self, "handle_" + signal.Signals(signum).name.lower())()

    def handle_sigterm(self) -> None:
        self.stop("SIGTERM", ask=True)

    def handle_sigint(self) -> None:
        self.stop("SIGINT", fast=True)

    def handle_sigquit(self) -> None:
        self.stop("SIGQUIT", fast=True)

    def handle_sighup(self) -> None:
        if self.stopping_since is not None:
            return
        log.info("SIGHUP: reloading %d workers (a worker whose app has a restart function calls it instead)",
                 len(self.counted()))
        self._emit("reloading", self)
        for worker in self.counted():
            _kill(worker.pid, signal.SIGHUP)

    def handle_sigttin(self) -> None:
        if self.stopping_since is not None:
            return
        if self.most is not None and self.count >= self.most:
            log.info("SIGTTIN ignored: %s is the most (--max-workers)", _workers(self.most))
            return
        self.count += 1
        log.info("SIGTTIN: %d workers", self.count)
        self._fill()

    def handle_sigttou(self) -> None:
        if self.stopping_since is not None:
            return
        if self.count <= self.least:
            log.info("SIGTTOU ignored: %s is the least", _workers(self.least))
            return
        self.count -= 1
        log.info("SIGTTOU: %d workers", self.count)
        serving = self.counted()
        if len(serving) > self.count:
            self._retire_one(max(serving, key=lambda w: w.started))

    def handle_sigchld(self) -> None:
        """Without pidfds: reap every worker that exited (one SIGCHLD may stand for several)."""
        for worker in list(self.workers.values()):
            if worker.pid in self.workers:
                code = _exit_code_now(worker.pid)
                if code is not None:
                    self._reap(worker, code)

    def handle_sigusr1(self) -> None:
        log.info("SIGUSR1: reopening the log files")
        if self.on_reopen is not None:
            self.on_reopen()
        for worker in self.workers.values():
            _kill(worker.pid, signal.SIGUSR1)

    def stop(self, why: str, *, ask: bool = False, fast: bool = False) -> None:
        """Stop every worker: gracefully (with *ask*, by TERM, which the app may veto),
        or with *fast* at once."""
        now = time.monotonic()
        if self.stopping_since is None:
            self._emit("stopping", self)
        if fast or self.stopping_since is not None:
            log.info("%s: stopping %d workers now", why, len(self.workers))
            self.stopping_since = self.stopping_since or now
            for worker in self.workers.values():
                worker.kill_at = min(worker.kill_at or math.inf, now + KILL_GRACE)
            self._signal_all(signal.SIGINT)
            return
        log.info("%s: stopping %d workers gracefully", why, len(self.workers))
        self.stopping_since = now
        for worker in self.workers.values():
            worker.kill_at = now + self.graceful_timeout + KILL_GRACE
        self._signal_all(signal.SIGTERM if ask else RETIRE_SIGNAL)

    def _retire(self, worker: WorkerProcess) -> None:
        """Rule 4."""
        worker.phase = Phase.RETIRING
        worker.kill_at = time.monotonic() + self.graceful_timeout + KILL_GRACE
        _kill(worker.pid, RETIRE_SIGNAL)

    def _signal_all(self, signum: int) -> None:
        for pid in self.workers:
            _kill(pid, signum)

    def kill(self, worker: WorkerProcess, why: str) -> None:
        """SIGKILL *worker* now; unless the server stops, it is replaced like one that died."""
        if worker.killed_for is None:
            worker.killed_for = why
        log.error("killing worker %d: %s", worker.pid, why)
        _kill(worker.pid, signal.SIGKILL)

    def _kill_late(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.kill_at is not None and worker.kill_at <= now:
                log.warning("worker %d did not stop in time; killing it", worker.pid)
                worker.kill_at = None
                _kill(worker.pid, signal.SIGKILL)

    def _status(self, worker: WorkerProcess) -> None:
        """The worker's status pipe: its reports, or EOF."""
        try:
            data = os.read(worker.status_fd, 64)
        except BlockingIOError:
            return
        if not data:
            self._close_status(worker)
            return
        for byte in data:
            what = _REPORTS.get(byte)
            if what is Report.READY:
                self._on_ready(worker)
            elif what is Report.REPLACE_ME:
                self._replace(worker)
            elif what is Report.STOPPING:
                worker.reported(what)
                if worker.kill_at is None:
                    worker.kill_at = time.monotonic() + self.graceful_timeout + KILL_GRACE
            elif what is Report.VETO:
                self._vetoed(worker)
            elif what is Report.FIRST_REQUEST:
                worker.reported(what)

    def _on_ready(self, worker: WorkerProcess) -> None:
        """Rule 2."""
        old, worker.replaces = worker.replaces, None
        worker.reported(Report.READY)
        if worker.phase is Phase.RETIRING:  # told before it handled the signal (it ignores it until it serves)
            _kill(worker.pid, RETIRE_SIGNAL)
        if old is not None and old.pid in self.workers and self.stopping_since is None:
            log.info("worker %d is ready; retiring worker %d", worker.pid, old.pid)
            self._retire(old)

    def _replace(self, worker: WorkerProcess) -> None:
        """The worker asked to be replaced: fork its successor; it retires once that is ready (Rule 1)."""
        if self.stopping_since is not None or worker.phase is not Phase.SERVING:
            return
        if any(other.replaces is worker for other in self.workers.values()):
            return  # its successor is on the way
        self._spawn(replaces=worker)

    def _vetoed(self, worker: WorkerProcess) -> None:
        """Rule 5."""
        worker.kill_at = None
        if self.stopping_since is not None:
            log.warning("worker %d vetoed the stop (its stop function returned non-zero); still serving",
                        worker.pid)
            self.stopping_since = None
            for other in self.workers.values():
                if other.phase is not Phase.STOPPING and other.phase is not Phase.RETIRING:
                    other.kill_at = None

    def _close_status(self, worker: WorkerProcess) -> None:
        if worker.status_fd >= 0:
            self.selector.unregister(worker.status_fd)
            os.close(worker.status_fd)
            worker.status_fd = -1

    def _reap(self, worker: WorkerProcess, code: int | None = None) -> None:
        """The worker exited: *code* when SIGCHLD's waitpid collected it already, else
        it is collected here (its pidfd said it exited)."""
        if worker.pidfd >= 0:
            self.selector.unregister(worker.pidfd)
            os.close(worker.pidfd)
        if worker.status_fd >= 0:
            with contextlib.suppress(BlockingIOError):  # a last word (S or V) not read yet
                for byte in os.read(worker.status_fd, 64):
                    what = _REPORTS.get(byte)
                    if what is not None:
                        worker.reported(what)
        self._close_status(worker)
        del self.workers[worker.pid]
        for other in self.workers.values():
            if other.replaces is worker and other.phase is Phase.REPLACING:
                # Its predecessor is gone: it stands for the count now (Rules 1 and 6),
                # or the count would be made up twice, by it and by a worker forked below.
                other.replaces = None
                other.phase = Phase.STARTING
        if code is None:
            code = _wait_code(worker.pid)
        self._emit("exited", self, worker, code)
        if self.stopping_since is not None:
            return
        if worker.killed_for is not None and worker.phase is Phase.SERVING:
            log.error("worker %d was killed (%s); starting a new one", worker.pid, worker.killed_for)
            self._fill()
            return
        # Rule 7.
        if worker.phase is Phase.RETIRING:
            log.info("worker %d retired (exit code %d)", worker.pid, code)
            self._fill()
            return
        if worker.phase is Phase.STOPPING:  # it stopped while the server was told to keep serving (a veto elsewhere)
            log.info("worker %d stopped (exit code %d); starting a new one", worker.pid, code)
            self._fill()
            return
        if worker.phase in NOT_READY and not self.booted:
            log.error("worker %d exited with code %d before it was ready; stopping", worker.pid, code)
            self.exit_code = code or ExitCode.BOOT_FAILED
            self.stop("boot failure")
            return
        if worker.phase is Phase.REPLACING and worker.replaces is not None:
            log.error("worker %d exited with code %d before it was ready: the reloaded app does not start; "
                      "worker %d keeps serving", worker.pid, code, worker.replaces.pid)
            return
        log.error("worker %d died (exit code %d); starting a new one", worker.pid, code)
        quick = not worker.served and time.monotonic() - worker.started < QUICK_DEATH
        self.quick_deaths = self.quick_deaths + 1 if quick else 0
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            log.error("workers keep dying right after starting; stopping")
            self.exit_code = ExitCode.BOOT_FAILED
            self.stop("crash loop")
            return
        self._fill()


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _report(fd: int, what: Report) -> None:
    os.write(fd, what)


def _wait_code(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError as exc:
        if exc.errno == errno.ECHILD:
            return 0
        raise
    return _exit_code(status)


def _exit_code_now(pid: int) -> int | None:
    """The exit code of child *pid* if it has exited (collected now), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0  # collected already: nothing to tell
    return _exit_code(status) if done else None


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells say


def _workers(count: int) -> str:
    return "one worker" if count == 1 else f"{count} workers"
