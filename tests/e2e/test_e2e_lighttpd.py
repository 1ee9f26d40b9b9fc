"""End to end: HTTP client -> a real lighttpd (mod_fastcgi) -> the real fcgibridge -> an app.

Every lighttpd configuration a user would copy is a snippet of docs/servers/lighttpd.md;
the tests render it with their own paths and ports and put it after a test-only wrapper
(``tests/lighttpd.py``: document root, error log, pid file, port). Each configuration gets
one lighttpd and one backend for all its tests (module-scoped fixtures):

- the prefix snippets (``/app``, over a unix socket and over TCP) and the root snippet,
  with ``tests/apps/frontend_app.py`` as WSGI and as ASGI: every check of
  ``tests/frontend_checks.py``; the prefix one also with the Flask example;
- ``bin-path``: lighttpd starts fcgibridge itself with the socket on fd 0 — the checks,
  then which processes it started, as which user, in which directory, and that they go
  when lighttpd stops;
- ``"mode" => "authorizer"``: ``tests/apps/authorizer_app.py`` (and the page's example
  authorizers) decide before a static file or the app at ``/app`` is served;
- what lighttpd sends (raw CGI variables, seen by the ASGI responder of
  ``authorizer_app``), connections, request bodies, and the pitfalls on the page.

After every test lighttpd's error log must hold nothing but its start and stop lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import signal
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import programs
import pytest
from frontend_checks import CHECKS, Check, Site, check_flask_urls, check_id, flask_env
from lighttpd import lighttpd_fastcgi, log_problems, log_size
from nginx import unix_socket_path
from snippets import doc_snippet
from support import ROOT, alive, descendants, free_port, lib_for_another_user, parent_of, run_fcgibridge, wait_until
from webserver import Reply, WebServer

pytestmark = pytest.mark.e2e

PAGE = "servers/lighttpd.md"
INTERFACES = ["wsgi", "asgi"]
FLASK_APP = "examples.flask_app.app:app"
STATIC_TEXT = "the protected file\n"


def frontend_app(interface: str) -> str:
    return f"tests/apps/frontend_app.py:{interface}"


def fcgibridge_script() -> str:
    """The venv's ``fcgibridge`` console script (the docs' ``/srv/venv/bin/fcgibridge``)."""
    path = Path(sysconfig.get_path("scripts")) / "fcgibridge"
    assert path.exists(), f"{path} is missing: install the package into the venv (pip install -e .)"
    return str(path)


@contextlib.contextmanager
def running_lighttpd(directory: Path, body: str) -> Iterator[WebServer]:
    """lighttpd with the wrapper and ``body`` until the block ends; then no process it
    started may be left, and its whole error log must hold nothing but its start and stop
    lines."""
    server = lighttpd_fastcgi(directory, body)
    server.start()
    started: list[int] = []
    try:
        yield server
    finally:
        if server.proc is not None:
            started = descendants(server.proc.pid)
        server.stop()
    wait_until(lambda: not any(alive(pid) for pid in started), 5, f"processes outlived lighttpd: {started}")
    problems = log_problems(server)
    assert not problems, "lighttpd logged:\n" + "\n".join(problems)


@contextlib.contextmanager
def clean_log(*servers: WebServer) -> Iterator[None]:
    """Nothing new in the servers' error logs during the block."""
    marks = [log_size(server) for server in servers]
    yield
    for server, mark in zip(servers, marks, strict=True):
        problems = log_problems(server, mark)
        assert not problems, "lighttpd logged:\n" + "\n".join(problems)


def json_of(reply: Reply) -> Any:
    assert reply.status == 200, (reply.status, reply.body[:500])
    assert (reply.header("Content-Type") or "").startswith("application/json"), reply.body[:500]
    return json.loads(reply.body)


# ------------------------------------------------------------------------------- processes


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def wait_for_backends(server: WebServer, count: int, timeout: float = 20.0) -> list[int]:
    """The ``count`` processes lighttpd started, once they are all there."""
    assert server.proc is not None
    pid = server.proc.pid
    wait_until(lambda: len(descendants(pid)) >= count, timeout, f"lighttpd did not start {count} backends")
    found = descendants(pid)
    assert len(found) == count, found
    return found


# ------------------------------------------------------------------ the front-end checks

