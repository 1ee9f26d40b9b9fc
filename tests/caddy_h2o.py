"""Real Caddy and h2o servers for the end-to-end tests, and an app that shows what they send.

:func:`caddy` writes a Caddyfile made of :func:`caddy_global_options` (no admin endpoint, no
automatic HTTPS, every listener on 127.0.0.1, the log to a file of the test's) and the site
block it is given (a snippet of ``docs/servers/caddy.md``), and returns a
:class:`webserver.WebServer` running ``caddy run`` on it with HOME and the XDG data and
config directories in the test's directory, so Caddy never touches the machine's.

:func:`h2o` writes an ``h2o.conf`` made of :func:`h2o_wrapper` (pid file, error and access
logs in the test's directory, ``user: root``: h2o started as root otherwise switches to
``nobody``, who can neither write the pid file there nor reach a socket in pytest's private
temporary directories) and the configuration it is given (a snippet of
``docs/servers/h2o.md``, its ``listen`` narrowed with :func:`h2o_listen`).

``caddy_log_problems`` and ``h2o_log_problems`` read each server's logs for lines that are
not expected. :data:`PARAMS_APP` is an ASGI app that answers with the FastCGI params it got.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import programs
from webserver import WebServer

# --------------------------------------------------------------------------- Caddy

#: Warnings Caddy always logs with :func:`caddy_global_options`.
CADDY_EXPECTED_WARNINGS = (
    "admin endpoint disabled",
    "automatic HTTPS is completely disabled for server",
)

CADDY_PROBLEM_LEVELS = ("warn", "error", "panic", "fatal")


def caddy_global_options(log_path: Path) -> str:
    """The test-only global options block (tab-indented: ``caddy fmt`` would not change it)."""
    return (
        "{\n"
        "\tadmin off\n"
        "\tauto_https off\n"
        "\tdefault_bind 127.0.0.1\n"
        "\tlog {\n"
        f"\t\toutput file {log_path}\n"
        "\t\tformat json\n"
        "\t}\n"
        "}\n"
    )


def caddy(prefix: Path, site: str, port: int) -> WebServer:
    """A (not yet started) Caddy serving ``site``, whose address is ``http://127.0.0.1:PORT``."""
    binary = programs.find("caddy")
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "Caddyfile"
    log_path = prefix / "caddy.log"
    config.write_text(caddy_global_options(log_path) + "\n" + site)
    env = {"HOME": str(prefix), "XDG_DATA_HOME": str(prefix / "data"), "XDG_CONFIG_HOME": str(prefix / "config")}
    return WebServer("caddy", prefix, [binary, "run", "--config", str(config), "--adapter", "caddyfile"],
                     port=port, error_log_path=log_path, env=env)


def caddy_log_entries(server: WebServer) -> list[dict[str, Any]]:
    """Caddy's JSON log lines: its log file, and what it printed before the log was set up."""
    entries: list[dict[str, Any]] = []
    for line in (_printed(server) + "\n" + server.error_log()).splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        entries.append(entry if isinstance(entry, dict) else {"level": "error", "msg": f"not a JSON log line: {line}"})
    return entries


def caddy_log_problems(server: WebServer) -> list[str]:
    """Log lines of level warn and above, but :data:`CADDY_EXPECTED_WARNINGS`."""
    return [json.dumps(entry) for entry in caddy_log_entries(server)
            if entry.get("level") in CADDY_PROBLEM_LEVELS and entry.get("msg") not in CADDY_EXPECTED_WARNINGS]


# --------------------------------------------------------------------------- h2o

#: h2o's own log lines that say nothing is wrong.
H2O_EXPECTED = (
    re.compile(r"^\[INFO\] raised RLIMIT_NOFILE to \d+$"),
    re.compile(r"^h2o server \(pid:\d+\) is ready to serve requests$"),
    re.compile(r"^received SIGTERM, gracefully shutting down$"),
)

#: A line fcgibridge prints: ``[date time] [pid] [LEVEL] message``.
FCGIBRIDGE_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[\d+\] \[(?P<level>[A-Z]+)\] ")

#: fcgibridge's line naming the socket h2o made for ``fastcgi.spawn``.
SPAWN_SOCKET = re.compile(r"listening on unix:(/tmp/h2o\.fcgisock\.[^/\s]+)/_")


