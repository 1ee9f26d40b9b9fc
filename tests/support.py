"""Helpers shared by the tests that run the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from fcgibridge.config import Config
from fcgibridge.server.worker import Worker, new_event_loop

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_socket(address: str | tuple[str, int] = ("127.0.0.1", 0)) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ServerThread:
    """A worker serving ``app`` on its own event loop in a background thread."""

    def __init__(self, app: Any, interface: str, sock: socket.socket, config: Config) -> None:
        self.sock = sock
        name = sock.getsockname()
        self.address = f"unix:{name}" if isinstance(name, str) else f"{name[0]}:{name[1]}"
        self.loop = new_event_loop(config.loop)
        self.worker = Worker(config, [sock], app, interface, None)
        self.ready = threading.Event()
        self.result: BaseException | int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.result = self.loop.run_until_complete(self.worker.serve(self.ready.set))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.result = exc
            self.ready.set()
        finally:
            self.loop.close()

    def start(self) -> ServerThread:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("server thread did not start")
        if isinstance(self.result, BaseException):
            raise self.result
        return self

    def stop(self, timeout: float = 10) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.worker.stop)
            self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("server thread did not stop")
        if isinstance(self.result, BaseException):
            raise self.result

    @property
    def state(self) -> Any:
        return self.worker.state


@contextlib.contextmanager
def serve(app: Any, interface: str = "wsgi", *, unix: Path | None = None, **options: Any) -> Iterator[ServerThread]:
    """Serve ``app`` in a thread for the duration of the block."""
    config = replace(Config(app="test"), **options)
    sock = listening_socket(str(unix) if unix else ("127.0.0.1", 0))
    server = ServerThread(app, interface, sock, config).start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_port(address: str, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until something accepts connections at ``address`` (HOST:PORT or unix:PATH)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {address}")
        family, target = (socket.AF_UNIX, address[5:]) if address.startswith("unix:") else (
            socket.AF_INET, (address.rpartition(":")[0], int(address.rpartition(":")[2])))
        with socket.socket(family) as sock:
            try:
                sock.connect(target)
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {address} after {timeout} s")


def fcgibridge_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fcgibridge", *args]


@contextlib.contextmanager
def run_fcgibridge(*args: str, address: str, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run the real CLI as a subprocess until the block ends; stopped by its PID."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen(fcgibridge_command(*args), cwd=cwd or ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(address, proc=proc)
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
