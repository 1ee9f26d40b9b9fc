"""A real Apache httpd 2.4 for the end-to-end tests: a test-only wrapper around a config body.

:func:`apache` writes an ``httpd.conf`` made of :func:`wrapper_config` (its own PidFile,
ErrorLog, runtime directory and mod_fcgid paths, ``Listen 127.0.0.1:PORT``, the modules it
is told to load, User/Group www-data: no system config is read) and the body it is given
(usually snippets of ``docs/servers/apache.md``), checks it with ``apache2 -t``, and returns
a :class:`webserver.WebServer` that runs ``apache2 -D FOREGROUND -f httpd.conf``.

Apache runs its children (and what mod_fcgid spawns) as www-data, which cannot enter
pytest's temporary directories (``/tmp/pytest-of-root`` is 0700): everything Apache's
children must reach lives in a :func:`shared_directory` (0755, removed afterwards).

SIGTERM stops Apache at once (in about 0.1 s; mod_fcgid's process manager then ends the
processes it spawned); SIGWINCH, the graceful stop, waits for idle keep-alive connections.
:func:`stop` stops it with SIGTERM and reports any process of its group still there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import programs
from support import free_port
from webserver import WebServer

MODULES_DIR = Path("/usr/lib/apache2/modules")

#: Module name -> file in :data:`MODULES_DIR` (``LoadModule NAME_module FILE``).
MODULE_FILES = {
    "mpm_event": "mod_mpm_event.so",
    "mpm_prefork": "mod_mpm_prefork.so",
    "authz_core": "mod_authz_core.so",
    "proxy": "mod_proxy.so",
    "proxy_fcgi": "mod_proxy_fcgi.so",
    "fcgid": "mod_fcgid.so",
    "alias": "mod_alias.so",
    "setenvif": "mod_setenvif.so",
    "headers": "mod_headers.so",
}

#: What every test Apache loads; a test adds the modules of its snippet.
BASE_MODULES = ("mpm_event", "authz_core")

#: The user Apache's children (and mod_fcgid's backends) run as.
USER = "www-data"

#: A problem line in Apache's error log unless a test expects it: Apache's own lines at warn
#: and above (``[date] [module:warn] ...``) and those of fcgibridge under mod_fcgid, whose
#: stderr is that log (``[date] [pid] [WARNING] ...``).
_PROBLEM = re.compile(r"^\[[^\]]*\] (?:\[[\w.-]+:(?:emerg|alert|crit|error|warn)\]"
                      r"|\[\d+\] \[(?:WARNING|ERROR|CRITICAL)\])")


@contextlib.contextmanager
def shared_directory(prefix: str = "fcgibridge-apache-") -> Iterator[Path]:
    """A new directory under the system temp dir that every user may enter (0755); removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def module_path(name: str) -> Path:
    if name == "fcgid":
        return Path(programs.find("mod_fcgid"))
    return MODULES_DIR / MODULE_FILES[name]


def wrapper_config(prefix: Path, port: int, modules: Iterable[str]) -> str:
    """The test-only part of the config: paths, listener, modules, user; no system config."""
    names = list(dict.fromkeys([*BASE_MODULES, *modules]))
    lines = [
        "# Written by tests/apache.py: test plumbing, then the config under test.",
        f"ServerRoot {prefix}",
        f"DefaultRuntimeDir {prefix / 'run'}",
        f"PidFile {prefix / 'httpd.pid'}",
        f"ErrorLog {prefix / 'error.log'}",
        "LogLevel info",
        f"Listen 127.0.0.1:{port}",
        "ServerName 127.0.0.1",
        f"User {USER}",
        f"Group {USER}",
        # An empty document root: what mod_fcgid's path walk sees does not depend on /var/www.
        f"DocumentRoot {prefix / 'htdocs'}",
        "Timeout 30",
        "KeepAliveTimeout 5",
        "MaxKeepAliveRequests 1000",
        *(f"LoadModule {name}_module {module_path(name)}" for name in names),
    ]
    if "fcgid" in names:
        lines += [f"FcgidIPCDir {prefix / 'fcgid'}", f"FcgidProcessTableFile {prefix / 'run' / 'fcgid_shm'}"]
    return "\n".join(lines) + "\n"


def apache(prefix: Path, body: str, *, modules: Sequence[str] = (), port: int | None = None,
           env: dict[str, str] | None = None) -> WebServer:
    """A (not yet started) Apache with ``body`` after :func:`wrapper_config`, under ``prefix``.

    ``prefix`` must be reachable by www-data when the children need files in it (mod_fcgid's
    sockets): make it with :func:`shared_directory`.
    """
    binary = programs.find("apache2")
    port = port or free_port()
    for sub in ("run", "htdocs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    config = prefix / "httpd.conf"
    config.write_text(wrapper_config(prefix, port, modules) + "\n" + body.rstrip("\n") + "\n")
    check = subprocess.run([binary, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30,
                           env={**os.environ, **(env or {})}, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"apache2 -t rejects {config}:\n{check.stdout}{check.stderr}\n{config.read_text()}")
    return WebServer("apache2", prefix, [binary, "-D", "FOREGROUND", "-f", str(config)], port=port,
                     error_log_path=prefix / "error.log", env=env, stop_signal=signal.SIGTERM)


def group_members(pgid: int) -> list[str]:
    """``PID COMMAND`` of every live process in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
            members.append(f"{entry} {command}")
    return members


def stop(server: WebServer, linger: float = 5.0) -> list[str]:
    """Stop ``server`` with its stop signal; the processes of its group that outlived it
    by ``linger`` seconds (killed then, by :meth:`WebServer.stop`)."""
    proc = server.proc
    left: list[str] = []
    if proc is not None and proc.poll() is None:
        proc.send_signal(server.stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        deadline = time.monotonic() + linger
        while (left := group_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
    server.stop()
    return left


def log_problems(text: str, expected: Iterable[str] = ()) -> list[str]:
    """Warnings and errors of an Apache error log, except the lines matching an ``expected`` regex."""
    patterns = [re.compile(pattern) for pattern in expected]
    problems = []
    for line in text.splitlines():
        if _PROBLEM.match(line) and not any(pattern.search(line) for pattern in patterns):
            problems.append(line)
    return problems
