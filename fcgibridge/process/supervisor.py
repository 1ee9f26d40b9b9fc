"""The parent process: binds nothing itself (the caller did), forks the workers, and
owns the signals.

Signal handlers do nothing but wake the main loop (``signal.set_wakeup_fd``); the loop
waits on that pipe and on each worker's pidfd, so it never polls. The first worker must
report ready before the others start, so a broken app fails once, with one message.

Each worker keeps a status pipe to the parent: ``1`` once it serves, ``R`` when it asks
to be replaced (HUP without a restart hook, ``--max-requests`` reached, a request past
``--timeout`` in a thread that cannot be interrupted), and after a stop signal ``S``
(stopping) or ``V`` (its app's ``stop()`` vetoed the stop).

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
- TTIN / TTOU: one worker more / one fewer (retired gracefully; never below one).
- USR1: reopen the log files (``--error-log``), here and in every worker.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable

log = logging.getLogger("fcgibridge.supervisor")

#: Signals the parent forwards to every worker, asking for a stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

#: Signals the parent handles.
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1)

#: What the parent sends a worker it retires (reload, TTOU, replaced): a graceful stop
#: that no stop() hook is asked about.
RETIRE_SIGNAL = signal.SIGUSR2

#: Seconds past the graceful timeout before a stopping worker is killed.
KILL_GRACE = 5.0

#: Workers that die this soon after starting count towards a crash loop.
QUICK_DEATH = 2.0
MAX_QUICK_DEATHS = 5

#: Exit code of a worker that could not load or start the app.
BOOT_FAILED = 3

#: Status bytes a worker writes to its parent.
READY, REPLACE_ME, STOPPING, VETO = b"1", b"R", b"S", b"V"

#: The child's entry point: serves, calling ``report(b"1")`` once ready, and
#: ``report(b"R"/b"S"/b"V")`` later; returns the exit code.
Work = Callable[[Callable[[bytes], None]], int]


class WorkerProcess:
    def __init__(self, pid: int, pidfd: int, status_fd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.status_fd = status_fd
        self.started = time.monotonic()
        self.ready = False
        self.stopping = False  # it said it is stopping (S), or it was told to retire
        self.retiring = False  # the parent retires it: not to be replaced when it exits
        self.replacement: WorkerProcess | None = None  # forked to take its place once ready
        self.replaces: WorkerProcess | None = None
        self.kill_at: float | None = None  # SIGKILL past this time


class Supervisor:
    """Keeps ``count`` workers running until told to stop."""

    def __init__(self, count: int, work: Work, graceful_timeout: float,
                 on_reopen: Callable[[], None] | None = None) -> None:
        self.count = count
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

    # ------------------------------------------------------------------ child

    def _spawn(self) -> WorkerProcess:
        status_r, status_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(status_r)
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for signum in HANDLED_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                for signum in (signal.SIGHUP, signal.SIGUSR1, RETIRE_SIGNAL):
                    signal.signal(signum, lambda *_: None)  # until the worker handles them
                code = self.work(lambda what: _report(status_w, what))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(status_w)
        os.set_blocking(status_r, False)
        worker = WorkerProcess(pid, os.pidfd_open(pid), status_r)
        self.workers[pid] = worker
        self.selector.register(worker.pidfd, selectors.EVENT_READ, ("exit", worker))
        self.selector.register(worker.status_fd, selectors.EVENT_READ, ("status", worker))
        log.info("started worker %d", pid)
        return worker

    # ----------------------------------------------------------------- parent

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = {signum: signal.signal(signum, lambda *_: None) for signum in HANDLED_SIGNALS}
        signal.set_wakeup_fd(wake_w)
        self.selector.register(wake_r, selectors.EVENT_READ, ("signal", None))
        try:
            first = self._spawn()
            while not first.ready and first.pid in self.workers and self.stopping_since is None:
                self._step()
            if first.ready:
                self.booted = True
                if self.on_started is not None:
                    self.on_started()
                self._fill()
            while self.workers:
                self._step()
        finally:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
        return self.exit_code

    def _serving(self) -> list[WorkerProcess]:
        """Workers that count towards ``count``: not retiring, not replacing another."""
        return [w for w in self.workers.values() if not w.stopping and not w.retiring and w.replaces is None]

    def _fill(self) -> None:
        for _ in range(self.count - len(self._serving())):
            self._spawn()

    def _step(self) -> None:
        timeout = None
        deadlines = [w.kill_at for w in self.workers.values() if w.kill_at is not None]
        if deadlines:
            timeout = max(0.0, min(deadlines) - time.monotonic())
            if timeout == 0:
                self._kill_late()
                timeout = 1.0
        for key, _ in self.selector.select(timeout):
            kind, worker = key.data
            if kind == "signal":
                self._signals(key.fd)
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
                 len(self._serving()))
        for worker in self._serving():
            _kill(worker.pid, signal.SIGHUP)

    def handle_sigttin(self) -> None:
        if self.stopping_since is not None:
            return
        self.count += 1
        log.info("SIGTTIN: %d workers", self.count)
        self._fill()

    def handle_sigttou(self) -> None:
        if self.stopping_since is not None:
            return
        if self.count <= 1:
            log.info("SIGTTOU ignored: one worker is the least")
            return
        self.count -= 1
        log.info("SIGTTOU: %d workers", self.count)
        serving = self._serving()
        if len(serving) > self.count:
            self._retire(max(serving, key=lambda w: w.started))

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
        worker.retiring = True
        worker.kill_at = time.monotonic() + self.graceful_timeout + KILL_GRACE
        _kill(worker.pid, RETIRE_SIGNAL)

    def _signal_all(self, signum: int) -> None:
        for pid in self.workers:
            _kill(pid, signum)

    def _kill_late(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.kill_at is not None and worker.kill_at <= now:
                log.warning("worker %d did not stop in time; killing it", worker.pid)
                worker.kill_at = None
                _kill(worker.pid, signal.SIGKILL)

    def _status(self, worker: WorkerProcess) -> None:
        """The worker's status pipe: 1, R, S, V, or EOF."""
        try:
            data = os.read(worker.status_fd, 64)
        except BlockingIOError:
            return
        if not data:
            self._close_status(worker)
            return
        for byte in data:
            what = bytes((byte,))
            if what == READY:
                self._on_ready(worker)
            elif what == REPLACE_ME:
                self._replace(worker)
            elif what == STOPPING:
                worker.stopping = True
                if worker.kill_at is None:
                    worker.kill_at = time.monotonic() + self.graceful_timeout + KILL_GRACE
            elif what == VETO:
                self._vetoed(worker)

    def _on_ready(self, worker: WorkerProcess) -> None:
        worker.ready = True
        if worker.retiring:  # told before it handled the signal (it ignores it until it serves)
            _kill(worker.pid, RETIRE_SIGNAL)
        old = worker.replaces
        if old is not None:
            worker.replaces = None
            old.replacement = None
            if old.pid in self.workers and self.stopping_since is None:
                log.info("worker %d is ready; retiring worker %d", worker.pid, old.pid)
                self._retire(old)

    def _replace(self, worker: WorkerProcess) -> None:
        """The worker asked to be replaced: fork its successor; it retires once that is ready."""
        if self.stopping_since is not None or worker.retiring or worker.stopping or worker.replacement is not None:
            return
        new = self._spawn()
        new.replaces = worker
        worker.replacement = new

    def _vetoed(self, worker: WorkerProcess) -> None:
        worker.kill_at = None
        if self.stopping_since is not None:
            log.warning("worker %d vetoed the stop (its stop function returned non-zero); still serving",
                        worker.pid)
            self.stopping_since = None
            for other in self.workers.values():
                if not other.stopping:
                    other.kill_at = None

    def _close_status(self, worker: WorkerProcess) -> None:
        if worker.status_fd >= 0:
            self.selector.unregister(worker.status_fd)
            os.close(worker.status_fd)
            worker.status_fd = -1

    def _reap(self, worker: WorkerProcess) -> None:
        self.selector.unregister(worker.pidfd)
        os.close(worker.pidfd)
        if worker.status_fd >= 0:
            with contextlib.suppress(BlockingIOError):  # a last word (S or V) not read yet
                tail = os.read(worker.status_fd, 64)
                worker.ready = worker.ready or READY in tail
                worker.stopping = worker.stopping or STOPPING in tail
        self._close_status(worker)
        del self.workers[worker.pid]
        code = _wait_code(worker.pid)
        if worker.replaces is not None:  # a replacement that never got ready
            worker.replaces.replacement = None
        if self.stopping_since is not None:
            return
        if worker.retiring:
            log.info("worker %d retired (exit code %d)", worker.pid, code)
            self._fill()
            return
        if worker.stopping:  # it stopped while the server was told to keep serving (a veto elsewhere)
            log.info("worker %d stopped (exit code %d); starting a new one", worker.pid, code)
            self._fill()
            return
        if not worker.ready and not self.booted:
            log.error("worker %d exited with code %d before it was ready; stopping", worker.pid, code)
            self.exit_code = code or BOOT_FAILED
            self.stop("boot failure")
            return
        if not worker.ready and worker.replaces is not None:
            log.error("worker %d exited with code %d before it was ready: the reloaded app does not start; "
                      "worker %d keeps serving", worker.pid, code, worker.replaces.pid)
            return
        log.error("worker %d died (exit code %d); starting a new one", worker.pid, code)
        self.quick_deaths = self.quick_deaths + 1 if time.monotonic() - worker.started < QUICK_DEATH else 0
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            log.error("workers keep dying right after starting; stopping")
            self.exit_code = BOOT_FAILED
            self.stop("crash loop")
            return
        self._fill()


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _report(fd: int, what: bytes) -> None:
    os.write(fd, what)


def _wait_code(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError as exc:
        if exc.errno == errno.ECHILD:
            return 0
        raise
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells say
