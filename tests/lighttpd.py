"""A real lighttpd, for the CGI-mode tests (``mod_cgi``) and the FastCGI ones (``mod_fastcgi``).

:class:`Lighttpd` writes a ``lighttpd.conf`` into a private directory (document root,
error log and upload dir live there too), runs ``lighttpd -D`` as a child process,
waits until it accepts connections, and stops it by its PID.

:func:`lighttpd_fastcgi` builds a :class:`webserver.WebServer` running ``lighttpd -D -f
CONF``, CONF being a test-only wrapper (:func:`fastcgi_wrapper`: its files under a private
directory, 127.0.0.1 and a free port) followed by a configuration from the docs;
:func:`log_problems` reads its error log, whose lines carry no level.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import programs
from support import free_port, wait_for_port
from webserver import WebServer


@dataclass
class Lighttpd:
    """lighttpd on 127.0.0.1 with ``mod_cgi`` running every ``*.cgi`` file in ``docroot``."""

    prefix: Path
    binary: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.docroot.mkdir(parents=True, exist_ok=True)
        (self.prefix / "upload").mkdir(exist_ok=True)

    @property
    def docroot(self) -> Path:
        return self.prefix / "docroot"

    @property
    def error_log_path(self) -> Path:
        return self.prefix / "error.log"

    def add_cgi(self, name: str, text: str) -> Path:
        path = self.docroot / name
        path.write_text(text)
        path.chmod(0o755)
        return path

    def config_text(self) -> str:
        return "\n".join([
            'server.modules = ("mod_cgi")',
            f'server.document-root = "{self.docroot}"',
            'server.bind = "127.0.0.1"',
            f"server.port = {self.port}",
            f'server.errorlog = "{self.error_log_path}"',
            f'server.upload-dirs = ("{self.prefix / "upload"}")',
            'cgi.assign = (".cgi" => "")',
            'mimetype.assign = (".txt" => "text/plain")',
            "",
        ])

    def start(self, timeout: float = 15.0) -> Lighttpd:
        conf = self.prefix / "lighttpd.conf"
        conf.write_text(self.config_text())
        check = subprocess.run([self.binary, "-tt", "-f", str(conf)], capture_output=True, text=True, timeout=10)
        if check.returncode != 0:
            raise RuntimeError(f"lighttpd rejects its config: {check.stdout}{check.stderr}")
        self.proc = subprocess.Popen([self.binary, "-D", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            wait_for_port(f"127.0.0.1:{self.port}", timeout, proc=self.proc)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def error_log(self) -> str:
        return self.error_log_path.read_text(errors="replace") if self.error_log_path.exists() else ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()


# --------------------------------------------------------------------------- mod_fastcgi

#: lighttpd's own error-log lines that are expected in every run (start, stop).
EXPECTED_LOG_LINES = (
    "server started (lighttpd/",
    "server stopped by UID",
)


def fastcgi_wrapper(prefix: Path, port: int) -> str:
    """The test-only part of a mod_fastcgi config: where lighttpd keeps its files, and its port."""
    return "\n".join([
        "# Written by tests/lighttpd.py: the test's wrapper, then the snippet from the docs.",
        f'server.document-root = "{prefix / "docroot"}"',
        'server.bind = "127.0.0.1"',
        f"server.port = {port}",
        f'server.errorlog = "{prefix / "error.log"}"',
        f'server.pid-file = "{prefix / "lighttpd.pid"}"',
        f'server.upload-dirs = ("{prefix / "upload"}")',
        'mimetype.assign = (".txt" => "text/plain", ".html" => "text/html")',
        "",
    ])


def lighttpd_fastcgi(prefix: Path, body: str, *, binary: str | None = None, port: int = 0,
                     env: dict[str, str] | None = None) -> WebServer:
    """A lighttpd (not started yet) running ``lighttpd -D -f CONF``, CONF being the test's
    :func:`fastcgi_wrapper` and then ``body`` (a snippet from docs/servers/lighttpd.md).

    Its document root is ``prefix/docroot``; the config is checked with ``lighttpd -tt``
    first (which also reports a bad snippet). WebServer.stop() kills the process group, so
    backends lighttpd spawned (``bin-path``) cannot outlive it.
    """
    binary = binary or programs.find("lighttpd")
    port = port or free_port()
    for directory in ("docroot", "upload"):
        (prefix / directory).mkdir(parents=True, exist_ok=True)
    conf = prefix / "lighttpd.conf"
    conf.write_text(fastcgi_wrapper(prefix, port) + body.rstrip("\n") + "\n")
    # -tt loads the modules too, but starts no bin-path backend.
    check = subprocess.run([binary, "-tt", "-f", str(conf)], capture_output=True, text=True, timeout=10,
                           env={**os.environ, **(env or {})})
    if check.returncode != 0:
        raise RuntimeError(f"lighttpd rejects {conf}: {check.stdout}{check.stderr}\n{conf.read_text()}")
    return WebServer("lighttpd", prefix, [binary, "-D", "-f", str(conf)], port=port,
                     error_log_path=prefix / "error.log", env=env)


def log_size(server: WebServer) -> int:
    """The error log's size now: pass it to :func:`log_problems` to look only at what came after."""
    path = server.error_log_path
    return path.stat().st_size if path is not None and path.exists() else 0


def log_problems(server: WebServer, since: int = 0, expected: tuple[str, ...] = ()) -> list[str]:
    """Error-log lines written after ``since`` that are neither lighttpd's usual start and
    stop lines nor contain one of ``expected``. lighttpd's lines carry no level: any other
    line is a problem."""
    path = server.error_log_path
    if path is None or not path.exists():
        return []
    with path.open("rb") as file:
        file.seek(since)
        text = file.read().decode("utf-8", "replace")
    allowed = EXPECTED_LOG_LINES + expected
    return [line for line in text.splitlines() if line.strip() and not any(a in line for a in allowed)]
