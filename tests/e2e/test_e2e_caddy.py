"""End to end: the Caddy configurations of docs/servers/caddy.md, run as the page shows them.

Each snippet is taken from the page (tests/snippets.py), its example socket, address and
site swapped for the test's, and put after the test-only global options of
tests/caddy_h2o.py; behind Caddy the real ``python -m fcgibridge`` serves
tests/apps/frontend_app.py (WSGI and ASGI) or the Flask example, and every check of
tests/frontend_checks.py runs through it. One Caddy and one fcgibridge per configuration;
after each, Caddy's log must hold nothing of level warn or above that is not expected.

The other tests pin down what the page says Caddy sends: the CGI variables at the root and
under the prefix, CONTENT_LENGTH of a chunked upload, the body passed on as it arrives, one
connection per request, no ``Status`` header with ``header_down -Status``, and a streamed
response held back without ``flush_interval -1``.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from caddy_h2o import caddy, caddy_log_problems, sent_params, upload_in_two_parts, write_params_app
from frontend_checks import CHECKS, Check, Site, check_flask_urls, check_id, check_streaming, flask_env
from nginx import unix_socket_path
from snippets import doc_snippet
from support import free_port, process_log, run_fcgibridge
from webserver import WebServer

pytestmark = pytest.mark.e2e

PAGE = "servers/caddy.md"
INTERFACES = ["wsgi", "asgi"]
CONFIGS = ["caddy-unix", "caddy-tcp", "caddy-prefix"]
MOUNTS = {"caddy-prefix": "/app"}


@contextlib.contextmanager
def behind_caddy(directory: Path, name: str, app: str, *args: str, env: dict[str, str] | None = None,
                 edits: Mapping[str, str] | None = None) -> Iterator[WebServer]:
    """fcgibridge serving ``app`` where snippet ``name`` expects it, and that Caddy in front.

    ``args``: more fcgibridge options; ``edits``: more replacements in the snippet.
    """
    port = free_port()
    if name == "caddy-unix":
        socket = unix_socket_path(directory)
        backend = f"unix:{socket}"
        values = {"unix//run/app/fcgi.sock": f"unix/{socket}"}
    else:
        backend = f"127.0.0.1:{free_port()}"
        values = {"127.0.0.1:9000": backend}
    site = doc_snippet(PAGE, name, {**values, "example.com": f"http://127.0.0.1:{port}", **(edits or {})})
    with run_fcgibridge(app, "-b", backend, *args, address=backend, env=env) as proc:
        with caddy(directory / "caddy", site, port) as server:
            yield server
            problems = caddy_log_problems(server)
            assert not problems, "Caddy logged problems:\n" + "\n".join(problems)
        assert proc.poll() is None, f"fcgibridge exited:\n{process_log(proc)}"


@pytest.fixture(scope="module", params=[(name, interface) for name in CONFIGS for interface in INTERFACES],
                ids=lambda param: f"{param[0]}-{param[1]}")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    name, interface = request.param
    directory = tmp_path_factory.mktemp(name)
    with behind_caddy(directory, name, f"tests/apps/frontend_app.py:{interface}") as server:
        yield Site(server, interface, mount=MOUNTS.get(name, ""), scratch=directory)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_checks(site: Site, check: Check) -> None:
    check(site)


def test_flask_example_under_the_prefix(tmp_path: Path) -> None:
    env = flask_env(tmp_path)
    with behind_caddy(tmp_path, "caddy-prefix", "examples.flask_app.app:app", env=env) as server:
        check_flask_urls(server, "/app")
        redirect = server.get("/app")  # the snippet's redir: /app/* does not match /app
        assert (redirect.status, redirect.header("Location")) == (302, "/app/")


@pytest.fixture(scope="module")
def params_app(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_params_app(tmp_path_factory.mktemp("params-app"))


@pytest.mark.parametrize(("name", "path", "script_name", "path_info"), [
    ("caddy-tcp", "/users/1", "", "/users/1"),
    ("caddy-prefix", "/app/users/1", "/app", "/users/1"),
    ("caddy-prefix", "/app/", "/app", "/"),
])
def test_what_caddy_sends(tmp_path: Path, params_app: str, name: str, path: str, script_name: str,
                          path_info: str) -> None:
    data = random.Random(3).randbytes(200_000)
    with behind_caddy(tmp_path, name, params_app) as server:
        reply = server.get(f"{path}?q=1")
        assert reply.status == 200 and reply.header("Status") is None, reply  # header_down -Status
        params = json.loads(reply.body)
        assert (params["SCRIPT_NAME"], params.get("PATH_INFO")) == (script_name, path_info), params
        assert params["REQUEST_URI"] == f"{path}?q=1"
        pieces = (data[start : start + 65536] for start in range(0, len(data), 65536))
        chunked = sent_params(server, "POST", path, pieces, encode_chunked=True)
        assert (chunked["CONTENT_LENGTH"], chunked["BODY_LENGTH"]) == ("-1", str(len(data)))


def test_the_body_is_passed_on_as_it_arrives(tmp_path: Path, params_app: str) -> None:
    """The app starts before the client has sent the whole body."""
    with behind_caddy(tmp_path, "caddy-tcp", params_app) as server:
        params, rest_sent = upload_in_two_parts(server, "/upload", random.Random(4).randbytes(200_000))
    assert params["CONTENT_LENGTH"] == params["BODY_LENGTH"] == "200000"
    assert float(params["STARTED"]) < rest_sent


def test_one_connection_per_request(tmp_path: Path) -> None:
    """Caddy 2.6 does not set FCGI_KEEP_CONN: every request comes on a connection of its own."""
    with behind_caddy(tmp_path, "caddy-tcp", "tests/apps/frontend_app.py:wsgi", "--status-path", "/fcgi-status") \
            as server:
        conn = server.connection()
        try:
            before = json.loads(server.get("/fcgi-status?json", conn=conn).body)["accepted_conn"]
            for _ in range(10):
                assert server.get("/hello", conn=conn).status == 200
            after = json.loads(server.get("/fcgi-status?json", conn=conn).body)["accepted_conn"]
        finally:
            conn.close()
    assert after - before == 11


def test_without_flush_interval_the_response_is_held_back(tmp_path: Path) -> None:
    """What ``flush_interval -1`` is in the snippets for."""
    app = "tests/apps/frontend_app.py:asgi"
    with behind_caddy(tmp_path, "caddy-tcp", app, edits={"\t\tflush_interval -1\n": ""}) as server, \
            pytest.raises(AssertionError, match="held the first piece back"):
        check_streaming(Site(server, "asgi", scratch=tmp_path))
