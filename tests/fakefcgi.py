"""A scripted FastCGI application for the client tests: each accepted connection runs a
function of (socket, ApplicationConnection) in a thread, so a test decides exactly which
bytes the client gets (stderr, refusals, garbage, an early close)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fcgibridge.protocol import ApplicationConnection, Event, RequestBodyEnd, RequestStarted

Handler = Callable[[socket.socket, ApplicationConnection], None]


def read_request(sock: socket.socket, core: ApplicationConnection) -> tuple[RequestStarted | None, list[Event]]:
    """Events until the request's body ended (or the peer closed): (started, all events)."""
    started = None
    seen: list[Event] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return started, seen
        for event in core.receive_data(data):
            seen.append(event)
            if isinstance(event, RequestStarted):
                started = event
            if isinstance(event, RequestBodyEnd):
                return started, seen


class FakeServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(10)
            try:
                self.handler(sock, ApplicationConnection())
            except OSError:
                pass
            except BaseException as exc:
                self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for thread in self._threads:
            thread.join(5)
        self.listener.close()
        if self.errors:
            raise self.errors[0]


@contextmanager
def fake_server(handler: Handler) -> Iterator[FakeServer]:
    server = FakeServer(handler)
    server._thread.start()
    try:
        yield server
    finally:
        server.stop()