#: configuration -> (snippet, transport, mount point)
CONFIGURATIONS = {
    "prefix-unix": ("lighttpd-prefix", "unix", "/app"),
    "prefix-tcp": ("lighttpd-prefix-tcp", "tcp", "/app"),
    "root-tcp": ("lighttpd-root", "tcp", ""),
}


def socket_replacements(backend: str) -> dict[str, str]:
    """The page's socket or port, swapped for ``backend``."""
    if backend.startswith("unix:"):
        return {"/run/app/fcgi.sock": backend[5:]}
    return {'"port" => 9000': f'"port" => {backend.rpartition(":")[2]}'}


def new_backend(directory: Path, transport: str, name: str = "fcgi.sock") -> str:
    return f"unix:{unix_socket_path(directory, name)}" if transport == "unix" else f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module", params=[(c, i) for c in CONFIGURATIONS for i in INTERFACES],
                ids=[f"{c}-{i}" for c in CONFIGURATIONS for i in INTERFACES])
def connected_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A snippet onto a running fcgibridge serving frontend_app."""
    configuration, interface = request.param
    snippet, transport, mount = CONFIGURATIONS[configuration]
    directory = tmp_path_factory.mktemp(f"lighttpd-{configuration}-{interface}")
    backend = new_backend(directory, transport)
    with run_fcgibridge(frontend_app(interface), "-b", backend, address=backend):
        body = doc_snippet(PAGE, snippet, socket_replacements(backend))
        with running_lighttpd(directory / "lighttpd", body) as server:
            yield Site(server, interface, mount=mount, scratch=directory)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_connected(connected_site: Site, check: Check) -> None:
    assert isinstance(connected_site.server, WebServer)
    with clean_log(connected_site.server):
        check(connected_site)


def test_flask_example_under_the_prefix(tmp_path: Path) -> None:
    backend = new_backend(tmp_path, "unix")
    env = flask_env(tmp_path)
    with run_fcgibridge(FLASK_APP, "-b", backend, address=backend, env=env):
        body = doc_snippet(PAGE, "lighttpd-prefix", socket_replacements(backend))
        with running_lighttpd(tmp_path / "lighttpd", body) as server:
            check_flask_urls(server, "/app")


# ------------------------------------------------------------------------------- bin-path


def bin_path_snippet(socket: Path, command: str, app: str, pythonpath: str) -> str:
    return doc_snippet(PAGE, "lighttpd-bin-path", {
        "/run/app/fcgi.sock": str(socket), "/srv/venv/bin/fcgibridge": command, "myapp:app": app,
        "/srv/app": pythonpath,
    })


@dataclass
class Spawned:
    site: Site
    #: The processes lighttpd started: fcgibridge and its two workers.
    backends: list[int]
    socket: Path


@pytest.fixture(scope="module", params=INTERFACES)
def spawned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawned]:
    interface = request.param
    directory = tmp_path_factory.mktemp(f"lighttpd-bin-path-{interface}")
    socket = unix_socket_path(directory)
    body = bin_path_snippet(socket, fcgibridge_script(), f"tests.apps.frontend_app:{interface}", str(ROOT))
    with running_lighttpd(directory / "lighttpd", body) as server:
        backends = wait_for_backends(server, 3)
        yield Spawned(Site(server, interface, mount="/app", scratch=directory), backends, socket)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_spawned(spawned: Spawned, check: Check) -> None:
    assert isinstance(spawned.site.server, WebServer)
    with clean_log(spawned.site.server):
        check(spawned.site)


def test_spawned_backends_are_one_fcgibridge_with_its_workers_as_root_in_the_scripts_directory(
        spawned: Spawned) -> None:
    server = spawned.site.server
    assert isinstance(server, WebServer) and server.proc is not None
    children = [pid for pid in spawned.backends if parent_of(pid) == server.proc.pid]
    assert len(children) == 1, children  # max-procs 1: one fcgibridge, whose two workers are its children
    # setproctitle (in the test extra) gives it the master's title in place of its command line.
    assert Path(f"/proc/{children[0]}/cmdline").read_bytes().startswith(b"fcgibridge: master tests.apps.frontend_app:")
    assert Path(f"/proc/{children[0]}/cwd").resolve() == Path(fcgibridge_script()).parent.resolve()
    assert {uid_of(pid) for pid in spawned.backends} == {os.geteuid()}  # lighttpd runs as root here
    # lighttpd numbers the socket it made: "fcgi.sock-0".
    assert Path(f"{spawned.socket}-0").is_socket()


def test_lighttpd_stops_the_backends_it_started(tmp_path: Path) -> None:
    body = bin_path_snippet(unix_socket_path(tmp_path), fcgibridge_script(), "tests.apps.frontend_app:wsgi", str(ROOT))
    server = lighttpd_fastcgi(tmp_path / "lighttpd", body)
    server.start()
    try:
        backends = wait_for_backends(server, 3)
        assert server.get("/app/hello").body == b"Hello from WSGI"
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)  # lighttpd alone, not its process group
        server.proc.wait(10)
        wait_until(lambda: not any(alive(pid) for pid in backends), 15,
                   "the backends outlived lighttpd")
        assert "SIGTERM: stopping 2 workers gracefully" in server.output_path.read_text()
    finally:
        server.stop()
    assert not log_problems(server)


def test_max_procs_defaults_to_four(tmp_path: Path) -> None:
    socket = unix_socket_path(tmp_path)
    body = bin_path_snippet(socket, fcgibridge_script(), "tests.apps.frontend_app:wsgi", str(ROOT))
    body = body.replace('    "max-procs" => 1,\n', "").replace(" -w 2 ", " ")
    assert "max-procs" not in body and "-w" not in body
    with running_lighttpd(tmp_path / "lighttpd", body) as server:
        backends = wait_for_backends(server, 4)
        assert server.proc is not None
        assert {parent_of(pid) for pid in backends} == {server.proc.pid}
        assert sorted(path.name for path in tmp_path.glob("fcgi.sock-*")) == [f"fcgi.sock-{n}" for n in range(4)]
        assert server.get("/app/hello").body == b"Hello from WSGI"


def test_spawned_backend_runs_as_server_username() -> None:
    """lighttpd started as root with ``server.username``: the backend runs as that user, who
    must be able to read the app and the Python it runs with, and write the socket's
    directory and the error log. Root's venv is not readable, so this backend is the
    system Python with fcgibridge, asgiref and the app copied where www-data can read them."""
    python = programs.find("system-python3")
    user = pwd.getpwnam("www-data")
    directory = Path(tempfile.mkdtemp(prefix="fcgibridge-lighttpd-user-"))  # pytest's tmp dirs are root's only
    try:
        directory.chmod(0o755)
        lib = lib_for_another_user(directory, ROOT / "tests" / "apps" / "authorizer_app.py")
        run = directory / "run"
        prefix = directory / "lighttpd"
        for path in (run, prefix / "upload"):
            path.mkdir(parents=True)
            os.chown(path, user.pw_uid, user.pw_gid)
        (prefix / "error.log").touch()
        os.chown(prefix / "error.log", user.pw_uid, user.pw_gid)
        body = ('server.username = "www-data"\nserver.groupname = "www-data"\n'
                + bin_path_snippet(run / "fcgi.sock", f"{shlex.quote(python)} -m fcgibridge", "authorizer_app:wsgi",
                                   str(lib)))
        with running_lighttpd(prefix, body) as server:
            backends = wait_for_backends(server, 3)
            assert {uid_of(pid) for pid in backends} == {user.pw_uid}
            answer = json_of(server.get("/app/who"))
            assert (answer["uid"], answer["script_name"], answer["path_info"]) == (user.pw_uid, "/app", "/who")
            assert (run / "fcgi.sock-0").stat().st_uid == user.pw_uid  # made after the switch
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ----------------------------------------------------------------------------- authorizer


@dataclass
class Guarded:
    server: WebServer
    interface: str


@pytest.fixture(scope="module", params=INTERFACES)
def guarded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """The authorizer snippet, both sockets onto one fcgibridge serving authorizer_app (it
    authorizes in the AUTHORIZER role and shows what it got in the RESPONDER role)."""
    interface = request.param
    directory = tmp_path_factory.mktemp(f"lighttpd-authorizer-{interface}")
    socket = unix_socket_path(directory)
    backend = f"unix:{socket}"
    with run_fcgibridge(f"tests/apps/authorizer_app.py:{interface}", "-b", backend, address=backend):
        body = doc_snippet(PAGE, "lighttpd-authorizer",
                           {"/run/app/auth.sock": str(socket), "/run/app/fcgi.sock": str(socket)})
        with running_lighttpd(directory / "lighttpd", body) as server:
            (directory / "lighttpd" / "docroot" / "files").mkdir()
            (directory / "lighttpd" / "docroot" / "files" / "secret.txt").write_text(STATIC_TEXT)
            yield Guarded(server, interface)


@pytest.fixture
def authorizer(guarded: Guarded) -> Iterator[Guarded]:
    with clean_log(guarded.server):
        yield guarded


def test_authorizer_without_a_token_answers_401_itself(authorizer: Guarded) -> None:
    reply = authorizer.server.get("/files/secret.txt")
    assert reply.status == 401, reply.body[:500]
    assert reply.header("WWW-Authenticate") == 'Token realm="test"'
    assert json.loads(reply.body) == {"role": "AUTHORIZER", "body_length": 0, "method": "GET",
                                      "uri": "/files/secret.txt", "content_length": None}


def test_authorizer_gets_no_body(authorizer: Guarded) -> None:
    body = b"x" * 1000
    reply = authorizer.server.request("POST", "/files/secret.txt", body, {"X-Token": "wrong"})
    assert reply.status == 403, reply.body[:500]
    seen = json.loads(reply.body)
    assert (seen["role"], seen["body_length"], seen["method"]) == ("AUTHORIZER", 0, "POST")
    # lighttpd sends no CONTENT_LENGTH to an authorizer, only the header as HTTP_CONTENT_LENGTH,
    # which WSGI's environ shows as CONTENT_LENGTH (PEP 3333: the request's Content-Length).
    assert seen["content_length"] == ("1000" if authorizer.interface == "wsgi" else None)


def test_authorizer_lets_the_static_file_through(authorizer: Guarded) -> None:
    reply = authorizer.server.get("/files/secret.txt", headers={"X-Token": "letmein"})
    assert (reply.status, reply.body) == (200, STATIC_TEXT.encode())
    assert reply.header("X-Authorizer") is None  # the other headers of a 200 are dropped
    assert not [name for name in reply.headers if name.lower().startswith("variable-")]


def test_authorizer_variables_reach_the_responder(authorizer: Guarded) -> None:
    reply = authorizer.server.request("POST", "/app/echo?q=1", b"0123456789",
                                      {"Cookie": "token=letmein", "Auth-User": "mallory"})
    answer = json_of(reply)
    assert (answer["role"], answer["body_length"]) == ("RESPONDER", 10)
    assert (answer["script_name"], answer["path_info"]) == ("/app", "/echo")
    params = answer["params"]
    # Variable-NAME headers became variables; lighttpd upper-cases ASGI's lower-case names.
    assert (params["AUTH_USER"], params["AUTH_ROLE_SEEN"], params["AUTH_BODY_SEEN"]) == ("alice", "AUTHORIZER", "0")
    assert params["HTTP_AUTH_USER"] == "mallory"  # a client's header stays a header
    assert reply.header("X-Authorizer") is None


def test_authorizer_guards_the_responder(authorizer: Guarded) -> None:
    reply = authorizer.server.get("/app/echo")
    assert reply.status == 401
    assert json.loads(reply.body)["role"] == "AUTHORIZER"


@pytest.mark.parametrize("interface", INTERFACES)
def test_the_pages_example_authorizer(interface: str, tmp_path: Path) -> None:
    (tmp_path / "myauth.py").write_text(doc_snippet(PAGE, f"authorizer-{interface}", {}))
    auth, app = unix_socket_path(tmp_path, "auth.sock"), unix_socket_path(tmp_path, "fcgi.sock")
    with (run_fcgibridge(f"{tmp_path / 'myauth.py'}:app", "-b", f"unix:{auth}", address=f"unix:{auth}"),
          run_fcgibridge(f"tests/apps/authorizer_app.py:{interface}", "-b", f"unix:{app}", address=f"unix:{app}")):
        sockets = {"/run/app/auth.sock": str(auth), "/run/app/fcgi.sock": str(app)}
        body = doc_snippet(PAGE, "lighttpd-authorizer", sockets)
        with running_lighttpd(tmp_path / "lighttpd", body) as server:
            (tmp_path / "lighttpd" / "docroot" / "index.txt").write_text(STATIC_TEXT)
            denied = server.get("/index.txt")
            assert (denied.status, denied.body) == (401, b"a valid X-Token header is needed\n")
            assert denied.header("WWW-Authenticate") == 'Token realm="app"'
            assert server.get("/app/x", headers={"X-Token": "nope"}).status == 401
            allowed = server.get("/index.txt", headers={"X-Token": "s3cret-token"})
            assert (allowed.status, allowed.body) == (200, STATIC_TEXT.encode())
            answer = json_of(server.get("/app/x", headers={"X-Token": "s3cret-token"}))
            assert (answer["role"], answer["params"]["AUTH_USER"]) == ("RESPONDER", "alice")


# ------------------------------------------------------------ what lighttpd sends; pitfalls


@dataclass
class Probes:
    """authorizer_app:asgi (raw params) behind lighttpd configurations made to show what it sends."""

    #: Several keys onto the backend (see :func:`probes`).
    keys: WebServer
    #: The root snippet.
    root: WebServer
    #: The prefix snippet with ``server.stream-request-body = 2``.
    streamed_body: WebServer
    #: The strict prefix snippet.
    strict: WebServer


#: A test-only configuration: the prefix as in the snippet ("/plain"), with fcgibridge
#: --root-path ("/app"), a key with a trailing slash, one without check-local, and the root
#: without fix-root-scriptname.
PROBE_KEYS = """server.modules += ("mod_fastcgi")
fastcgi.server = (
    "/app" => (( "socket" => "{rooted}", "check-local" => "disable" )),
    "/plain" => (( "socket" => "{plain}", "check-local" => "disable" )),
    "/slash/" => (( "socket" => "{plain}", "check-local" => "disable" )),
    "/local" => (( "socket" => "{plain}" )),
    "/" => (( "socket" => "{plain}", "check-local" => "disable" )),
)
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probes]:
    directory = tmp_path_factory.mktemp("lighttpd-probes")
    plain, rooted = unix_socket_path(directory, "plain.sock"), unix_socket_path(directory, "rooted.sock")
    tcp = f"127.0.0.1:{free_port()}"
    app = "tests/apps/authorizer_app.py:asgi"
    prefix = doc_snippet(PAGE, "lighttpd-prefix", {"/run/app/fcgi.sock": str(plain)})
    with (run_fcgibridge(app, "-b", f"unix:{plain}", "-b", tcp, "--status-path", "/plain/fcgi-status",
                         address=tcp),
          run_fcgibridge(app, "-b", f"unix:{rooted}", "--root-path", "/app", address=f"unix:{rooted}"),
          running_lighttpd(directory / "keys", PROBE_KEYS.format(plain=plain, rooted=rooted)) as keys,
          running_lighttpd(directory / "root", doc_snippet(PAGE, "lighttpd-root", socket_replacements(tcp))) as root,
          running_lighttpd(directory / "streamed", "server.stream-request-body = 2\n" + prefix) as streamed,
          running_lighttpd(directory / "strict", doc_snippet(PAGE, "lighttpd-prefix-strict",
                                                             {"/run/app/fcgi.sock": str(plain)})) as strict):
        yield Probes(keys, root, streamed, strict)


