"""End to end: the h2o configurations of docs/servers/h2o.md, run as the page shows them.

Each snippet is taken from the page (tests/snippets.py), its example socket, address, port
and command swapped for the test's, its ``listen`` narrowed to 127.0.0.1, and put behind
the test-only settings of tests/caddy_h2o.py; behind h2o the real ``python -m fcgibridge`` (run
by the test, or by h2o itself with ``fastcgi.spawn``) serves tests/apps/frontend_app.py
(WSGI and ASGI) or the Flask example, and every check of tests/frontend_checks.py runs
through it. The TCP and unix-socket configurations run with ``fastcgi.timeout.keepalive``
as shown and without it. One h2o and one fcgibridge per configuration; after each, h2o's
error log must hold nothing unexpected.

The other tests pin down what the page says h2o sends: the CGI variables at the root and
under the prefix, CONTENT_LENGTH of a chunked upload, the body read whole before the
request goes out, and connection reuse with and without ``fastcgi.timeout.keepalive``.
With ``fastcgi.spawn``, the command must end with h2o and its socket directory be gone.
"""

from __future__ import annotations

import contextlib
import json
import random
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from caddy_h2o import (
    h2o,
    h2o_listen,
    h2o_log_problems,
    sent_params,
    spawn_socket_dirs,
    stop_with_children,
    upload_in_two_parts,
    write_params_app,
)
from frontend_checks import CHECKS, Check, Site, check_flask_urls, check_id, flask_env
from nginx import unix_socket_path
from snippets import doc_snippet
from support import ROOT, free_port, process_log, run_fcgibridge
from webserver import WebServer

pytestmark = pytest.mark.e2e

PAGE = "servers/h2o.md"
INTERFACES = ["wsgi", "asgi"]
KEEPALIVE = "        fastcgi.timeout.keepalive: 10000\n"

#: (snippet, with fastcgi.timeout.keepalive) of each configuration the checks run on.
CONFIGS = [
    ("h2o-tcp", True), ("h2o-tcp", False), ("h2o-unix", True), ("h2o-unix", False),
    ("h2o-prefix", True), ("h2o-spawn", False),
]
MOUNTS = {"h2o-prefix": "/app"}


def config_id(config: tuple[str, bool]) -> str:
    name, keepalive = config
    return name + ("-keepalive" if keepalive and name != "h2o-prefix" else "")


def render(name: str, port: int, keepalive: bool, values: dict[str, str]) -> str:
    edits = {} if keepalive or name == "h2o-spawn" else {KEEPALIVE: ""}
    return doc_snippet(PAGE, name, {"listen: 80": h2o_listen(port), '"example.com"': f'"127.0.0.1:{port}"',
                                    **values, **edits})


