"""The backends (the table's rows): how each is started, and how nginx reaches it.

Every Python backend serves ``bench/apps.py`` (cwd ``bench/``, which is on PYTHONPATH);
PHP-FPM runs ``bench/php/*.php``. Each binds a unix socket in the run's directory, or in
``--direct`` mode an HTTP server binds 127.0.0.1:PORT instead (wrk speaks TCP only).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.nginx import Upstream

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
PHP_DIR = BENCH_DIR / "php"


@dataclass(frozen=True)
class Launch:
    """Where one backend run binds and keeps its files."""

    work: Path
    sock: Path
    port: int | None = None  # set: an HTTP server listens on 127.0.0.1:port instead of sock
    fcgibridge: tuple[str, ...] = ()  # the command that starts fcgibridge


Argv = Callable[[Launch], list[str]]


@dataclass(frozen=True)
class Backend:
    name: str  # what --only takes
    interface: str  # WSGI, ASGI, PHP or HTTP (nginx by itself)
    summary: str  # one line for the report and the docs
    upstream: Upstream
    argv: Argv | None = None  # None: nothing to start (nginx answers by itself)
    is_fcgibridge: bool = False
    php: bool = False  # nginx sends SCRIPT_FILENAME=bench/php/<path>.php

    @property
    def speaks_http(self) -> bool:
        return self.upstream is Upstream.HTTP


def venv_program(name: str) -> str:
    """A console script of the running Python's environment (uwsgi, gunicorn), else the bare name."""
    script = Path(sys.executable).with_name(name)
    return str(script) if script.exists() else name


def fcgibridge_command(override: str = "") -> tuple[str, ...]:
    """How to start fcgibridge: --fcgibridge-cmd, the script beside this Python, else ``python -m``."""
    if override:
        return tuple(shlex.split(override))
    script = Path(sys.executable).with_name("fcgibridge")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (sys.executable, "-m", "fcgibridge")


def fcgibridge(interface: str, app: str, workers: int, *extra: str) -> Argv:
    def argv(launch: Launch) -> list[str]:
        return [*launch.fcgibridge, app, "-b", f"unix:{launch.sock}", "-w", str(workers), "--interface", interface,
                "--log-level", "warning", *extra]

    return argv


def uvicorn(workers: int) -> Argv:
    def argv(launch: Launch) -> list[str]:
        bind = ["--uds", str(launch.sock)] if launch.port is None else ["--host", "127.0.0.1", "--port",
                                                                         str(launch.port)]
        # keep-alive 75 s: past nginx's idle upstream connections, so nginx never reuses a closed one.
        return [sys.executable, "-m", "uvicorn", "apps:asgi_app", *bind, "--workers", str(workers),
                "--loop", "uvloop", "--http", "httptools", "--lifespan", "on", "--no-access-log",
                "--log-level", "warning", "--timeout-keep-alive", "75"]

    return argv


def gunicorn_gthread(workers: int, threads: int) -> Argv:
    def argv(launch: Launch) -> list[str]:
        bind = f"unix:{launch.sock}" if launch.port is None else f"127.0.0.1:{launch.port}"
        return [venv_program("gunicorn"), "apps:wsgi_app", "-b", bind, "-k", "gthread", "-w", str(workers),
                "--threads", str(threads), "--keep-alive", "75", "--log-level", "warning"]

    return argv


def uwsgi_fastcgi(processes: int) -> Argv:
    def argv(launch: Launch) -> list[str]:
        # --die-on-term: SIGTERM stops uWSGI (2.0 reloads on it otherwise).
        return [venv_program("uwsgi"), "--fastcgi-socket", str(launch.sock), "--master", "--processes",
                str(processes), "--module", "apps:wsgi_app", "--need-app", "--disable-logging", "--die-on-term",
                "--ignore-sigpipe", "--ignore-write-errors", "--disable-write-exception"]

    return argv


PHP_FPM_CONF = """\
[global]
pid = {work}/php-fpm.pid
error_log = {work}/php-fpm.log
daemonize = no

[bench]
user = root
group = root
listen = {sock}
pm = static
pm.max_children = {children}
clear_env = no
php_admin_value[output_buffering] = 0
"""


def php_fpm_binary() -> str:
    found = sorted(Path("/usr/sbin").glob("php-fpm*"), reverse=True)
    return str(found[0]) if found else "php-fpm"