@pytest.fixture
def probe(probes: Probes) -> Iterator[Probes]:
    with clean_log(probes.keys, probes.root, probes.streamed_body, probes.strict):
        yield probes


def sent(server: WebServer, path: str, **kwargs: Any) -> dict[str, Any]:
    """What the responder got for ``path``: raw SCRIPT_NAME, PATH_INFO, and its own view."""
    answer = json_of(server.request(kwargs.pop("method", "GET"), path, **kwargs))
    params = answer["params"]
    return {"SCRIPT_NAME": params.get("SCRIPT_NAME"), "PATH_INFO": params.get("PATH_INFO"),
            "app": (answer["script_name"], answer["path_info"])}


def test_prefix_sends_the_mount_point_and_the_rest_decoded(probe: Probes) -> None:
    assert sent(probe.keys, "/plain/users/1?x=1") == {"SCRIPT_NAME": "/plain", "PATH_INFO": "/users/1",
                                                      "app": ("/plain", "/users/1")}
    answer = json_of(probe.keys.get("/plain/a%20b"))
    assert (answer["params"]["PATH_INFO"], answer["params"]["REQUEST_URI"]) == ("/a b", "/plain/a%20b")


def test_the_prefix_itself_arrives_as_a_whole_path(probe: Probes) -> None:
    assert sent(probe.keys, "/plain") == {"SCRIPT_NAME": "/plain", "PATH_INFO": None, "app": ("", "/plain")}
    # fcgibridge --root-path /app: the mount point whatever lighttpd sends
    assert sent(probe.keys, "/app") == {"SCRIPT_NAME": "/app", "PATH_INFO": None, "app": ("/app", "")}
    assert sent(probe.keys, "/app/users/1")["app"] == ("/app", "/users/1")