def h2o_wrapper(prefix: Path) -> str:
    return (
        f"pid-file: {prefix / 'h2o.pid'}\n"
        f"error-log: {prefix / 'error.log'}\n"
        f"access-log: {prefix / 'access.log'}\n"
        "user: root\n"
    )


def h2o_listen(port: int) -> str:
    """``listen`` on 127.0.0.1:``port`` only, in place of a snippet's ``listen: 80``."""
    return f"listen:\n  host: 127.0.0.1\n  port: {port}"


def h2o(prefix: Path, config: str, port: int) -> WebServer:
    """A (not yet started) h2o running ``config``, which listens on 127.0.0.1:``port``."""
    binary = programs.find("h2o")
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "h2o.conf"
    path.write_text(h2o_wrapper(prefix) + config)
    return WebServer("h2o", prefix, [binary, "-c", str(path)], port=port, error_log_path=prefix / "error.log")


def h2o_log_problems(server: WebServer, allowed: Iterable[str] = ()) -> list[str]:
    """Lines of the error log and of h2o's output other than h2o's expected ones and
    fcgibridge's INFO lines.

    A command h2o starts with ``fastcgi.spawn`` prints to the output h2o was started with
    (not the error log). ``allowed``: substrings of fcgibridge ERROR lines that are expected
    (an exception the app raises on purpose); the traceback after such a line is skipped too.
    """
    wanted = tuple(allowed)
    problems: list[str] = []
    in_traceback = False
    for line in (_printed(server) + "\n" + server.error_log()).splitlines():
        if not line.strip() or any(pattern.match(line) for pattern in H2O_EXPECTED):
            continue
        if in_traceback and not line.startswith("["):
            continue
        match = FCGIBRIDGE_LINE.match(line)
        in_traceback = bool(match) and any(text in line for text in wanted)
        if in_traceback or (match and match["level"] == "INFO"):
            continue
        problems.append(line)
    return problems


def spawn_socket_dirs(server: WebServer) -> list[Path]:
    """The directories h2o made for the sockets of the commands it spawned (from their output)."""
    return [Path(found) for found in SPAWN_SOCKET.findall(_printed(server))]


def stop_with_children(server: WebServer, timeout: float = 15.0) -> bool:
    """Stop h2o with SIGTERM and wait until the processes it started have ended too.

    h2o's ``kill-on-close`` helper stops a spawned command once h2o is gone, then removes the
    socket's directory; :meth:`WebServer.stop` alone would SIGKILL the helper before that.
    Returns whether they all ended within ``timeout`` (the rest are then killed).
    """
    proc = server.proc
    ended = True
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                ended = False
                break
            time.sleep(0.05)
    server.stop()
    return ended


def _printed(server: WebServer) -> str:
    return server.output_path.read_text(errors="replace") if server.output_path.exists() else ""


# --------------------------------------------------------------------------- what a server sends

#: An ASGI app that answers with the FastCGI params it got, plus BODY_LENGTH (the body it
#: read) and STARTED (when it was called, ``time.time()``).
PARAMS_APP = '''
import json
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    started = time.time()
    length = 0
    while True:
        message = await receive()
        length += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    params = dict(scope["extensions"]["fastcgi"]["params"], BODY_LENGTH=str(length), STARTED=str(started))
    body = json.dumps(params).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''


def write_params_app(directory: Path) -> str:
    """:data:`PARAMS_APP` as a file in ``directory``; the APP argument that serves it."""
    path = directory / "params_app.py"
    path.write_text(PARAMS_APP)
    return f"{path}:app"


def sent_params(server: WebServer, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, str]:
    """The params the web server sent for one request (to :data:`PARAMS_APP`)."""
    reply = server.request(method, path, body, **kwargs)
    assert reply.status == 200, reply.body[:500]
    params: dict[str, str] = json.loads(reply.body)
    return params


def upload_in_two_parts(server: WebServer, path: str, data: bytes, pause: float = 1.0) -> tuple[dict[str, str], float]:
    """POST ``data`` with its Content-Length: half at once, the rest ``pause`` s later.

    Returns the params :data:`PARAMS_APP` got and when the second half was sent.
    """
    conn = server.connection()
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Length", str(len(data)))
        conn.putheader("Connection", "close")
        conn.endheaders()
        conn.send(data[: len(data) // 2])
        time.sleep(pause)
        rest_sent = time.time()
        conn.send(data[len(data) // 2 :])
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, body[:500]
    params: dict[str, str] = json.loads(body)
    return params, rest_sent

