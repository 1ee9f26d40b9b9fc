"""A real nginx in front of a FastCGI backend, for the end-to-end tests.

:class:`Nginx` writes an ``nginx.conf`` into a private directory (pid file, logs and
every temp path live there too), starts ``nginx`` in the foreground as a child
process, waits until it accepts connections, and stops it by its PID. Each
:class:`Location` is one ``location`` block that passes requests to a backend given
as ``HOST:PORT`` or ``unix:PATH``.

The process itself is a :class:`webserver.WebServer`: while it runs, its error log is
attached to the report of a failing test.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

import programs
from support import free_port
from webserver import HTTP_TIMEOUT, LOG_SOURCES, Reply, WebServer, http_request

FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"



@cache
def _build_options(binary: str) -> str:
    """``nginx -V`` output: which modules were compiled out."""
    result = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10, check=False)
    return result.stdout + result.stderr


def _temp_path_directives(binary: str, prefix: Path) -> list[str]:
    """``*_temp_path`` for every module compiled in, so nothing touches /var/lib/nginx."""
    options = _build_options(binary)
    lines = [f"client_body_temp_path {prefix / 'client_body_temp'};"]
    for module in ("fastcgi", "proxy", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in options:
            lines.append(f"{module}_temp_path {prefix / (module + '_temp')};")
    return lines


@dataclass
class Location:
    """One ``location`` block passing requests to a FastCGI backend."""

    #: ``HOST:PORT`` or ``unix:PATH`` of the FastCGI server.
    backend: str
    #: The location prefix; with ``mount`` set it must start with the mount point.
    path: str = "/"
    #: ``fastcgi_keep_conn on`` with an ``upstream { keepalive 8; }`` block.
    keep_conn: bool = False
    #: ``fastcgi_request_buffering``: off streams the request body as it arrives.
    request_buffering: bool = True
    #: ``fastcgi_buffering``: off passes the response on as it arrives.
    buffering: bool = True
    #: A mount prefix such as ``"/app"``: split the path with ``fastcgi_split_path_info``
    #: so SCRIPT_NAME is the prefix and PATH_INFO the rest. None: plain fastcgi_params,
    #: where SCRIPT_NAME is the whole path and there is no PATH_INFO.
    mount: str | None = None
    #: More directives, written into the block as they are.
    extra: Sequence[str] = ()

    def render(self, upstream: str | None) -> str:
        target = upstream if upstream is not None else self.backend
        lines = [f"location {self.path} {{"]
        if self.mount is not None:
            mount = self.mount.rstrip("/")
            if not self.path.startswith(mount):
                raise ValueError(f"location {self.path!r} is not under the mount point {mount!r}")
            # The first group becomes $fastcgi_script_name (SCRIPT_NAME in fastcgi_params).
            lines.append(f'    fastcgi_split_path_info "^({mount})(/.*)$";')
        lines.append(f"    include {FASTCGI_PARAMS};")
        if self.mount is not None:
            lines.append("    fastcgi_param PATH_INFO $fastcgi_path_info;")
        lines.append(f"    fastcgi_keep_conn {'on' if self.keep_conn else 'off'};")
        lines.append(f"    fastcgi_request_buffering {'on' if self.request_buffering else 'off'};")
        lines.append(f"    fastcgi_buffering {'on' if self.buffering else 'off'};")
        lines.extend(f"    {directive}" for directive in self.extra)
        lines.append(f"    fastcgi_pass {target};")
        lines.append("}")
        return "\n".join(lines)


@dataclass
class Nginx:
    """An nginx process serving ``locations`` on 127.0.0.1, configured under ``prefix``."""

    prefix: Path
    locations: Sequence[Location]
    binary: str | None = None
    port: int = 0
    #: More directives for the ``server`` block.
    server_extra: Sequence[str] = ()
    #: Blocks written into the ``http`` block as they are (``upstream``s, whole ``server``s).
    #: With no ``locations``, no ``server`` block of its own is written: one of these must
    #: then ``listen`` on :attr:`address`.
    http_extra: Sequence[str] = ()
    #: ``error_log`` level; ``debug`` needs an nginx built ``--with-debug`` (Debian's is).
    log_level: str = "info"
    process: WebServer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.binary is None:
            self.binary = programs.find("nginx")
        if not self.port:
            self.port = free_port()
        self.prefix.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log_path(self) -> Path:
        return self.prefix / "error.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ---------------------------------------------------------------- config

    def config_text(self) -> str:
        assert self.binary is not None
        prefix = self.prefix
        upstreams: list[str] = []
        blocks: list[str] = []
        for index, location in enumerate(self.locations):
            name: str | None = None
            if location.keep_conn:
                name = f"backend{index}"
                upstreams.append(f"upstream {name} {{\n    server {location.backend};\n    keepalive 8;\n}}")
            blocks.append(location.render(name))
        top = [
            "# Written by tests/nginx.py; started with -p and -c pointing here.",
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",
            f"pid {prefix / 'nginx.pid'};",
            f"error_log {self.error_log_path} {self.log_level};",
        ]
        if os.geteuid() == 0:
            # Workers would otherwise switch to "nobody", who cannot enter pytest's tmp dirs.
            top.append("user root;")
        http_block = [
            "access_log off;",
            "default_type application/octet-stream;",
            *_temp_path_directives(self.binary, prefix),
            "client_max_body_size 64m;",
            "keepalive_requests 1000;",
            "keepalive_timeout 30s;",
            "fastcgi_connect_timeout 5s;",
            "fastcgi_send_timeout 30s;",
            "fastcgi_read_timeout 30s;",
            "send_timeout 30s;",
            *upstreams,
            *self.http_extra,
        ]
        if self.locations or not self.http_extra:
            http_block += [
                "server {",
                f"    listen {self.address};",
                "    server_name localhost;",
                *(f"    {directive}" for directive in self.server_extra),
                *("    " + line for block in blocks for line in block.splitlines()),
                "}",
            ]
        lines = [*top, "events {", "    worker_connections 256;", "}", "http {"]
        lines += ["    " + line for block in http_block for line in block.splitlines()]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        self.conf_path.write_text(self.config_text())
        return self.conf_path

    def command(self, *extra: str) -> list[str]:
        assert self.binary is not None
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf_path), "-e", str(self.error_log_path),
                *extra]

    # ------------------------------------------------------------- lifecycle

    def check_config(self) -> None:
        """``nginx -t``: raise with nginx's message when the config is rejected."""
        self.write_config()
        result = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"nginx rejected {self.conf_path}:\n{result.stderr}\n{self.config_text()}")

    def start(self, timeout: float = 15.0) -> Nginx:
        if self.process is not None:
            raise RuntimeError("nginx is already running")
        self.check_config()
        # SIGQUIT is nginx's graceful stop.
        self.process = WebServer("nginx", self.prefix, self.command(), port=self.port,
                                 error_log_path=self.error_log_path, stop_signal=signal.SIGQUIT)
        self.process.start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop by PID; SIGKILL to its process group if it hangs."""
        process, self.process = self.process, None
        if process is not None:
            process.stop(timeout)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ logs

    def error_log(self, since: int = 0) -> str:
        try:
            with self.error_log_path.open("rb") as file:
                file.seek(since)
                return file.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """The error log's current size; pass it to :meth:`error_log` to read only what came after."""
        try:
            return self.error_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_problems(self, since: int = 0, patterns: Iterable[str] = ("[error]", "[crit]", "[alert]", "[emerg]",
                                                                         "broken pipe", "reset by peer")) -> list[str]:
        """Error-log lines written after ``since`` that contain one of ``patterns`` (any case)."""
        wanted = [pattern.lower() for pattern in patterns]
        return [line for line in self.error_log(since).splitlines() if any(p in line.lower() for p in wanted)]

    # ------------------------------------------------------------- requests

    def connection(self, timeout: float = HTTP_TIMEOUT) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                headers: Mapping[str, str] | None = None, **kwargs: Any) -> Reply:
        """One request (see :func:`webserver.http_request`); on a new connection unless ``conn=`` is given."""
        return http_request(self.port, method, path, body, headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def describe(self) -> str:
        return f"nginx {self.address} ({self.conf_path})"





class ProcessOutput:
    """Reads a child's stdout and stderr pipes in threads until they close, then closes them.

    A pipe nobody reads fills up and blocks the child; this keeps them empty and keeps
    the text for the report of a failing test while registered in :data:`LOG_SOURCES`.
    """

    def __init__(self, proc: subprocess.Popen[bytes], title: str, limit: int = 256 * 1024) -> None:
        self.title = title
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._pipes = [pipe for pipe in (proc.stdout, proc.stderr) if pipe is not None]
        self._threads = [
            threading.Thread(target=self._pump, args=(pipe,), name=f"output of {title}", daemon=True)
            for pipe in self._pipes
        ]
        for thread in self._threads:
            thread.start()
        LOG_SOURCES[title] = self.text

    def _pump(self, pipe: IO[bytes]) -> None:
        fd = pipe.fileno()
        while chunk := os.read(fd, 65536):
            with self._lock:
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size > self.limit and len(self._chunks) > 1:
                    self._size -= len(self._chunks.pop(0))

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def close(self, timeout: float = 5.0) -> None:
        """Stop reporting; call after the process ended (the threads end with the pipes)."""
        LOG_SOURCES.pop(self.title, None)
        for thread in self._threads:
            thread.join(timeout)
        if not any(thread.is_alive() for thread in self._threads):
            for pipe in self._pipes:
                pipe.close()


def unix_socket_path(directory: Path, name: str = "fcgi.sock") -> Path:
    """A socket path under ``directory``, checked against the ~107-byte sun_path limit."""
    path = directory / name
    if len(os.fsencode(path)) >= 104:
        raise ValueError(f"unix socket path too long for sun_path: {path}")
    return path