def test_the_key_is_a_string_prefix(probe: Probes) -> None:
    assert sent(probe.keys, "/plainer") == {"SCRIPT_NAME": "/plainer", "PATH_INFO": None, "app": ("", "/plainer")}


def test_the_strict_prefix_takes_only_its_own_paths(probe: Probes) -> None:
    other = probe.strict.get("/apple")
    assert other.status == 404 and b"404 Not Found" in other.body  # lighttpd's own page, not the app
    assert sent(probe.strict, "/app/users/1")["app"] == ("/app", "/users/1")
    assert sent(probe.strict, "/app")["SCRIPT_NAME"] == "/app"


def test_a_key_with_a_trailing_slash_splits_one_segment_later(probe: Probes) -> None:
    assert sent(probe.keys, "/slash/users/1") == {"SCRIPT_NAME": "/slash/users", "PATH_INFO": "/1",
                                                  "app": ("/slash/users", "/1")}


def test_without_check_local_lighttpd_wants_a_file(probe: Probes) -> None:
    reply = probe.keys.get("/local/users/1")
    assert reply.status == 404 and b"404 Not Found" in reply.body


def test_the_root_needs_fix_root_scriptname(probe: Probes) -> None:
    assert sent(probe.root, "/users/1") == {"SCRIPT_NAME": "", "PATH_INFO": "/users/1", "app": ("", "/users/1")}
    # without it, lighttpd splits after the first segment
    assert sent(probe.keys, "/users/1") == {"SCRIPT_NAME": "/users", "PATH_INFO": "/1", "app": ("/users", "/1")}


