"""End to end: HTTP client -> a real Apache 2.4 -> fcgibridge -> ``tests/apps/frontend_app.py``.

Every Apache configuration here is a snippet of ``docs/servers/apache.md``, rendered with the
test's addresses and put after the test-only wrapper of ``tests/apache.py``:

``tcp``
    mod_proxy_fcgi to fcgibridge on 127.0.0.1, with ``enablereuse=on`` and without it;
``unix``
    mod_proxy_fcgi to fcgibridge on a unix socket;
``prefix``
    the app under ``/app`` (fcgibridge started with the page's ``--root-path`` command),
    with the front-end checks and the Flask example's links;
``fcgid``
    mod_fcgid starting fcgibridge itself (the listening socket on fd 0), as www-data, from
    a venv made with Debian's Python in a world-readable temp directory.

Every configuration comes after the page's ``mpm-event`` snippet (threads per child). Each
runs the whole ``CHECKS`` list as WSGI and as ASGI, with one Apache and one backend per
configuration and interface. After each test Apache's error log must hold no warning or
error that the test does not expect, and once Apache stopped no process of its group may
be left (mod_fcgid's backends included).

``TestWhatApacheSends`` and ``TestWhatModFcgidSends`` put a small recording FastCGI
responder (:data:`RECORDER`) behind the same snippets and check what the page says Apache
sends: SCRIPT_NAME and PATH_INFO, FCGI_KEEP_CONN and connection reuse, how request bodies
arrive. ``TestPitfalls`` shows what goes wrong without the settings the page names.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache
import programs
import pytest
from frontend_checks import CHECKS, Check, Site, check_app_error, check_flask_urls, check_id, flask_env
from snippets import doc_snippet
from support import ROOT, free_port, process_log, run_fcgibridge, wait_for_port
from webserver import Reply, WebServer

pytestmark = pytest.mark.e2e

PAGE = "servers/apache.md"
FRONTEND_APP = "tests/apps/frontend_app.py"
FLASK_APP = "examples.flask_app.app:app"
INTERFACES = ("wsgi", "asgi")

#: Error-log lines a check makes on purpose (regexes). Behind mod_proxy_fcgi fcgibridge logs to
#: its own output; under mod_fcgid its stderr is Apache's error log, so the app's exception shows.
EXPECTED_LOG: dict[Check, tuple[str, ...]] = {
    check_app_error: (r"\[ERROR\]",),
}


# --------------------------------------------------------------------------- stacks


@dataclass
class Stack:
    """Apache in front of fcgibridge (or of what mod_fcgid spawns), and the site the checks use."""

    server: WebServer
    site: Site
    #: fcgibridge behind mod_proxy_fcgi; None when mod_fcgid runs the backend.
    backend: subprocess.Popen[bytes] | None = None
    #: Error-log lines this configuration makes on purpose (regexes).
    expected: tuple[str, ...] = ()
    log_seen: int = 0

    def new_log(self) -> str:
        """What Apache's error log got since the last call."""
        text = self.server.error_log()
        part, self.log_seen = text[self.log_seen :], len(text)
        return part

    def check_healthy(self, expected: Sequence[str] = ()) -> None:
        assert self.server.running, f"apache2 exited:\n{self.server.logs()}"
        if self.backend is not None:
            assert self.backend.poll() is None, f"fcgibridge exited:\n{process_log(self.backend)}"
        problems = apache.log_problems(self.new_log(), (*self.expected, *expected))
        assert not problems, "Apache's error log:\n" + "\n".join(problems)


def vhost_values(port: int) -> dict[str, str]:
    return {"*:80": f"127.0.0.1:{port}"}


def with_mpm(body: str, mpm: str | None = None) -> str:
    """``body`` after the page's event MPM sizing (or ``mpm`` instead)."""
    return (doc_snippet(PAGE, "mpm-event", {}) if mpm is None else mpm) + "\n" + body


