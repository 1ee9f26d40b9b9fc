"""End to end: the nginx configurations of docs/servers/nginx.md, run as the page shows them.

Each snippet is taken from the page (tests/snippets.py), its example socket, address and
port swapped for the test's, and put in an nginx that tests/nginx.py starts; behind it the
real ``python -m fcgibridge`` serves tests/apps/frontend_app.py (WSGI and ASGI) or the Flask
example, and every check of tests/frontend_checks.py runs through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from frontend_checks import CHECKS, Check, Site, check_flask_urls, check_id, flask_env
from nginx import FASTCGI_PARAMS, Nginx, unix_socket_path
from snippets import doc_snippet
from support import free_port, process_log, run_fcgibridge

pytestmark = pytest.mark.e2e

PAGE = "servers/nginx.md"
INTERFACES = ["wsgi", "asgi"]


@contextlib.contextmanager
def behind_nginx(directory: Path, binary: str, name: str, app: str, *args: str,
                 env: dict[str, str] | None = None) -> Iterator[Nginx]:
    """fcgibridge serving ``app`` on the backend snippet ``name`` uses, and that nginx in front."""
    port = free_port()
    if name == "nginx-root":
        backend = f"unix:{unix_socket_path(directory)}"
        values = {"unix:/run/app/fcgi.sock": backend}
    else:
        backend = f"127.0.0.1:{free_port()}"
        values = {"127.0.0.1:9000": backend}
    config = doc_snippet(PAGE, name, {**values, "listen 80;": f"listen 127.0.0.1:{port};",
                                      "include fastcgi_params;": f"include {FASTCGI_PARAMS};"})
    with run_fcgibridge(app, "-b", backend, *args, address=backend, env=env) as proc:
        with Nginx(directory / "nginx", [], binary=binary, port=port, http_extra=[config]) as server:
            yield server
            problems = server.log_problems()
            assert not problems, "nginx logged problems:\n" + "\n".join(problems)
        assert proc.poll() is None, f"fcgibridge exited:\n{process_log(proc)}"


@pytest.fixture(scope="module", params=[(name, interface) for name in ("nginx-root", "nginx-prefix")
                                        for interface in INTERFACES], ids=lambda p: f"{p[0]}-{p[1]}")
def site(request: pytest.FixtureRequest, nginx_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    name, interface = request.param
    directory = tmp_path_factory.mktemp(name)
    with behind_nginx(directory, nginx_binary, name, f"tests/apps/frontend_app.py:{interface}") as server:
        yield Site(server, interface, mount="/app" if name == "nginx-prefix" else "", scratch=directory)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_checks(site: Site, check: Check) -> None:
    check(site)


def test_flask_example_under_the_prefix(nginx_binary: str, tmp_path: Path) -> None:
    env = flask_env(tmp_path)
    with behind_nginx(tmp_path, nginx_binary, "nginx-prefix", "examples.flask_app.app:app", env=env) as server:
        check_flask_urls(server, "/app")


def test_the_buffering_header_does_not_reach_the_client(nginx_binary: str, tmp_path: Path) -> None:
    """nginx takes X-Accel-Buffering: no as an instruction and does not pass it on."""
    with behind_nginx(tmp_path, nginx_binary, "nginx-root", "tests/apps/frontend_app.py:wsgi") as server:
        (tmp_path / "open").touch()
        reply = server.get(f"/stream?gate={tmp_path / 'open'}")
        assert reply.status == 200 and reply.body == b"first\nlast\n"
        assert reply.header("X-Accel-Buffering") is None