def test_one_connection_per_request(probe: Probes) -> None:
    def accepted() -> int:
        return int(json_of(probe.keys.get("/plain/fcgi-status?json"))["accepted_conn"])

    before = accepted()
    with contextlib.closing(probe.keys.connection()) as conn:
        for _ in range(5):
            assert probe.keys.request("GET", "/plain/x", conn=conn).status == 200
    # five requests on one client connection, plus the status request: six FastCGI connections
    assert accepted() - before == 6


def slow_pieces(data: bytes, pause: float = 0.3) -> Iterator[bytes]:
    """``data`` in two pieces with a pause between: a chunked upload still arriving when
    lighttpd has the request head."""
    half = len(data) // 2
    yield data[:half]
    time.sleep(pause)
    yield data[half:]


def test_a_chunked_upload_arrives_with_content_length(probe: Probes) -> None:
    data = b"0123456789" * 10_000
    answer = json_of(probe.keys.request("POST", "/plain/echo", slow_pieces(data), encode_chunked=True))
    assert (answer["body_length"], answer["params"]["CONTENT_LENGTH"]) == (len(data), str(len(data)))


def test_stream_request_body_refuses_chunked_uploads_still_arriving(probe: Probes) -> None:
    data = b"x" * 100_000
    refused = probe.streamed_body.request("POST", "/app/echo", slow_pieces(data), encode_chunked=True)
    assert refused.status == 411, refused.body[:300]
    # (a chunked body that is all there when lighttpd starts the request may pass, with CONTENT_LENGTH)
    answer = json_of(probe.streamed_body.request("POST", "/app/echo", data))
    assert (answer["body_length"], answer["params"]["CONTENT_LENGTH"]) == (len(data), str(len(data)))