@contextlib.contextmanager
def running_apache(body: str, port: int, modules: Sequence[str], prefix: Path) -> Iterator[WebServer]:
    """Apache with ``body`` under ``prefix``; stopped by PID, and nothing of its process group may outlive it."""
    server = apache.apache(prefix, body, modules=modules, port=port).start()
    try:
        yield server
    finally:
        left = apache.stop(server)
    assert not left, f"processes left after Apache stopped (killed now): {left}"


PROXY_MODULES = ("proxy", "proxy_fcgi", "alias", "setenvif")


@contextlib.contextmanager
def proxy_stack(snippet: str, values: Mapping[str, str], backend_args: Sequence[str], backend: str,
                port: int, interface: str, scratch: Path, *, mount: str = "", env: dict[str, str] | None = None,
                mpm: str | None = None, expected: tuple[str, ...] = ()) -> Iterator[Stack]:
    """fcgibridge ``backend_args`` listening on ``backend``, and Apache with ``snippet`` rendered with ``values``."""
    body = with_mpm(doc_snippet(PAGE, snippet, values), mpm)
    with run_fcgibridge(*backend_args, address=backend, env=env) as proc, \
            apache.shared_directory() as prefix, running_apache(body, port, PROXY_MODULES, prefix) as server:
        stack = Stack(server, Site(server, interface, mount=mount, scratch=scratch), proc, expected)
        yield stack
        stack.check_healthy()


@pytest.fixture
def site(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Site]:
    """The class's site for one test; afterwards Apache's error log must hold nothing unexpected."""
    stack.check_healthy()  # what came before (start-up, the previous test's teardown)
    yield stack.site
    callspec = getattr(request.node, "callspec", None)
    check = callspec.params.get("check") if callspec else None
    stack.check_healthy(EXPECTED_LOG.get(check, ()))


# --------------------------------------------------------------------------- mod_proxy_fcgi


TCP = [pytest.param((reuse, interface), id=f"{'reuse' if reuse else 'noreuse'}-{interface}")
       for reuse in (True, False) for interface in INTERFACES]


def tcp_values(port: int, backend: str, reuse: bool) -> dict[str, str]:
    values = {**vhost_values(port), "127.0.0.1:9000": backend}
    if not reuse:
        values[" enablereuse=on"] = ""
    return values


