"""Helpers shared by the tests that run the server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Serving in a thread, waiting for a port and stopping a process are the pytest plugin's.
from fcgibridge.pytest_plugin import FcgibridgeProcess
from fcgibridge.pytest_plugin import ServerThread as ServerThread
from fcgibridge.pytest_plugin import fcgibridge_command as fcgibridge_command
from fcgibridge.pytest_plugin import listening_socket as listening_socket
from fcgibridge.pytest_plugin import serve as plugin_serve
from fcgibridge.pytest_plugin import stop_process as stop_process
from fcgibridge.pytest_plugin import wait_for_port as wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: Any, interface: str = "wsgi", **options: Any) -> contextlib.AbstractContextManager[ServerThread]:
    """The plugin's :func:`~fcgibridge.pytest_plugin.serve`, for a WSGI app unless ``interface``
    says otherwise (the tests name it rather than have it guessed)."""
    return plugin_serve(app, interface, **options)


@contextlib.contextmanager
def run_fcgibridge(*args: str, address: str, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run the real CLI as a subprocess until the block ends; stopped by its PID.

    Its stdout and stderr go to a temporary file (a pipe nobody reads could fill up and
    stall the server); :func:`process_log` reads it.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with tempfile.NamedTemporaryFile(prefix="fcgibridge-log-", suffix=".txt") as log:
        server = FcgibridgeProcess(args, address=address, output=Path(log.name), cwd=cwd or ROOT, env=full_env)
        try:
            proc = server.start().proc
            assert proc is not None
            _LOGS[proc.pid] = Path(log.name)
            yield proc
        finally:
            server.stop()
            if server.proc is not None:
                _LOGS.pop(server.proc.pid, None)


_LOGS: dict[int, Path] = {}


def process_log(proc: subprocess.Popen[Any]) -> str:
    """What a process started by :func:`run_fcgibridge` has printed so far."""
    path = _LOGS.get(proc.pid)
    return path.read_text(errors="replace") if path else ""


def ipv6_loopback() -> bool:
    """Whether this machine can bind ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def machine_has(ok: bool, what: str) -> None:
    """For a test that needs a property of the machine, not a program (root, IPv6, an
    account): skipped where it is missing on a developer's machine, failed under
    ``.ci/run`` (which sets ``EXPECT_EVERY_TEST``), where nothing may be skipped."""
    if ok:
        return
    import pytest

    if os.environ.get("EXPECT_EVERY_TEST"):
        pytest.fail(f"CI runs every test, and this one needs {what}")
    pytest.skip(f"needs {what}")


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "the condition") -> None:
    """Poll ``condition`` (every 50 ms) until it is true; AssertionError naming ``what``
    when it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            if condition():
                return
            raise AssertionError(f"{what}: not met within {timeout:g} s")
        time.sleep(0.05)


def children_of(pid: int) -> set[int]:
    """The direct children of process ``pid`` (Linux ``/proc``)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """The process exists and is no zombie (one nobody may ever reap counts as gone)."""
    found = _stat(pid)
    return found is not None and found[0] != "Z"


def parent_of(pid: int) -> int | None:
    found = _stat(pid)
    return found[1] if found is not None else None


def descendants(pid: int, *, depth: int | None = None) -> list[int]:
    """Every living process below ``pid`` (only its children with ``depth=1``)."""
    parents = {int(entry.name): found[1] for entry in Path("/proc").iterdir()
               if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None and found[0] != "Z"}
    result: list[int] = []
    frontier, level = [pid], 0
    while frontier and (depth is None or level < depth):
        children = [child for child, parent in parents.items() if parent in frontier]
        result += children
        frontier, level = children, level + 1
    return result