def php_fpm(children: int) -> Argv:
    def argv(launch: Launch) -> list[str]:
        conf = launch.work / "php-fpm.conf"
        conf.write_text(PHP_FPM_CONF.format(work=launch.work, sock=launch.sock, children=children))
        # -n: no php.ini, so the machine's settings do not change the numbers; OPcache on, as in production.
        command = [php_fpm_binary(), "-F", "-n", "-y", str(conf), "-p", str(launch.work),
                   "-d", "zend_extension=opcache", "-d", "opcache.enable=1"]
        return [*command, "-R"] if os.geteuid() == 0 else command

    return argv


def baseline(server: str, processes: int) -> Argv:
    def argv(launch: Launch) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "baselines.py"), server, "--bind", str(launch.sock),
                "--workers", str(processes)]

    return argv


#: fcgibridge's modes: (row name, interface, what it is, --interface, app, extra options).
FCGIBRIDGE_MODES = (
    ("wsgi", "WSGI", "WSGI, default mode (thread pool)", "wsgi", "apps:wsgi_app", ()),
    ("wsgi-sync", "WSGI", "WSGI --sync", "wsgi", "apps:wsgi_app", ("--sync",)),
    ("wsgi-inline", "WSGI", "WSGI --inline auto (thread pool; quick calls on the loop)", "wsgi", "apps:wsgi_app",
     ("--inline", "auto")),
    ("asgi", "ASGI", "ASGI", "asgi3", "apps:asgi_app", ()),
)


def fcgibridge_rows() -> list[Backend]:
    return [
        Backend(f"fcgibridge-{mode}-{workers}", interface,
                f"fcgibridge {what}, {workers} worker{'s' if workers > 1 else ''}", Upstream.FASTCGI,
                fcgibridge(option, app, workers, *extra), is_fcgibridge=True)
        for mode, interface, what, option, app, extra in FCGIBRIDGE_MODES
        for workers in (1, 2)
    ]


BACKENDS: tuple[Backend, ...] = (
    Backend("nginx", "HTTP", "nginx by itself (return; a static file; /echo reads the body, sends the file)",
            Upstream.STATIC),
    Backend("uvicorn-1", "ASGI", "uvicorn, 1 worker (uvloop, httptools)", Upstream.HTTP, uvicorn(1)),
    Backend("uvicorn-2", "ASGI", "uvicorn, 2 workers (uvloop, httptools)", Upstream.HTTP, uvicorn(2)),
    Backend("gunicorn-gthread", "WSGI", "gunicorn gthread, 2 workers x 4 threads", Upstream.HTTP,
            gunicorn_gthread(2, 4)),
    Backend("uwsgi-1", "WSGI", "uWSGI FastCGI, 1 process", Upstream.FASTCGI_CLOSE, uwsgi_fastcgi(1)),
    Backend("uwsgi-2", "WSGI", "uWSGI FastCGI, 2 processes", Upstream.FASTCGI_CLOSE, uwsgi_fastcgi(2)),
    Backend("php-fpm", "PHP", "PHP-FPM, pm static, 2 children, OPcache", Upstream.FASTCGI_CLOSE, php_fpm(2),
            php=True),
    Backend("flup", "WSGI", "flup 1.0.3 threaded, 2 processes", Upstream.FASTCGI, baseline("flup", 2)),
    Backend("fcgisgi-wsgi", "WSGI", "fcgisgi WSGI, 2 processes", Upstream.FASTCGI, baseline("fcgisgi-wsgi", 2)),
    Backend("fcgisgi-asgi", "ASGI", "fcgisgi ASGI, 2 processes", Upstream.FASTCGI, baseline("fcgisgi-asgi", 2)),
    *fcgibridge_rows(),
)
BACKEND_NAMES = tuple(backend.name for backend in BACKENDS)


def select(only: list[str]) -> list[Backend]:
    """``--only`` takes a row name or the start of names up to a dash (``fcgibridge-asgi``, ``uvicorn``)."""
    if not only:
        return list(BACKENDS)
    wanted: set[str] = set()
    for item in only:
        matches = {name for name in BACKEND_NAMES if name == item or name.startswith(item + "-")}
        if not matches:
            raise SystemExit(f"--only {item!r}: no such row; choose from {', '.join(BACKEND_NAMES)}")
        wanted |= matches
    return [backend for backend in BACKENDS if backend.name in wanted]


def environment() -> dict[str, str]:
    """The backends' environment: bench/ (for ``apps``) on PYTHONPATH. fcgibridge comes from
    the venv (bench/run installs it, compiled), never from the tree, which may hold neither
    the build nor the revision the report names."""
    env = dict(os.environ)
    paths = [str(BENCH_DIR), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("WEB_CONCURRENCY", None)
    return env
