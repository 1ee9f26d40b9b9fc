"""Bounded HTTP load for the process-manager tests: threads sending requests (GETs by default) to nginx."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Outcome:
    path: str
    status: int  # 0: no response at all (the exception is in error)
    body: bytes = b""
    error: str = ""


@dataclass
class Load:
    """``threads`` clients, each cycling through ``paths`` on one keep-alive connection
    (reopened after an error), until :meth:`stop` or ``max_requests`` in all."""

    address: str
    paths: Sequence[str] = ("/pid",)
    threads: int = 6
    max_requests: int = 20000
    timeout: float = 20.0
    #: The method of every request, and the body sent with each (None: no body).
    method: str = "GET"
    body: bytes | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._workers:
            thread.join(self.timeout + 5)
        return self.outcomes

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until at least ``count`` more responses came back."""
        target = len(self.outcomes) + count
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < target and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def _run(self, index: int) -> None:
        host, port = self.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        turn = index
        while not self._stop.is_set() and len(self.outcomes) < self.max_requests:
            path = self.paths[turn % len(self.paths)]
            turn += 1
            try:
                conn.request(self.method, path, body=self.body)
                response = conn.getresponse()
                outcome = Outcome(path, response.status, response.read())
            except (OSError, http.client.HTTPException) as exc:
                outcome = Outcome(path, 0, error=repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
            with self._lock:
                self.outcomes.append(outcome)
        conn.close()
