"""The parent process of ``-w N``: binds nothing itself (the caller did), forks the
workers, and owns the signals.

Signal handlers do nothing but wake the main loop (``signal.set_wakeup_fd``); the loop
waits on that pipe and on each worker's pidfd, so it never polls. The first worker must
report ready before the others start, so a broken app fails once, with one message.

Each worker keeps a status pipe to the parent: ``1`` once it serves, then after a stop
signal ``S`` (stopping) or ``V`` (its app's ``stop()`` vetoed the stop). The stop
protocol:

- TERM to the parent: forwarded to every worker as TERM, which asks the app (an
  accept-style ``stop()`` hook may veto). A worker that answers ``S`` has
  ``--graceful-timeout`` (+5 s) to exit before SIGKILL; one that does not answer at all
  gets the same from the TERM on. A ``V`` cancels the stop of the server: the parent logs
  it, goes back to serving, and replaces the workers that did stop. It never kills a
  worker that vetoed.
- INT or QUIT to the parent: forwarded as INT, a graceful stop nobody can veto.
- The same signal again while stopping: INT to every worker, which stops them at once.
- HUP: forwarded to every worker (an accept-style ``restart()``; otherwise logged and
  ignored). The parent itself never dies of it.
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

#: Signals the parent forwards to every worker, asking for a graceful stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

#: Signals the parent handles (stop signals and HUP).
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)

#: Seconds past the graceful timeout before a stopping worker is killed.
KILL_GRACE = 5.0

#: Workers that die this soon after starting count towards a crash loop.
QUICK_DEATH = 2.0
MAX_QUICK_DEATHS = 5

#: Exit code of a worker that could not load or start the app.
BOOT_FAILED = 3


class WorkerProcess:
    def __init__(self, pid: int, pidfd: int, ready_fd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.ready_fd = ready_fd
        self.started = time.monotonic()
        self.ready = False
        self.stopping = False  # it said it is stopping (S)
        self.kill_at: float | None = None  # SIGKILL past this time


class Supervisor:
    """Keeps ``count`` workers running until told to stop."""

    def __init__(self, count: int, work: Callable[[Callable[[], None], Callable[[bytes], None]], int],
                 graceful_timeout: float) -> None:
        self.count = count
        self.work = work  # runs in the child: serves, calling on_ready once ready and report(b"S"/b"V")
        self.graceful_timeout = graceful_timeout
        self.workers: dict[int, WorkerProcess] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping_since: float | None = None
        self.exit_code = 0
        self.quick_deaths = 0

    # ------------------------------------------------------------------ child

    def _spawn(self) -> WorkerProcess:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_r)
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for signum in STOP_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, lambda *_: None)  # until the worker handles it
                code = self.work(lambda: _report(ready_w, b"1"), lambda what: _report(ready_w, what))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        worker = WorkerProcess(pid, os.pidfd_open(pid), ready_r)
        self.workers[pid] = worker
        self.selector.register(worker.pidfd, selectors.EVENT_READ, ("exit", worker))
        self.selector.register(worker.ready_fd, selectors.EVENT_READ, ("ready", worker))
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
                for _ in range(self.count - 1):
                    self._spawn()
            while self.workers:
                self._step()
        finally:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)
        return self.exit_code

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
            elif kind == "ready":
                self._ready(worker)
            else:
                self._reap(worker)

    def _signals(self, fd: int) -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: passing it on to %d workers", len(self.workers))
                self._signal_all(signal.SIGHUP)
            elif signum in STOP_SIGNALS:
                self.stop(signal.Signals(signum).name, ask=signum == signal.SIGTERM)

    def stop(self, why: str, *, ask: bool = False) -> None:
        """Stop every worker gracefully; with *ask*, by TERM, which the app may veto."""
        now = time.monotonic()
        if self.stopping_since is None:
            log.info("%s: stopping %d workers gracefully", why, len(self.workers))
            self.stopping_since = now
            for worker in self.workers.values():
                worker.kill_at = now + self.graceful_timeout + KILL_GRACE
            self._signal_all(signal.SIGTERM if ask else signal.SIGINT)
        else:
            log.info("%s again: stopping workers now", why)
            for worker in self.workers.values():
                worker.kill_at = min(worker.kill_at or math.inf, now + self.graceful_timeout + KILL_GRACE)
            self._signal_all(signal.SIGINT)

    def _signal_all(self, signum: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _kill_late(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.kill_at is not None and worker.kill_at <= now:
                log.warning("worker %d did not stop within the graceful timeout; killing it", worker.pid)
                worker.kill_at = None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def _ready(self, worker: WorkerProcess) -> None:
        """The worker's status pipe: 1 (ready), S (stopping), V (vetoed a stop), or EOF."""
        try:
            data = os.read(worker.ready_fd, 64)
        except BlockingIOError:
            return
        if not data:
            self._close_status(worker)
            return
        for byte in data:
            if byte == ord("1"):
                worker.ready = True
            elif byte == ord("S"):
                worker.stopping = True
                worker.kill_at = time.monotonic() + self.graceful_timeout + KILL_GRACE
            elif byte == ord("V"):
                self._vetoed(worker)

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
        if worker.ready_fd >= 0:
            self.selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = -1

    def _reap(self, worker: WorkerProcess) -> None:
        self.selector.unregister(worker.pidfd)
        os.close(worker.pidfd)
        if worker.ready_fd >= 0:
            with contextlib.suppress(BlockingIOError):  # a last word (S or V) not read yet
                tail = os.read(worker.ready_fd, 64)
                worker.ready = worker.ready or b"1" in tail
                worker.stopping = worker.stopping or b"S" in tail
        self._close_status(worker)
        del self.workers[worker.pid]
        code = _wait_code(worker.pid)
        if self.stopping_since is not None:
            return
        if worker.stopping:  # it stopped while the server was told to keep serving (a veto elsewhere)
            log.info("worker %d stopped (exit code %d); starting a new one", worker.pid, code)
            self._spawn()
            return
        if not worker.ready:
            log.error("worker %d exited with code %d before it was ready; stopping", worker.pid, code)
            self.exit_code = code or BOOT_FAILED
            self.stop("boot failure")
            return
        log.error("worker %d died (exit code %d); starting a new one", worker.pid, code)
        self.quick_deaths = self.quick_deaths + 1 if time.monotonic() - worker.started < QUICK_DEATH else 0
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            log.error("workers keep dying right after starting; stopping")
            self.exit_code = BOOT_FAILED
            self.stop("crash loop")
            return
        self._spawn()


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
