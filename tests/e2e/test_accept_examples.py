"""The examples: the Lua scripts through a real nginx (served by the CLI, and under
spawn-fcgi), and the accept-style script beside Flask under another WSGI server."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import programs
import pytest
from nginx import Location
from support import ROOT, fcgibridge_command, free_port, run_fcgibridge, wait_for_port

EXAMPLES = ROOT / "examples"


@pytest.mark.e2e
def test_hello_lua_through_nginx(nginx_factory: object) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("examples/lua/hello.lua", "-b", address, "-w", "2", address=address):
        nginx = nginx_factory(Location(address))  # type: ignore[operator]
        reply = nginx.get("/?name=Lua")
        assert reply.status == 200 and reply.header("Content-Type") == "text/html; charset=utf-8"
        assert reply.body == b"<h1>Hello, Lua!</h1>\n"
        assert nginx.get("/").body == b"<h1>Hello, world!</h1>\n"


@pytest.fixture
def spawned_counter(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """examples/lua/counter (a copy, so its pages can change) under spawn-fcgi."""
    binary = programs.find("spawn-fcgi")
    app = tmp_path / "counter"
    shutil.copytree(EXAMPLES / "lua" / "counter", app)
    port = free_port()
    errlog = tmp_path / "error.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERRLOG": str(errlog), "SITE_NAME": "Spawned"}
    spawned = subprocess.run([binary, "-a", "127.0.0.1", "-p", str(port), "--",
                              *fcgibridge_command(str(app / "app.lua"))],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    found = re.search(r"PID: (\d+)", spawned.stdout + spawned.stderr)
    assert spawned.returncode == 0 and found, spawned.stdout + spawned.stderr
    pid = int(found.group(1))
    try:
        wait_for_port(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", pid, app
    finally:
        with_deadline_kill(pid)
    assert "counter: stopping after" in errlog.read_text()


def with_deadline_kill(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid):
        os.kill(pid, signal.SIGKILL)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "zombie"


@pytest.mark.e2e
def test_the_counter_under_spawn_fcgi_through_nginx(spawned_counter: tuple[str, int, Path],
                                                    nginx_factory: object) -> None:
    address, pid, app = spawned_counter
    nginx = nginx_factory(Location(address))  # type: ignore[operator]
    counts = []
    for _ in range(3):
        reply = nginx.get("/")
        assert reply.status == 200 and b"<h1>Spawned</h1>" in reply.body
        counts.append(int(re.search(rb'id="count">(\d+)<', reply.body).group(1)))  # type: ignore[union-attr]
    assert counts == [1, 2, 3]
    assert b"About" in nginx.get("/about").body
    assert nginx.get("/nothing-here").status == 404

    # The page is cached: an edit shows only after SIGHUP, which calls restart().
    page = app / "pages" / "about.html"
    page.write_text(page.read_text().replace("<h1>About</h1>", "<h1>About, edited</h1>"))
    assert b"About, edited" not in nginx.get("/about").body
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while b"About, edited" not in nginx.get("/about").body:
        assert time.monotonic() < deadline, "restart() did not clear the cache"
        time.sleep(0.05)
    assert Path(f"/proc/{pid}").exists()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_accept_script_beside_flask_under_another_wsgi_server() -> None:
    from examples.accept_app.app import create_app

    server: WSGIServer = make_server("127.0.0.1", 0, create_app(), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def call(method: str, path: str, body: str | None = None) -> tuple[int, dict[str, str], str]:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            try:
                headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, dict(response.getheaders()), response.read().decode()
            finally:
                conn.close()

        assert "<h1>Flask</h1>" in call("GET", "/")[2]
        status, headers, _ = call("POST", "/legacy", "note=first+note")
        assert status == 303 and headers["Location"] == "/legacy"
        status, _, page = call("GET", "/legacy")
        assert status == 200 and "<li>first note</li>" in page
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
