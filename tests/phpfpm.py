"""A real PHP-FPM for the tests: started with its own configuration in a temporary
directory (a unix socket pool and a TCP pool), stopped by its PID.

A test that needs it fails, never skips, when php-fpm is not installed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import programs
from support import free_port, stop_process, wait_for_port

PHP_DIR = Path(__file__).resolve().parent / "php"


def php_fpm_binary() -> str:
    return programs.find("php-fpm")


@dataclass
class PhpFpm:
    proc: subprocess.Popen[bytes]
    unix: str  # unix:PATH
    tcp: str  # 127.0.0.1:PORT
    log: Path
    root: Path = PHP_DIR

    def script(self, name: str) -> str:
        return str(self.root / name)


_POOL = """
[{name}]
user = root
group = root
listen = {listen}
pm = static
pm.max_children = {children}
catch_workers_output = yes
clear_env = no
php_admin_value[output_buffering] = 0
php_admin_flag[zlib.output_compression] = off
php_admin_value[post_max_size] = 64M
php_admin_value[upload_max_filesize] = 64M
php_admin_value[max_execution_time] = 30
"""


@contextlib.contextmanager
def php_fpm(tmp: Path, *, children: int = 3) -> Iterator[PhpFpm]:
    """PHP-FPM listening on a unix socket in ``tmp`` and on a free TCP port."""
    binary = php_fpm_binary()
    sock = tmp / "php-fpm.sock"
    port = free_port()
    log = tmp / "php-fpm.log"
    conf = tmp / "php-fpm.conf"
    conf.write_text(
        f"[global]\npid = {tmp / 'php-fpm.pid'}\nerror_log = {log}\ndaemonize = no\nlog_level = notice\n"
        + _POOL.format(name="unix", listen=sock, children=children)
        + _POOL.format(name="tcp", listen=f"127.0.0.1:{port}", children=children)
    )
    command = [binary, "-F", "-y", str(conf), "-p", str(tmp), "-n"]
    if os.geteuid() == 0:
        command.append("-R")
    with open(tmp / "php-fpm.out", "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        try:
            wait_for_port(f"unix:{sock}", proc=proc)
            wait_for_port(f"127.0.0.1:{port}", proc=proc)
        except RuntimeError as exc:
            output = (tmp / "php-fpm.out").read_text(errors="replace")
            logged = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{exc}\n{output}\n{logged}") from None
        yield PhpFpm(proc, f"unix:{sock}", f"127.0.0.1:{port}", log)
    finally:
        stop_process(proc)