@contextlib.contextmanager
def behind_h2o(directory: Path, name: str, app: str, *, keepalive: bool = True,
               env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> Iterator[WebServer]:
    """fcgibridge serving ``app`` where snippet ``name`` expects it, and that h2o in front.

    ``extra``: more fcgibridge options (not for ``h2o-spawn``).
    """
    port = free_port()
    if name == "h2o-spawn":
        # The command imports the app as a module from the directory it changes to.
        path, _, attribute = app.partition(":")
        values = {"/srv/app": shlex.quote(str((ROOT / path).parent)),
                  "/srv/venv/bin/fcgibridge": f"{shlex.quote(sys.executable)} -m fcgibridge",
                  "myapp:app": f"{Path(path).stem}:{attribute}"}
        server = h2o(directory / "h2o", render(name, port, keepalive, values), port).start()
        try:
            yield server
            check_logs(server)
        finally:
            socket_dirs = spawn_socket_dirs(server)
            ended = stop_with_children(server)
        assert ended, "the command h2o spawned did not end after h2o"
        assert len(socket_dirs) == 1 and not socket_dirs[0].exists(), socket_dirs
        return
    if name == "h2o-tcp":
        backend_port = free_port()
        backend = f"127.0.0.1:{backend_port}"
        values = {"port: 9000": f"port: {backend_port}"}
    else:
        socket = unix_socket_path(directory)
        backend = f"unix:{socket}"
        values = {"/run/app/fcgi.sock": str(socket)}
    args = ["-b", backend]
    if name == "h2o-prefix":
        line = doc_snippet(PAGE, "h2o-prefix-backend", {"myapp:app": app, "unix:/run/app/fcgi.sock": backend})
        args = shlex.split(line)[2:]  # the program and the app are run_fcgibridge's
    with run_fcgibridge(app, *args, *extra, address=backend, env=env) as proc:
        with h2o(directory / "h2o", render(name, port, keepalive, values), port) as server:
            yield server
            check_logs(server)
        assert proc.poll() is None, f"fcgibridge exited:\n{process_log(proc)}"


def check_logs(server: WebServer) -> None:
    # The exception of /boom is raised on purpose; with fastcgi.spawn its traceback is in h2o's output.
    problems = h2o_log_problems(server, allowed=("app serving /boom",))
    assert not problems, "h2o logged problems:\n" + "\n".join(problems)


@pytest.fixture(scope="module", params=[(config, interface) for config in CONFIGS for interface in INTERFACES],
                ids=lambda param: f"{config_id(param[0])}-{param[1]}")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    (name, keepalive), interface = request.param
    directory = tmp_path_factory.mktemp(name)
    with behind_h2o(directory, name, f"tests/apps/frontend_app.py:{interface}", keepalive=keepalive) as server:
        yield Site(server, interface, mount=MOUNTS.get(name, ""), scratch=directory)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_checks(site: Site, check: Check) -> None:
    check(site)


def test_flask_example_under_the_prefix(tmp_path: Path) -> None:
    env = flask_env(tmp_path)
    with behind_h2o(tmp_path, "h2o-prefix", "examples.flask_app.app:app", env=env) as server:
        check_flask_urls(server, "/app")
        redirect = server.get("/app")  # PATH_INFO "": Flask redirects to the mount point's /
        assert redirect.status == 308 and (redirect.header("Location") or "").endswith("/app/"), redirect


@pytest.fixture(scope="module")
def params_app(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_params_app(tmp_path_factory.mktemp("params-app"))


@pytest.mark.parametrize(("name", "path"), [("h2o-tcp", "/users/1"), ("h2o-prefix", "/app/users/1")])
def test_what_h2o_sends(tmp_path: Path, params_app: str, name: str, path: str) -> None:
    data = random.Random(3).randbytes(200_000)
    with behind_h2o(tmp_path, name, params_app) as server:
        params = sent_params(server, "GET", f"{path}?q=1")
        assert (params["SCRIPT_NAME"], params.get("PATH_INFO")) == ("", path), params
        assert params["REQUEST_URI"] == f"{path}?q=1"
        pieces = (data[start : start + 65536] for start in range(0, len(data), 65536))
        chunked = sent_params(server, "POST", path, pieces, encode_chunked=True)
        assert (chunked["CONTENT_LENGTH"], chunked["BODY_LENGTH"]) == (str(len(data)), str(len(data)))


def test_the_body_is_read_whole_before_the_request_is_sent(tmp_path: Path, params_app: str) -> None:
    """The app starts only once the client has sent the whole body."""
    with behind_h2o(tmp_path, "h2o-tcp", params_app) as server:
        params, rest_sent = upload_in_two_parts(server, "/upload", random.Random(4).randbytes(200_000))
    assert params["CONTENT_LENGTH"] == params["BODY_LENGTH"] == "200000"
    assert float(params["STARTED"]) >= rest_sent


@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "no_keepalive"])
def test_connection_reuse(tmp_path: Path, keepalive: bool) -> None:
    """With fastcgi.timeout.keepalive, h2o sends request after request on one connection."""
    with behind_h2o(tmp_path, "h2o-tcp", "tests/apps/frontend_app.py:wsgi", keepalive=keepalive,
                    extra=("--status-path", "/fcgi-status")) as server:
        conn = server.connection()
        try:
            before = json.loads(server.get("/fcgi-status?json", conn=conn).body)["accepted_conn"]
            for _ in range(10):
                assert server.get("/hello", conn=conn).status == 200
            after = json.loads(server.get("/fcgi-status?json", conn=conn).body)["accepted_conn"]
        finally:
            conn.close()
    # With keep-alive, the ten requests and the last status page came on the connection of the first.
    assert after - before == (0 if keepalive else 11), (before, after)
