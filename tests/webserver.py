"""A real web server process for the end-to-end tests, and plain HTTP requests to it.

:class:`WebServer` runs one command (Apache, Caddy, h2o, lighttpd, ...) in its own session
under a private directory, waits until it accepts connections on 127.0.0.1, and stops it
by its PID (SIGKILL to its process group when it does not stop in time). While it runs,
its error log is attached to the report of a failing test. The per-server modules
(``tests/apache.py``, ...) write the configuration and build the command.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import free_port, wait_for_port

#: Default timeout (seconds) for the HTTP requests the tests send through a web server.
HTTP_TIMEOUT = 30.0

#: Logs for the report of a failing test, by title; ``conftest.py`` reads it.
LOG_SOURCES: dict[str, Any] = {}


@dataclass
class Reply:
    """A whole HTTP response, read to its end."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    conn: http.client.HTTPConnection | None = None,
    encode_chunked: bool = False,
    timeout: float = HTTP_TIMEOUT,
) -> Reply:
    """One request to 127.0.0.1:``port``; on a new connection (closed after it) unless ``conn`` is given."""
    own = conn is None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout) if conn is None else conn
    all_headers = dict(headers or {})
    if own:
        all_headers.setdefault("Connection", "close")
    try:
        connection.request(method, path, body=body, headers=all_headers, encode_chunked=encode_chunked)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        if own:
            connection.close()


@dataclass
class WebServer:
    """A web server started as ``argv`` that listens on 127.0.0.1:``port``.

    ``error_log_path`` is attached to failing tests; ``stop_signal`` is the signal that
    stops the server gracefully.
    """

    name: str
    prefix: Path
    argv: Sequence[str]
    port: int = 0
    error_log_path: Path | None = None
    env: Mapping[str, str] | None = None
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.prefix.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def output_path(self) -> Path:
        """Where the server's own stdout and stderr go."""
        return self.prefix / f"{self.name}.out"

    def start(self, timeout: float = 20.0) -> WebServer:
        if self.proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        env = {**os.environ, **(self.env or {})}
        with self.output_path.open("wb") as output:
            # Its own session: the whole process group can be killed if the server hangs.
            self.proc = subprocess.Popen(list(self.argv), cwd=self.prefix, env=env, stdin=subprocess.DEVNULL,
                                         stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        LOG_SOURCES[self.describe()] = self.logs
        try:
            wait_for_port(self.address, timeout=timeout, proc=self.proc)
        except BaseException as exc:
            logs = self.logs()
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{logs}") from exc
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop by PID; SIGKILL to its process group if it does not end in time."""
        proc, self.proc = self.proc, None
        LOG_SOURCES.pop(self.describe(), None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        # Children it spawned (FastCGI backends) must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def error_log(self) -> str:
        if self.error_log_path is None or not self.error_log_path.exists():
            return ""
        return self.error_log_path.read_text(errors="replace")

    def logs(self) -> str:
        """The error log and what the process printed, for a failing test's report."""
        printed = self.output_path.read_text(errors="replace") if self.output_path.exists() else ""
        return f"--- {self.error_log_path}:\n{self.error_log()}\n--- {self.output_path}:\n{printed}"

    def describe(self) -> str:
        return f"{self.name} {self.address} ({self.prefix})"

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                headers: Mapping[str, str] | None = None, **kwargs: Any) -> Reply:
        return http_request(self.port, method, path, body, headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def connection(self, timeout: float = HTTP_TIMEOUT) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
