"""The parent process of ``-w N``: binds nothing itself (the caller did), forks the
workers, and owns the signals.

Signal handlers do nothing but wake the main loop (``signal.set_wakeup_fd``); the loop
waits on that pipe and on each worker's pidfd, so it never polls. The first worker must
report ready before the others start, so a broken app fails once, with one message.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable

log = logging.getLogger("fcgibridge.supervisor")

#: Signals the parent forwards to every worker, asking for a graceful stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

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


class Supervisor:
    """Keeps ``count`` workers running until told to stop."""

    def __init__(self, count: int, work: Callable[[Callable[[], None]], int], graceful_timeout: float) -> None:
        self.count = count
        self.work = work  # runs in the child: serves, calling its argument once ready
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
                code = self.work(lambda: _write_ready(ready_w))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker %d crashed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(ready_w)
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
        previous = {signum: signal.signal(signum, lambda *_: None) for signum in STOP_SIGNALS}
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
        if self.stopping_since is not None:
            timeout = max(0.0, self.stopping_since + self.graceful_timeout + 5 - time.monotonic())
            if timeout == 0:
                self._kill_all()
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
            if signum in STOP_SIGNALS:
                self.stop(signal.Signals(signum).name)

    def stop(self, why: str) -> None:
        if self.stopping_since is None:
            log.info("%s: stopping %d workers gracefully", why, len(self.workers))
            self.stopping_since = time.monotonic()
            self._signal_all(signal.SIGTERM)
        else:
            log.info("%s again: stopping workers now", why)
            self._signal_all(signal.SIGINT)

    def _signal_all(self, signum: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _kill_all(self) -> None:
        log.warning("workers did not stop within the graceful timeout; killing them")
        self._signal_all(signal.SIGKILL)

    def _ready(self, worker: WorkerProcess) -> None:
        self.selector.unregister(worker.ready_fd)
        try:
            worker.ready = os.read(worker.ready_fd, 1) == b"1"
        finally:
            os.close(worker.ready_fd)
            worker.ready_fd = -1

    def _reap(self, worker: WorkerProcess) -> None:
        self.selector.unregister(worker.pidfd)
        os.close(worker.pidfd)
        if worker.ready_fd >= 0:
            self.selector.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
        del self.workers[worker.pid]
        code = _wait_code(worker.pid)
        if self.stopping_since is not None:
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


def _write_ready(fd: int) -> None:
    os.write(fd, b"1")
    os.close(fd)


def _wait_code(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError as exc:
        if exc.errno == errno.ECHILD:
            return 0
        raise
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells say