class RawConnection:
    """The web server's side of one FastCGI connection, driven record by record.

    For what :class:`fcgibridge.client.FastCGIClient` cannot do: several requests on one
    connection, a body sent piece by piece, FCGI_ABORT_REQUEST, no STDIN at all. Every
    read has a timeout, so a test never hangs.
    """

    def __init__(self, address: str, *, timeout: float = 10.0, sndbuf: int | None = None) -> None:
        from fcgibridge.client import parse_address
        from fcgibridge.protocol import ClientConnection

        family, sockaddr = parse_address(address)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if sndbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        try:
            self.sock.connect(sockaddr)
        except OSError:
            self.sock.close()
            raise
        self.core = ClientConnection()
        self.stdout: dict[int, bytearray] = {}
        self.stderr: dict[int, bytearray] = {}
        self.ended: dict[int, Any] = {}  # request id -> RequestEnded
        self.closed = False  # the server closed the connection

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def begin(self, method: str = "GET", path: str = "/", *, params: dict[str, str] | None = None,
              headers: tuple[tuple[str, str], ...] = (), role: Any = None, keep_conn: bool = True,
              body: bytes | None = None) -> int:
        """BEGIN_REQUEST and PARAMS (nginx-like, see ``build_params``); with ``body``, the
        whole STDIN too. Returns the request id."""
        from fcgibridge.client import build_params
        from fcgibridge.protocol import Role

        all_params = build_params(method, path, headers=headers,
                                  content_length=len(body) if body else None, extra=params)
        request_id, data = self.core.begin_request(all_params, role=role or Role.RESPONDER, keep_conn=keep_conn)
        self.stdout[request_id] = bytearray()  # an id is reused once its request ended
        self.stderr[request_id] = bytearray()
        self.ended.pop(request_id, None)
        if body is not None:
            data += self.core.end_stdin(request_id, body)
        self.sock.sendall(data)
        return request_id

    def send_stdin(self, request_id: int, data: bytes) -> None:
        self.sock.sendall(self.core.send_stdin(request_id, data))

    def end_stdin(self, request_id: int, data: bytes = b"") -> None:
        self.sock.sendall(self.core.end_stdin(request_id, data))

    def abort(self, request_id: int) -> None:
        self.sock.sendall(self.core.abort_request(request_id))

    def receive(self, data: bytes) -> list[Any]:
        """Bytes from the server into the client core (a subclass may look at them first)."""
        return self.core.receive_data(data)

    def read_some(self, timeout: float | None = None) -> list[Any]:
        """One recv (waiting at most ``timeout``); returns the events it completed."""
        from fcgibridge.protocol import RequestEnded, Stderr, Stdout

        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(256 * 1024)
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.closed = True
            return []
        events = self.receive(data)
        for event in events:
            if isinstance(event, Stdout):
                self.stdout.setdefault(event.request_id, bytearray()).extend(event.data)
            elif isinstance(event, Stderr):
                self.stderr.setdefault(event.request_id, bytearray()).extend(event.data)
            elif isinstance(event, RequestEnded):
                self.ended[event.request_id] = event
        return events

    def wait_for(self, condition: Any, timeout: float | None = None) -> None:
        """Read until ``condition()`` is true; TimeoutError if it is not within ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise TimeoutError("condition not met" + (" (connection closed)" if self.closed else ""))
            with contextlib.suppress(TimeoutError):
                self.read_some(left)

    def wait_end(self, request_id: int, timeout: float | None = None) -> Any:
        """Read until END_REQUEST for ``request_id``; returns the RequestEnded event."""
        self.wait_for(lambda: request_id in self.ended, timeout)
        return self.ended[request_id]

    def response(self, request_id: int) -> Any:
        """The parsed CGI head and body of a request's STDOUT: ``(CGIHead, bytes)``."""
        from fcgibridge.cgi import split_response

        return split_response(bytes(self.stdout[request_id]))

    def wait_closed(self, timeout: float | None = None) -> None:
        """Read (and keep) whatever comes until the server closes the connection."""
        self.wait_for(lambda: self.closed, timeout)


class RecordingConnection(RawConnection):
    """A :class:`RawConnection` that also keeps every byte the server sent (``raw``),
    sends exact PARAMS (``begin_exact``, no nginx-like defaults) and raw bytes
    (``send_raw``), and notes a reset instead of raising it (``reset``).

    For checks below the event level: nothing after END_REQUEST, how a connection ends.
    """

    def __init__(self, address: str, *, timeout: float = 10.0, sndbuf: int | None = None,
                 rcvbuf: int | None = None) -> None:
        super().__init__(address, timeout=timeout, sndbuf=sndbuf)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.raw = bytearray()
        self.reset = False  # the server reset the connection (RST) instead of closing it

    def receive(self, data: bytes) -> list[Any]:
        self.raw += data
        return super().receive(data)

    def read_some(self, timeout: float | None = None) -> list[Any]:
        try:
            return super().read_some(timeout)
        except ConnectionResetError:
            self.reset = self.closed = True
            return []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def begin_exact(self, params: dict[str, str], *, role: Any = None, keep_conn: bool = True,
                    body: bytes | None = None) -> int:
        """BEGIN_REQUEST and exactly ``params``; with ``body``, the whole STDIN too."""
        from fcgibridge.protocol import Role

        request_id, data = self.core.begin_request(params, role=role or Role.RESPONDER, keep_conn=keep_conn)
        self.stdout[request_id] = bytearray()
        self.stderr[request_id] = bytearray()
        self.ended.pop(request_id, None)
        if body is not None:
            data += self.core.end_stdin(request_id, body)
        self.sock.sendall(data)
        return request_id

    def late_stdin(self, request_id: int, data: bytes = b"", *, end: bool = False) -> None:
        """STDIN for a request the server already ended while its body was still coming
        (the server drains it; the client core no longer tracks the id)."""
        from fcgibridge.protocol import RecordType, pack_record, pack_stream

        out = pack_stream(RecordType.STDIN, request_id, data) if data else b""
        if end:
            out += pack_record(RecordType.STDIN, request_id)
        self.sock.sendall(out)

    def records(self, *, whole: bool = True) -> list[Any]:
        """Every whole record in ``raw``; with ``whole``, AssertionError if a part of a
        record is left over."""
        from fcgibridge.protocol import RecordReader

        reader = RecordReader()
        found = reader.feed(bytes(self.raw))
        assert not whole or reader.pending == 0, f"{reader.pending} bytes after the last whole record"
        return found


def request_in_thread(address: str, path: str) -> tuple[threading.Thread, list[Any]]:
    """GET ``path`` with the package's client in a thread; the list gets the response or the error."""
    from fcgibridge.client import FastCGIClient

    result: list[Any] = []

    def go() -> None:
        try:
            result.append(FastCGIClient(address, timeout=20).request("GET", path))
        except BaseException as exc:  # reported by the test
            result.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    return thread, result


def lib_for_another_user(directory: Path, *files: Path) -> Path:
    """``directory/lib`` holding copies of fcgibridge (compiled too, if it is), its
    dependencies and ``files``, for a backend that a web server runs as its own user
    (root's venv is not readable to it); put it on that backend's PYTHONPATH and run it
    with the system Python."""
    import asgiref
    import mypy_extensions

    lib = directory / "lib"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "fcgibridge", lib / "fcgibridge", ignore=ignore)
    shutil.copytree(Path(asgiref.__file__).parent, lib / "asgiref", ignore=ignore)
    for file in [Path(mypy_extensions.__file__), *files]:
        shutil.copy(file, lib)
    return lib
