"""Worker memory under big transfers and many idle connections, and upload speed.

    python bench/memory.py                 # the fcgibridge on the PATH beside this Python

For each interface it starts ``fcgibridge memory:wsgi_app`` (or ``asgi_app``) with one
worker on a unix socket and reads the worker's resident memory (VmRSS) from /proc:

- after a 1 GiB upload, read by the app in 64 KiB pieces;
- after a 1 GiB download (64 KiB pieces) read by a client about 20 times slower than the
  server writes (a short sleep every 1 MiB);
- with 10,000 keep-alive connections open and idle, each having sent one request.

It prints the growth over the RSS after one small request, and how fast the upload
went (MiB/s, through the project's own client), for WSGI (the default mode and
``--sync``) and ASGI. The targets (the project's performance issue): each transfer
< 64 MiB, the 10,000 connections < 100 MiB, uploads >= 500 MiB/s in every mode.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from fcgibridge.client import FastCGIClient
from fcgibridge.protocol import ClientConnection, RequestEnded

GIB = 1024 * 1024 * 1024
PIECE = 64 * 1024
IDLE_CONNECTIONS = 10_000
BENCH_DIR = Path(__file__).resolve().parent


# ------------------------------------------------------------------ the apps it serves


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """/upload counts the body; /download streams ?n= bytes; anything else says ok."""
    path = environ.get("PATH_INFO", "")
    if path == "/upload":
        stream, total = environ["wsgi.input"], 0
        while piece := stream.read(PIECE):
            total += len(piece)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]
    if path == "/download":
        size = int(environ.get("QUERY_STRING", "n=0").partition("=")[2])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return _pieces(size)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _pieces(size: int) -> Iterator[bytes]:
    piece = bytes(PIECE)
    for start in range(0, size, PIECE):
        yield piece[: min(PIECE, size - start)]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same three answers as :func:`wsgi_app`."""
    if scope["type"] != "http":
        return
    path, body = scope["path"], b"ok"
    headers = [(b"content-type", b"text/plain")]
    if path == "/upload":
        total, more = 0, True
        while more:
            message = await receive()
            total += len(message.get("body", b""))
            more = message.get("more_body", False) and message["type"] == "http.request"
        body = str(total).encode()
    if path == "/download":
        size = int(scope["query_string"].decode().partition("=")[2])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode())]})
        for piece in _pieces(size):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- the measuring


class Zeros(IO[bytes]):
    """A readable file of ``size`` zero bytes that takes no memory or disk."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.piece = bytes(PIECE)

    def read(self, n: int = -1) -> bytes:
        n = min(self.left, PIECE if n < 0 else n, PIECE)
        self.left -= n
        return self.piece[:n]

    def readable(self) -> bool:
        return True


def rss_of_worker(server: subprocess.Popen[bytes]) -> int:
    """VmRSS in bytes of the process that serves (the worker, or the server itself with one worker)."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    pid = int(children[0]) if children else server.pid
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def serving(app: str, sock: str, extra: tuple[str, ...]) -> Iterator[subprocess.Popen[bytes]]:
    command = [str(Path(sys.executable).with_name("fcgibridge")), app, "-b", f"unix:{sock}",
               "--max-connections", str(IDLE_CONNECTIONS + 100), "--log-level", "warning", *extra]
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR))
    server = subprocess.Popen(command, cwd=BENCH_DIR, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{app} did not start")
            time.sleep(0.05)
        time.sleep(0.5)  # the worker is up
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


def upload(address: str) -> float:
    """Seconds a 1 GiB upload took."""
    started = time.monotonic()
    response = FastCGIClient(address, timeout=120).request("POST", "/upload", body=Zeros(GIB),
                                                          headers=[("Content-Length", str(GIB))])
    took = time.monotonic() - started
    assert response.body == str(GIB).encode(), response.body[:100]
    return took


def slow_download(address: str) -> None:
    got = 0
    with FastCGIClient(address, timeout=120).stream("GET", f"/download?n={GIB}") as response:
        for chunk in response.iter_bytes():
            got += len(chunk)
            if got % (1024 * 1024) < len(chunk):
                time.sleep(0.002)
    assert got == GIB, got


def idle_connections(path: str) -> list[socket.socket]:
    """IDLE_CONNECTIONS connections that each had one keep-alive request answered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, IDLE_CONNECTIONS + 1000)), hard))
    core = ClientConnection()
    _, request = core.begin_request({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/", "REQUEST_URI": "/"})
    request += core.end_stdin(1)
    opened = []
    for _ in range(IDLE_CONNECTIONS):
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(path)
        conn.sendall(request)
        reader, answered = ClientConnection(), False
        reader.begin_request({})
        while not answered:
            answered = any(isinstance(e, RequestEnded) for e in reader.receive_data(conn.recv(65536)))
        opened.append(conn)
    return opened


def measure(app: str, extra: tuple[str, ...]) -> tuple[dict[str, int], float]:
    """RSS growth by what caused it, and the upload's MiB/s."""
    with tempfile.TemporaryDirectory() as directory:
        sock = os.path.join(directory, "s.sock")
        address = f"unix:{sock}"
        grew: dict[str, int] = {}
        with serving(app, sock, extra) as server:
            FastCGIClient(address).request("GET", "/")
            base = rss_of_worker(server)
            speed = GIB / 1024 / 1024 / upload(address)
            grew["1 GiB upload"] = rss_of_worker(server) - base
            slow_download(address)
            grew["1 GiB download, slow reader"] = rss_of_worker(server) - base
        with serving(app, sock, extra) as server:
            FastCGIClient(address).request("GET", "/")
            base = rss_of_worker(server)
            opened = idle_connections(sock)
            time.sleep(0.5)
            grew[f"{IDLE_CONNECTIONS:,} idle keep-alive connections"] = rss_of_worker(server) - base
            for conn in opened:
                conn.close()
    return grew, speed


def main() -> int:
    import fcgibridge

    print(f"fcgibridge {fcgibridge.__version__} ({fcgibridge.build()}), worker RSS growth (VmRSS):")
    modes = (("WSGI", "memory:wsgi_app", ()), ("WSGI --sync", "memory:wsgi_app", ("--sync",)),
             ("WSGI --no-request-buffering", "memory:wsgi_app", ("--no-request-buffering",)),
             ("ASGI", "memory:asgi_app", ()))
    for name, app, extra in modes:
        grew, speed = measure(app, extra)
        for what, grown in grew.items():
            print(f"  {name}: {what}: {grown / 1024 / 1024:.1f} MiB")
        print(f"  {name}: the 1 GiB upload at {speed:.0f} MiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