class TestTcp:
    """``ProxyPass "/" "fcgi://127.0.0.1:9000/"``, with and without ``enablereuse=on``."""

    @pytest.fixture(scope="class", params=TCP)
    @classmethod
    def stack(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        reuse, interface = request.param
        backend, port = f"127.0.0.1:{free_port()}", free_port()
        with proxy_stack("tcp", tcp_values(port, backend, reuse), (f"{FRONTEND_APP}:{interface}", "-b", backend),
                         backend, port, interface, tmp_path_factory.mktemp("apache-tcp")) as stack:
            yield stack

    @pytest.mark.parametrize("check", CHECKS, ids=check_id)
    def test_frontend(self, site: Site, check: Check) -> None:
        check(site)


class TestUnix:
    """``ProxyPass "/" "unix:/run/app/fcgi.sock|fcgi://localhost/"``."""

    @pytest.fixture(scope="class", params=INTERFACES)
    @classmethod
    def stack(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        interface = request.param
        port = free_port()
        # www-data must reach the socket: not under pytest's 0700 temp dirs.
        with apache.shared_directory("fcgibridge-sock-") as directory:
            socket_path = directory / "fcgi.sock"
            backend = f"unix:{socket_path}"
            values = {"/run/app/fcgi.sock": str(socket_path)}
            # As the page says: the socket is 0660, so its group must be Apache's user's.
            args = (f"{FRONTEND_APP}:{interface}", "-b", backend, "--socket-group", apache.USER)
            with proxy_stack("unix", values, args, backend, port,
                             interface, tmp_path_factory.mktemp("apache-unix")) as stack:
                yield stack

    @pytest.mark.parametrize("check", CHECKS, ids=check_id)
    def test_frontend(self, site: Site, check: Check) -> None:
        check(site)


def prefix_command(backend: str, app: str) -> list[str]:
    """The page's fcgibridge command for the app under /app, as arguments of ``python -m fcgibridge``."""
    argv = shlex.split(doc_snippet(PAGE, "prefix-command", {"127.0.0.1:9000": backend, "myapp:app": app}))
    assert argv[0] == "/srv/venv/bin/fcgibridge", argv
    return argv[1:]


class TestPrefix:
    """``ProxyPass "/app/" ...`` with fcgibridge ``--root-path /app``: the app is mounted at /app."""

    @pytest.fixture(scope="class", params=INTERFACES)
    @classmethod
    def stack(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        interface = request.param
        backend, port = f"127.0.0.1:{free_port()}", free_port()
        with proxy_stack("prefix", {"127.0.0.1:9000": backend},
                         prefix_command(backend, f"{FRONTEND_APP}:{interface}"), backend, port, interface,
                         tmp_path_factory.mktemp("apache-prefix"), mount="/app") as stack:
            yield stack

    @pytest.mark.parametrize("check", CHECKS, ids=check_id)
    def test_frontend(self, site: Site, check: Check) -> None:
        check(site)

    def test_bare_prefix_redirects(self, site: Site) -> None:
        reply = site.server.request("GET", "/app")
        assert reply.status == 302
        assert (reply.header("Location") or "").endswith("/app/"), reply.header("Location")


class TestFlaskPrefix:
    """The Flask example under /app: its links and redirects carry the prefix."""

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        directory = tmp_path_factory.mktemp("apache-flask")
        env = flask_env(directory)
        backend, port = f"127.0.0.1:{free_port()}", free_port()
        with proxy_stack("prefix", {"127.0.0.1:9000": backend},
                         prefix_command(backend, FLASK_APP), backend, port, "wsgi", directory, mount="/app",
                         env=env) as stack:
            yield stack

    def test_flask_urls(self, site: Site) -> None:
        check_flask_urls(site.server, "/app")


# --------------------------------------------------------------------------- mod_fcgid


@pytest.fixture(scope="module")
def fcgid_root() -> Iterator[Path]:
    """A world-readable directory with a venv of Debian's Python holding fcgibridge (installed
    from a copy of this checkout, which www-data may not be able to read), and ``app/`` with
    ``frontend_app.py`` and :data:`RECORDER`."""
    python = programs.find("system-python3")
    with apache.shared_directory("fcgibridge-fcgid-") as root:
        source = root / "source"
        shutil.copytree(ROOT / "fcgibridge", source / "fcgibridge", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source / name)
        app = root / "app"
        app.mkdir()
        shutil.copy(ROOT / FRONTEND_APP, app / "frontend_app.py")
        (app / "recorder.py").write_text(RECORDER)
        venv = root / "venv"
        for command in ([python, "-m", "venv", str(venv)],
                        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
            assert result.returncode == 0, f"{command} failed:\n{result.stdout}{result.stderr}"
        shutil.rmtree(source)
        # Whatever the umask: www-data must read the interpreter, the packages and the app.
        for directory, _, files in os.walk(root):
            Path(directory).chmod(0o755)
            for name in files:
                path = Path(directory, name)
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o444)
        yield root


FCGID_MODULES = ("fcgid",)
#: The command of the page's FcgidWrapper.
FCGID_COMMAND = "/srv/venv/bin/fcgibridge --root-path / --log-level warning myapp:app"


def fcgid_body(root: Path, app: str | None = None, *, command: str | None = None,
               drop: Sequence[str] = ()) -> str:
    """The page's mod_fcgid snippet (after its MPM sizing) running fcgibridge with ``app``, or
    ``command`` instead of fcgibridge; without the lines ``drop``."""
    values = {"/srv/app": str(root / "app"), **{line + "\n": "" for line in drop}}
    if command is not None:
        values[FCGID_COMMAND] = command
    else:
        values |= {"/srv/venv/bin/fcgibridge": str(root / "venv" / "bin" / "fcgibridge"), "myapp:app": str(app)}
    return with_mpm(doc_snippet(PAGE, "fcgid", values))


def recorder_command(root: Path) -> str:
    return f"{root / 'venv' / 'bin' / 'python'} {root / 'app' / 'recorder.py'}"


@contextlib.contextmanager
def fcgid_stack(body: str, interface: str, expected: tuple[str, ...] = ()) -> Iterator[Stack]:
    """Apache with the mod_fcgid ``body``; every process mod_fcgid started must be gone once Apache stopped."""
    with apache.shared_directory() as prefix, running_apache(body, free_port(), FCGID_MODULES, prefix) as server:
        # The gate files of the streaming check must be visible to www-data.
        stack = Stack(server, Site(server, interface, scratch=prefix), expected=expected)
        yield stack
        stack.check_healthy()
        assert server.proc is not None
        spawned = [member for member in apache.group_members(server.proc.pid) if str(prefix) not in member]
        assert spawned, "mod_fcgid started no backend in Apache's process group"


class TestFcgid:
    """mod_fcgid spawns fcgibridge (``FcgidWrapper``), which serves the listening socket on fd 0."""

    @pytest.fixture(scope="class", params=INTERFACES)
    @classmethod
    def stack(cls, request: pytest.FixtureRequest, fcgid_root: Path) -> Iterator[Stack]:
        interface = request.param
        with fcgid_stack(fcgid_body(fcgid_root, f"frontend_app:{interface}"), interface) as stack:
            yield stack

    @pytest.mark.parametrize("check", CHECKS, ids=check_id)
    def test_frontend(self, site: Site, check: Check) -> None:
        check(site)


# --------------------------------------------------------------------------- what Apache sends

#: A FastCGI responder that answers each request with JSON of what the web server sent: the
#: connection it came on, FCGI_KEEP_CONN, the params, when they were complete, the sizes of
#: the STDIN records and when the body ended. Serves 127.0.0.1:PORT (argv[1]) or fd 0.
RECORDER = '''\
import itertools, json, os, socket, sys, threading, time
from fcgibridge.protocol import ApplicationConnection, RequestBody, RequestBodyEnd, RequestStarted

numbers = itertools.count(1)


def serve(sock):
    connection = f"{os.getpid()}-{next(numbers)}"
    core = ApplicationConnection()
    records = {}
    with sock:
        while not core.should_close:
            data = sock.recv(65536)
            if not data:
                return
            for event in core.receive_data(data):
                if isinstance(event, RequestStarted):
                    records[event.request_id] = {"connection": connection, "keep_conn": event.keep_conn,
                                                 "params": event.params, "started": time.time(), "stdin": []}
                elif isinstance(event, RequestBody):
                    records[event.request_id]["stdin"].append(len(event.data))
                elif isinstance(event, RequestBodyEnd):
                    record = records.pop(event.request_id)
                    record["ended"] = time.time()
                    head = b"Status: 200 OK\\r\\nContent-Type: application/json\\r\\n\\r\\n"
                    sock.sendall(core.end_request(event.request_id, stdout=head + json.dumps(record).encode()))
            sock.sendall(core.data_to_send())


listener = socket.create_server(("127.0.0.1", int(sys.argv[1]))) if len(sys.argv) > 1 else socket.socket(fileno=0)
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
'''


@contextlib.contextmanager
def recorder_process(directory: Path) -> Iterator[str]:
    """:data:`RECORDER` on 127.0.0.1 (run by this Python); yields its address."""
    script = directory / "recorder.py"
    script.write_text(RECORDER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(f"127.0.0.1:{port}", proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def recorded(reply: Reply) -> dict[str, Any]:
    assert reply.status == 200, reply.body[:500]
    return json.loads(reply.body)  # type: ignore[no-any-return]


def slow_body(pieces: int, size: int, delay: float, sent: list[float]) -> Iterator[bytes]:
    """``pieces`` pieces of ``size`` bytes, ``delay`` s apart; ``sent`` gets the time each was handed over."""
    data = random.Random(3).randbytes(size)
    for number in range(pieces):
        if number:
            time.sleep(delay)
        sent.append(time.time())
        yield data


def raw_chunked_post(port: int, path: str, pieces: Sequence[bytes]) -> dict[str, Any]:
    """A chunked POST whose head and whole body go out in one write."""
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + chunks)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        return json.loads(response.read())  # type: ignore[no-any-return]


def keepalive_records(server: WebServer, count: int = 4) -> list[dict[str, Any]]:
    """``count`` requests on one client connection, as the recorder saw them."""
    conn = server.connection()
    try:
        return [recorded(server.get(f"/n{number}", conn=conn)) for number in range(count)]
    finally:
        conn.close()


UPLOAD_PIECES, UPLOAD_PIECE, UPLOAD_DELAY = 8, 128 * 1024, 0.1
UPLOAD_SIZE = UPLOAD_PIECES * UPLOAD_PIECE


class TestWhatApacheSends:
    """The recorder behind the page's mod_proxy_fcgi snippets: what the page says Apache sends."""

    @pytest.fixture(scope="class", params=[True, False], ids=["reuse", "noreuse"])
    @classmethod
    def proxied(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[WebServer, bool]]:
        reuse = request.param
        port = free_port()
        with recorder_process(tmp_path_factory.mktemp("recorder")) as backend, apache.shared_directory() as prefix:
            # The prefix snippet first: its ProxyPass "/app/" then wins over the vhost's "/".
            body = with_mpm(doc_snippet(PAGE, "prefix", {"127.0.0.1:9000": backend}) + "\n"
                            + doc_snippet(PAGE, "tcp", tcp_values(port, backend, reuse)))
            with running_apache(body, port, PROXY_MODULES, prefix) as server:
                yield server, reuse
                assert not apache.log_problems(server.error_log()), server.error_log()

    def test_whole_path_in_script_name(self, proxied: tuple[WebServer, bool]) -> None:
        server, _ = proxied
        params = recorded(server.get("/some/where%20x?q=1"))["params"]
        assert params["SCRIPT_NAME"] == "/some/where x"
        assert "PATH_INFO" not in params
        assert params["REQUEST_URI"] == "/some/where%20x?q=1"
        assert params["QUERY_STRING"] == "q=1"
        prefixed = recorded(server.get("/app/where"))["params"]
        assert prefixed["SCRIPT_NAME"] == "/app/where"
        assert "PATH_INFO" not in prefixed

    def test_keep_conn_and_reuse(self, proxied: tuple[WebServer, bool]) -> None:
        server, reuse = proxied
        records = keepalive_records(server)
        assert {record["keep_conn"] for record in records} == {reuse}
        connections = {record["connection"] for record in records}
        assert len(connections) == (1 if reuse else len(records)), connections

    def test_chunked_upload_streams_without_length(self, proxied: tuple[WebServer, bool]) -> None:
        server, _ = proxied
        sent: list[float] = []
        record = recorded(server.request("POST", "/upload", slow_body(UPLOAD_PIECES, UPLOAD_PIECE, UPLOAD_DELAY, sent),
                                         encode_chunked=True))
        params = record["params"]
        assert "CONTENT_LENGTH" not in params
        assert params["HTTP_TRANSFER_ENCODING"] == "chunked"
        assert sum(record["stdin"]) == UPLOAD_SIZE
        assert max(record["stdin"]) <= 8192
        # The request reached the backend before the client had sent the last piece.
        assert record["started"] < sent[-1], (record["started"], sent)

    def test_small_chunked_body_gets_a_length(self, proxied: tuple[WebServer, bool]) -> None:
        server, _ = proxied
        params = raw_chunked_post(server.port, "/small", [b"a" * 5000, b"b" * 5000])["params"]
        assert params["CONTENT_LENGTH"] == "10000"
        assert "HTTP_TRANSFER_ENCODING" not in params

    def test_body_with_length_streams(self, proxied: tuple[WebServer, bool]) -> None:
        server, _ = proxied
        sent: list[float] = []
        record = recorded(server.request("POST", "/upload", slow_body(UPLOAD_PIECES, UPLOAD_PIECE, UPLOAD_DELAY, sent),
                                         {"Content-Length": str(UPLOAD_SIZE)}))
        assert record["params"]["CONTENT_LENGTH"] == str(UPLOAD_SIZE)
        assert sum(record["stdin"]) == UPLOAD_SIZE
        assert record["started"] < sent[-1], (record["started"], sent)


class TestWhatModFcgidSends:
    """The recorder spawned by mod_fcgid with the page's settings."""

    @pytest.fixture(scope="class")
    @classmethod
    def fcgid(cls, fcgid_root: Path) -> Iterator[WebServer]:
        with fcgid_stack(fcgid_body(fcgid_root, command=recorder_command(fcgid_root)), "wsgi") as stack:
            yield stack.server

    def test_paths(self, fcgid: WebServer) -> None:
        params = recorded(fcgid.get("/some/where%20x?q=1"))["params"]
        assert params["REQUEST_URI"] == "/some/where%20x?q=1"
        # Split where the path stops matching files under the DocumentRoot (here an empty
        # directory), not at the Location. fcgibridge --root-path / ignores that split.
        assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == ("/some", "/where x")
        assert params["CONTENT_LENGTH"] == "0"

    def test_no_keep_conn(self, fcgid: WebServer) -> None:
        records = keepalive_records(fcgid)
        assert {record["keep_conn"] for record in records} == {False}
        assert len({record["connection"] for record in records}) == len(records)

    def test_chunked_upload_is_buffered_with_length(self, fcgid: WebServer) -> None:
        sent: list[float] = []
        record = recorded(fcgid.request("POST", "/upload", slow_body(UPLOAD_PIECES, UPLOAD_PIECE, UPLOAD_DELAY, sent),
                                        encode_chunked=True))
        assert record["params"]["CONTENT_LENGTH"] == str(UPLOAD_SIZE)
        assert "HTTP_TRANSFER_ENCODING" not in record["params"]
        assert sum(record["stdin"]) == UPLOAD_SIZE
        # mod_fcgid reads the whole body before it sends the request.
        assert record["started"] > sent[-1], (record["started"], sent)


# --------------------------------------------------------------------------- pitfalls


def first_piece_within(site: Site, seconds: float) -> bool:
    """GET /stream: whether ``first`` arrived within ``seconds`` while the app waited; then
    the gate opens and the whole response must come."""
    gate = site.scratch / f"gate-{uuid.uuid4().hex}"
    request = f"GET {site.url(f'/stream?gate={gate}')} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    received = b""
    with socket.create_connection(("127.0.0.1", site.server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        deadline = time.monotonic() + seconds
        while b"first\n" not in received and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            assert piece, received
            received += piece
        arrived = b"first\n" in received
        gate.touch()
        sock.settimeout(10)
        while piece := sock.recv(65536):
            received += piece
    assert b"last\n" in received, received
    return arrived


#: A test-only MPM with fewer threads per child than the 50 clients of the concurrency check.
SMALL_MPM = """\
<IfModule mpm_event_module>
    StartServers 2
    ThreadsPerChild 10
    ServerLimit 8
    MaxRequestWorkers 80
    MinSpareThreads 10
    MaxSpareThreads 40
</IfModule>
"""


def disconnects(server: WebServer, clients: int = 50, requests: int = 20) -> tuple[int, list[str]]:
    """``clients`` keep-alive clients at once: how many requests found their connection closed
    without an answer, and any other problem. Each request takes the app 5 ms, so that
    Apache's threads are all busy however fast the backend is otherwise."""
    closed: list[int] = []
    problems: list[str] = []

    def client(number: int) -> None:
        conn = server.connection()
        try:
            for _ in range(requests):
                try:
                    reply = server.request("GET", "/pause?s=0.005", conn=conn)
                except http.client.RemoteDisconnected:
                    closed.append(number)
                    conn.close()
                    continue
                if reply.status != 200:
                    problems.append(f"client {number}: {reply.status}")
        finally:
            conn.close()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return len(closed), problems


class TestPitfalls:
    """What goes wrong without the settings the page names."""

    def test_without_flushpackets_the_stream_waits(self, tmp_path: Path) -> None:
        backend, port = f"127.0.0.1:{free_port()}", free_port()
        values = {**tcp_values(port, backend, True), " flushpackets=on": ""}
        with proxy_stack("tcp", values, (f"{FRONTEND_APP}:asgi", "-b", backend), backend, port, "asgi",
                         tmp_path) as stack:
            assert not first_piece_within(stack.site, 1.0)
            stack.check_healthy()

    def test_fcgid_defaults(self, fcgid_root: Path) -> None:
        """Without FcgidOutputBufferSize 0 the stream waits; without FcgidMaxRequestLen a
        body over 128 KiB gets 500."""
        body = fcgid_body(fcgid_root, "frontend_app:wsgi",
                          drop=("FcgidOutputBufferSize 0", "FcgidMaxRequestLen 33554432"))
        with fcgid_stack(body, "wsgi", expected=(r"exceeds MaxRequestLen \(131072\)",)) as stack:
            assert not first_piece_within(stack.site, 1.0)
            assert stack.site.request("POST", "/echo", b"x" * 131072).status == 200
            assert stack.site.request("POST", "/echo", b"x" * (131072 + 1)).status == 500
            assert "exceeds MaxRequestLen (131072)" in stack.server.error_log()

    def test_busy_event_mpm_closes_keepalive_connections(self, tmp_path: Path) -> None:
        """With fewer threads per child than concurrent requests, a child whose threads are all
        busy closes its idle keep-alive connections: a client's next request there gets no answer."""
        backend, port = f"127.0.0.1:{free_port()}", free_port()
        with proxy_stack("tcp", tcp_values(port, backend, True), (f"{FRONTEND_APP}:wsgi", "-b", backend), backend,
                         port, "wsgi", tmp_path, mpm=SMALL_MPM) as stack:
            closed, problems = disconnects(stack.server)
            for _ in range(2):
                if closed:
                    break
                more, problems = disconnects(stack.server)
                closed += more
            assert not problems, problems
            assert closed, "no keep-alive connection was closed"
            stack.check_healthy()

    def test_proxy_fcgi_pathinfo(self, tmp_path: Path) -> None:
        """With proxy-fcgi-pathinfo=1 the split depends on the path: a percent-escape puts the
        whole path in SCRIPT_NAME (decoded) and in PATH_INFO (still encoded)."""
        port = free_port()
        with recorder_process(tmp_path) as backend, apache.shared_directory() as prefix:
            body = with_mpm(doc_snippet(PAGE, "tcp", tcp_values(port, backend, True))
                            + '\nSetEnvIf Request_URI "." proxy-fcgi-pathinfo=1\n')
            with running_apache(body, port, PROXY_MODULES, prefix) as server:
                plain = recorded(server.get("/where"))["params"]
                escaped = recorded(server.get("/a/b%20c"))["params"]
                assert not apache.log_problems(server.error_log()), server.error_log()
        assert (plain["SCRIPT_NAME"], plain["PATH_INFO"]) == ("", "/where")
        assert (escaped["SCRIPT_NAME"], escaped["PATH_INFO"]) == ("/a/b c", "/a/b%20c")

    def test_socket_www_data_cannot_reach(self, tmp_path: Path) -> None:
        with apache.shared_directory("fcgibridge-sock-") as directory:
            private = directory / "private"
            private.mkdir(mode=0o700)
            socket_path = private / "fcgi.sock"
            backend = f"unix:{socket_path}"
            with proxy_stack("unix", {"/run/app/fcgi.sock": str(socket_path)}, (f"{FRONTEND_APP}:wsgi", "-b", backend),
                             backend, free_port(), "wsgi", tmp_path,
                             expected=(r"\(13\)Permission denied: AH02454", r"AH01079")) as stack:
                assert stack.server.get("/hello").status == 503
                assert "(13)Permission denied: AH02454" in stack.server.error_log()

    def test_fcgid_needs_execcgi(self, fcgid_root: Path) -> None:
        body = fcgid_body(fcgid_root, command=recorder_command(fcgid_root), drop=("    Options +ExecCGI",))
        with apache.shared_directory() as prefix, running_apache(body, free_port(), FCGID_MODULES, prefix) as server:
            assert server.get("/hello").status == 403
            assert "does not have ExecCGI enabled" in server.error_log()
