"""A real PHP-FPM for the tests: the pytest plugin's launcher (:class:`fcgibridge.pytest_plugin.PhpFpm`)
with two pools, one on a unix socket and one on TCP, serving the scripts in ``tests/php``.

A test that needs it fails, never skips, when php-fpm is not installed (``programs.find``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import programs
from support import free_port

from fcgibridge.pytest_plugin import PhpFpm as PluginPhpFpm

PHP_DIR = Path(__file__).resolve().parent / "php"

#: What the scripts here need: unbuffered output (streaming), uploads of 10 MiB.
INI = {
    "output_buffering": "0",
    "zlib.output_compression": "off",
    "post_max_size": "64M",
    "upload_max_filesize": "64M",
    "max_execution_time": "30",
}


#: Pool directives of ``php_fpm(status=True)``: PHP-FPM's status and ping pages.
STATUS_PAGES = (("pm.status_path", "/status"), ("ping.path", "/ping"))


class PhpFpm(PluginPhpFpm):
    """The plugin's PHP-FPM with the two pools: ``unix`` and ``tcp`` (``127.0.0.1:PORT``)."""

    #: Directives added to every pool section.
    pool_directives: tuple[tuple[str, str], ...] = ()

    def config_text(self) -> str:
        lines = []
        for line in super().config_text().splitlines():
            lines.append(line)
            if line.startswith("[") and line != "[global]":
                lines += [f"{name} = {value}" for name, value in self.pool_directives]
        return "\n".join(lines) + "\n"

    @property
    def unix(self) -> str:
        return self.addresses[0]

    @property
    def tcp(self) -> str:
        return self.addresses[1]


@contextlib.contextmanager
def php_fpm(tmp: Path, *, children: int = 3, status: bool = False) -> Iterator[PhpFpm]:
    """PHP-FPM listening on a unix socket in ``tmp`` and on a free TCP port; with
    ``status``, every pool answers ``/status`` and ``/ping`` (:data:`STATUS_PAGES`)."""
    server = PhpFpm(tmp, binary=programs.find("php-fpm"), root=PHP_DIR, children=children, ini=INI,
                        listen=[f"unix:{tmp / 'php-fpm.sock'}", f"127.0.0.1:{free_port()}"], system_ini=False)
    if status:
        server.pool_directives = STATUS_PAGES
    with server:
        yield server
