"""A real lighttpd running CGI scripts (``mod_cgi``), for the CGI-mode tests.

:class:`Lighttpd` writes a ``lighttpd.conf`` into a private directory (document root,
error log and upload dir live there too), runs ``lighttpd -D`` as a child process,
waits until it accepts connections, and stops it by its PID.
"""

from __future__ import annotations

import http.client
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from support import free_port, wait_for_port


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
