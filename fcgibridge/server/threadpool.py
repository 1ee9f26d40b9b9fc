"""A lean thread pool for WSGI calls.

``concurrent.futures.ThreadPoolExecutor`` builds a Future and a work item per call and
wakes threads through a semaphore; a WSGI request needs none of that (its result goes
back to the event loop by its own path). Here a call is one ``SimpleQueue.put``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import SimpleQueue

log = logging.getLogger("fcgibridge.server")


class Condition:
    """``threading.Condition`` over a plain lock, with only what the WSGI side uses:
    ``with``, :meth:`wait` and :meth:`notify_all`.

    ``threading.Condition`` is Python code, and every request of a WSGI app takes two of
    them several times (its body and its output); this one compiles with the serving
    path, and a notify with nobody waiting is one list check.
    """

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[threading.Lock] = []  # one held lock per waiting thread

    def __enter__(self) -> Condition:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self) -> None:
        """Release the lock until :meth:`notify_all`, then take it again (call with it held)."""
        waiter = threading.Lock()
        waiter.acquire()
        self._waiters.append(waiter)
        self._lock.release()
        try:
            waiter.acquire()
        finally:
            self._lock.acquire()

    def notify_all(self) -> None:
        """Wake every waiting thread (call with the lock held)."""
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.release()


class ThreadPool:
    """``size`` threads taking callables from one queue, all started on first use
    (never before a fork)."""

    def __init__(self, size: int, name: str = "fcgibridge-wsgi") -> None:
        self.size = max(1, size)
        self.name = name
        self._queue: SimpleQueue[Callable[[], None] | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, call: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError("the thread pool is shut down")
        if not self._threads:
            self._start()
        self._queue.put(call)

    def _start(self) -> None:
        for number in range(self.size):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            call = get()
            if call is None:
                return
            try:
                call()
            except BaseException:  # the call handles its own errors; this is the last net
                log.exception("uncaught error in a WSGI thread")

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Stop taking calls; wait up to ``timeout`` for the running ones to finish."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
