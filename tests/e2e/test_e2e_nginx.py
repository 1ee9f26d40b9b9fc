"""End to end: HTTP client -> a real nginx -> the real ``python -m fcgibridge`` -> an app.

Each parametrized combination (fastcgi_pass over TCP or a unix socket, fastcgi_keep_conn
on or off) starts one fcgibridge and one nginx for a whole test class; every test then
sends plain HTTP through nginx with :mod:`http.client`. The nginx of each combination has
three locations onto the same backend:

``/``
    plain ``fastcgi_params``: SCRIPT_NAME is the whole path, there is no PATH_INFO;
``/app/``
    ``fastcgi_split_path_info`` at the mount point ``/app`` (SCRIPT_NAME ``/app``);
``/unbuffered/``
    mounted at ``/unbuffered`` with ``fastcgi_request_buffering off`` and
    ``fastcgi_buffering off``: bodies are streamed both ways as they arrive.

After every test the nginx error log must hold no error (nothing like "upstream
prematurely closed", "broken pipe" or "reset by peer") and both processes must still run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from frontend_checks import flask_env
from nginx import Location, Nginx, ProcessOutput, Reply, unix_socket_path
from support import free_port, run_fcgibridge

pytestmark = pytest.mark.e2e

FLASK_APP = "examples.flask_app.app:app"
ASGI_APP = "tests/apps/asgi_e2e.py:app"

MiB = 1024 * 1024
UPLOAD_SIZE = 5 * MiB
LARGE_BODY_SIZE = 20 * MiB
CHUNK = 64 * 1024
#: Seconds within which an answer sent before the body was read reaches the client.
EARLY_ANSWER_LIMIT = 5.0

#: (transport, fastcgi_keep_conn) of each combination.
COMBINATIONS = [
    pytest.param(("tcp", True), id="tcp-keep_conn"),
    pytest.param(("tcp", False), id="tcp-no_keep_conn"),
    pytest.param(("unix", True), id="unix-keep_conn"),
    pytest.param(("unix", False), id="unix-no_keep_conn"),
]


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """fcgibridge serving an app, and nginx in front of it."""

    nginx: Nginx
    backend: str
    proc: Any  # subprocess.Popen[bytes]
    output: ProcessOutput
    directory: Path
    keep_conn: bool

    def check_healthy(self, log_mark: int) -> None:
        assert self.proc.poll() is None, f"fcgibridge exited with {self.proc.returncode}:\n{self.output.text()}"
        assert self.nginx.running, "nginx exited"
        problems = self.nginx.log_problems(log_mark)
        assert not problems, "nginx logged problems:\n" + "\n".join(problems)


def standard_locations(backend: str, keep_conn: bool) -> list[Location]:
    return [
        Location(backend, "/", keep_conn=keep_conn),
        Location(backend, "/app/", keep_conn=keep_conn, mount="/app"),
        Location(backend, "/unbuffered/", keep_conn=keep_conn, mount="/unbuffered", request_buffering=False,
                 buffering=False),
    ]


@contextlib.contextmanager
def serve_behind_nginx(
    app: str,
    directory: Path,
    nginx_binary: str,
    *,
    transport: str,
    keep_conn: bool,
    locations: Callable[[str, bool], Sequence[Location]] = standard_locations,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Run ``python -m fcgibridge APP -b BACKEND`` and an nginx passing to it; both stopped by PID."""
    backend = f"unix:{unix_socket_path(directory)}" if transport == "unix" else f"127.0.0.1:{free_port()}"
    output: ProcessOutput | None = None
    try:
        with run_fcgibridge(app, "-b", backend, *extra_args, address=backend, env=env) as proc:
            output = ProcessOutput(proc, f"fcgibridge {app} -b {backend}")
            with Nginx(directory / "nginx", locations(backend, keep_conn), binary=nginx_binary) as server:
                yield Stack(server, backend, proc, output, directory, keep_conn)
    finally:
        if output is not None:
            output.close()  # the process is stopped by now: its pipes are closed


@pytest.fixture(scope="class", params=COMBINATIONS)
def flask_stack(request: pytest.FixtureRequest, nginx_binary: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    transport, keep_conn = request.param
    directory = tmp_path_factory.mktemp(f"flask-{transport}")
    with serve_behind_nginx(FLASK_APP, directory, nginx_binary, transport=transport, keep_conn=keep_conn,
                            env=flask_env(directory)) as stack:
        yield stack


@pytest.fixture(scope="class", params=COMBINATIONS)
def asgi_stack(request: pytest.FixtureRequest, nginx_binary: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    transport, keep_conn = request.param
    directory = tmp_path_factory.mktemp(f"asgi-{transport}")
    with serve_behind_nginx(ASGI_APP, directory, nginx_binary, transport=transport, keep_conn=keep_conn) as stack:
        yield stack


@pytest.fixture
def flask(flask_stack: Stack) -> Iterator[Stack]:
    mark = flask_stack.nginx.log_mark()
    yield flask_stack
    flask_stack.check_healthy(mark)


@pytest.fixture
def asgi(asgi_stack: Stack) -> Iterator[Stack]:
    mark = asgi_stack.nginx.log_mark()
    yield asgi_stack
    asgi_stack.check_healthy(mark)


# --------------------------------------------------------------------------- helpers


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def chunks(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    """The body as an iterable: http.client sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def multipart_file(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body holding one file, and its Content-Type."""
    boundary = f"e2e-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_large_body_unread(stack: Stack, path: str, seed: int) -> Reply:
    """POST 20 MiB to a route that answers without reading it; the answer must come at once."""
    started = time.monotonic()
    reply = stack.nginx.request("POST", path, body=payload(LARGE_BODY_SIZE, seed=seed),
                                headers={"Content-Type": "application/octet-stream"})
    elapsed = time.monotonic() - started
    assert reply.status == 200, reply.body[:500]
    # Without KEEP_CONN nginx ends the response only at EOF and, once the response came,
    # stops sending the body: the server must half-close rather than wait for the body.
    assert elapsed < EARLY_ANSWER_LIMIT, f"the answer took {elapsed:.1f} s"
    return reply


def json_body(reply: Reply) -> Any:
    assert reply.header("Content-Type") == "application/json", reply.body[:500]
    return json.loads(reply.body)


def expected_lines(count: int) -> bytes:
    return "".join(f"line {i} of {count}\n" for i in range(1, count + 1)).encode()


def first_line_delay(server: Nginx, path: str) -> tuple[float, bytes]:
    """Seconds until the first line of a streamed response arrived, and the whole body."""
    conn = server.connection()
    try:
        started = time.monotonic()
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.status == 200
        first = response.readline()
        delay = time.monotonic() - started
        return delay, first + response.read()
    finally:
        conn.close()


def keepalive_run(server: Nginx, paths: Sequence[str], expect: Callable[[str, Reply], None],
                  count: int = 50) -> None:
    """``count`` sequential requests on one client connection, which must stay the same."""
    conn = server.connection()
    try:
        first_socket = None
        for i in range(count):
            path = paths[i % len(paths)]
            reply = server.request("GET", path, conn=conn)
            expect(path, reply)
            assert reply.header("Connection") != "close", f"nginx closed the connection after request {i}"
            if first_socket is None:
                first_socket = conn.sock
            assert conn.sock is first_socket, f"the client connection was reopened before request {i}"
    finally:
        conn.close()


# --------------------------------------------------------------------------- Flask (WSGI)


class TestFlaskBehindNginx:
    """The Flask guestbook example, served by the real CLI, behind nginx."""

    def test_hello(self, flask: Stack) -> None:
        reply = flask.nginx.get("/hello")
        assert reply.status == 200
        assert reply.body == b"Hello, World!"
        assert reply.header("Content-Type") == "text/plain; charset=utf-8"

    def test_form_post_then_entry_is_listed(self, flask: Stack) -> None:
        token = uuid.uuid4().hex
        form = urlencode({"name": "e2e form", "text": f"entry {token}"}).encode()
        reply = flask.nginx.request("POST", "/entries", body=form,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert reply.status == 303, reply.body[:500]
        assert urlsplit(reply.header("Location") or "").path == "/"
        page = flask.nginx.get("/")
        assert page.status == 200
        assert f"entry {token}".encode() in page.body

    def test_multipart_upload_5mib(self, flask: Stack) -> None:
        data = payload(UPLOAD_SIZE, seed=1)
        body, content_type = multipart_file("file", "blob.bin", data)
        reply = flask.nginx.request("POST", "/upload", body=body, headers={"Content-Type": content_type})
        assert reply.status == 200, reply.body[:500]
        assert json_body(reply) == {"name": "blob.bin", "size": UPLOAD_SIZE, "sha256": hashlib.sha256(data).hexdigest()}
        assert (flask.directory / "uploads" / "blob.bin").read_bytes() == data

    def test_stream_lines(self, flask: Stack) -> None:
        reply = flask.nginx.get("/stream?n=2000")
        assert reply.status == 200
        assert reply.body == expected_lines(2000)

    def test_stream_arrives_line_by_line(self, flask: Stack) -> None:
        # The app sends X-Accel-Buffering: no; three lines 0.5 s apart take at least 1 s.
        delay, body = first_line_delay(flask.nginx, "/stream?n=3&delay=0.5")
        assert body == expected_lines(3)
        assert delay < 0.9, f"the first line took {delay:.2f} s: the response was buffered"

    def test_api_entries_json_round_trip(self, flask: Stack) -> None:
        text = f"API entry \u00e9\u2713 {uuid.uuid4().hex}"
        reply = flask.nginx.request("POST", "/api/entries", body=json.dumps({"name": "e2e api", "text": text}).encode(),
                                    headers={"Content-Type": "application/json"})
        assert reply.status == 201, reply.body[:500]
        created = json_body(reply)
        assert (created["name"], created["text"]) == ("e2e api", text)
        listing = flask.nginx.get("/api/entries")
        assert listing.status == 200
        assert created in json_body(listing)

    def test_50_requests_on_one_keepalive_connection(self, flask: Stack) -> None:
        def expect(path: str, reply: Reply) -> None:
            assert reply.status == 200, (path, reply.body[:500])
            if path == "/hello":
                assert reply.body == b"Hello, World!"

        keepalive_run(flask.nginx, ["/hello", "/api/entries", "/stream?n=20", "/env"], expect)

    def test_mount_prefix_with_split_path_info(self, flask: Stack) -> None:
        env = json_body(flask.nginx.get("/app/env?x=1"))
        assert env["script_root"] == "/app"
        assert env["path"] == "/env"
        assert env["args"] == {"x": ["1"]}
        assert env["url_for_index"] == "/app/"
        assert flask.nginx.get("/app/hello").body == b"Hello, World!"
        form = urlencode({"text": "mounted"}).encode()
        reply = flask.nginx.request("POST", "/app/entries", body=form,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert reply.status == 303
        assert urlsplit(reply.header("Location") or "").path == "/app/"

    def test_plain_fastcgi_params_whole_path_as_script_name(self, flask: Stack) -> None:
        # Without a split nginx sends SCRIPT_NAME=/env and no PATH_INFO; the routes must still match.
        env = json_body(flask.nginx.get("/env?a=b"))
        assert env["script_root"] == ""
        assert env["path"] == "/env"
        assert env["url_for_index"] == "/"
        assert env["method"] == "GET"
        assert env["query_string"] == "a=b"
        assert flask.nginx.get("/api/entries").status == 200
        assert flask.nginx.get("/no/such/route").status == 404

    @pytest.mark.parametrize("prefix", ["", "/unbuffered"], ids=["buffered", "unbuffered"])
    def test_chunked_multipart_upload(self, flask: Stack, prefix: str) -> None:
        # Unbuffered, nginx passes the chunked body on as it comes, with CONTENT_LENGTH "".
        data = payload(UPLOAD_SIZE, seed=2)
        body, content_type = multipart_file("file", "chunked.bin", data)
        reply = flask.nginx.request("POST", f"{prefix}/upload", body=chunks(body),
                                    headers={"Content-Type": content_type})
        assert reply.status == 200, reply.body[:500]
        assert json_body(reply) == {"name": "chunked.bin", "size": UPLOAD_SIZE,
                                    "sha256": hashlib.sha256(data).hexdigest()}

    @pytest.mark.parametrize("prefix", ["", "/unbuffered"], ids=["buffered", "unbuffered"])
    def test_answer_before_reading_a_large_body(self, flask: Stack, prefix: str) -> None:
        # /env never reads the body: the response comes while nginx still sends 20 MiB.
        reply = post_large_body_unread(flask, f"{prefix}/env", seed=3)
        assert json_body(reply)["method"] == "POST"
        # ... and the connection is usable afterwards.
        assert flask.nginx.get(f"{prefix}/hello").body == b"Hello, World!"


# --------------------------------------------------------------------------- ASGI


class TestAsgiBehindNginx:
    """tests/apps/asgi_e2e.py, a plain ASGI app, served by the real CLI, behind nginx."""

    def test_hello(self, asgi: Stack) -> None:
        reply = asgi.nginx.get("/hello")
        assert reply.status == 200
        assert reply.body == b"Hello, ASGI!"

    def test_echo_body_length(self, asgi: Stack) -> None:
        data = payload(UPLOAD_SIZE, seed=4)
        reply = asgi.nginx.request("POST", "/echo", body=data)
        assert reply.status == 200, reply.body[:500]
        echo = json_body(reply)
        assert (echo["length"], echo["sha256"]) == (UPLOAD_SIZE, hashlib.sha256(data).hexdigest())
        assert echo["content_length"] == str(UPLOAD_SIZE)
        assert echo["content_length_header"] == str(UPLOAD_SIZE)

    def test_chunked_body_unbuffered_has_empty_content_length(self, asgi: Stack) -> None:
        data = payload(UPLOAD_SIZE, seed=5)
        reply = asgi.nginx.request("POST", "/unbuffered/echo", body=chunks(data))
        assert reply.status == 200, reply.body[:500]
        echo = json_body(reply)
        assert (echo["length"], echo["sha256"]) == (UPLOAD_SIZE, hashlib.sha256(data).hexdigest())
        assert echo["content_length"] == ""  # nginx does not know the length yet
        assert echo["content_length_header"] is None

    def test_chunked_body_buffered(self, asgi: Stack) -> None:
        data = payload(UPLOAD_SIZE, seed=6)
        reply = asgi.nginx.request("POST", "/echo", body=chunks(data))
        assert reply.status == 200, reply.body[:500]
        echo = json_body(reply)
        assert (echo["length"], echo["sha256"]) == (UPLOAD_SIZE, hashlib.sha256(data).hexdigest())

    def test_stream_lines(self, asgi: Stack) -> None:
        reply = asgi.nginx.get("/stream?n=2000")
        assert reply.status == 200
        assert reply.body == expected_lines(2000)

    def test_stream_arrives_line_by_line(self, asgi: Stack) -> None:
        delay, body = first_line_delay(asgi.nginx, "/unbuffered/stream?n=3&delay=0.5")
        assert body == expected_lines(3)
        assert delay < 0.9, f"the first line took {delay:.2f} s: the response was buffered"

    def test_mount_prefix(self, asgi: Stack) -> None:
        scope = json_body(asgi.nginx.get("/unbuffered/scope?q=1"))
        assert scope == {"path": "/unbuffered/scope", "root_path": "/unbuffered", "method": "GET",
                         "query_string": "q=1"}
        plain = json_body(asgi.nginx.get("/scope"))
        assert (plain["path"], plain["root_path"]) == ("/scope", "")

    @pytest.mark.parametrize("prefix", ["", "/unbuffered"], ids=["buffered", "unbuffered"])
    def test_answer_before_reading_a_large_body(self, asgi: Stack, prefix: str) -> None:
        reply = post_large_body_unread(asgi, f"{prefix}/early", seed=7)
        assert reply.body == b"answered without reading the body\n"
        assert asgi.nginx.get(f"{prefix}/hello").body == b"Hello, ASGI!"

    def test_50_requests_on_one_keepalive_connection(self, asgi: Stack) -> None:
        def expect(path: str, reply: Reply) -> None:
            assert reply.status == 200, (path, reply.body[:500])
            if path.endswith("/hello"):
                assert reply.body == b"Hello, ASGI!"

        keepalive_run(asgi.nginx, ["/hello", "/stream?n=20", "/unbuffered/hello", "/scope"], expect)


# --------------------------------------------------------------------------- several workers


@pytest.fixture
def two_workers(nginx_binary: str, tmp_path: Path) -> Iterator[Stack]:
    with serve_behind_nginx(FLASK_APP, tmp_path, nginx_binary, transport="tcp", keep_conn=True,
                            extra_args=("-w", "2"), env=flask_env(tmp_path)) as stack:
        mark = stack.nginx.log_mark()
        yield stack
        stack.check_healthy(mark)


def test_two_workers_serve_concurrent_requests(two_workers: Stack) -> None:
    paths = ["/hello", "/stream?n=200", "/api/entries", "/env"]

    def fetch(i: int) -> tuple[str, int, bytes]:
        path = paths[i % len(paths)]
        reply = two_workers.nginx.get(path)
        return path, reply.status, reply.body

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fetch, range(40), timeout=120))
    failed = [(path, status, body[:200]) for path, status, body in results if status != 200]
    assert not failed
    assert all(body == b"Hello, World!" for path, _, body in results if path == "/hello")
    assert all(body == expected_lines(200) for path, _, body in results if path.startswith("/stream"))


# ------------------------------------------------------ Django (WSGI, ASGI) and Starlette

FRAMEWORK_APPS = [
    pytest.param("tests.apps.djangoproject.wsgi:application", id="django-wsgi"),
    pytest.param("tests.apps.djangoproject.asgi:application", id="django-asgi"),
    pytest.param("tests.apps.starlette_e2e:app", id="starlette"),
]
FRAMEWORK_COMBINATIONS = [
    pytest.param(("unix", True), id="unix-keep_conn"),
    pytest.param(("tcp", False), id="tcp-no_keep_conn"),
]


@pytest.fixture(scope="module", params=FRAMEWORK_APPS)
def framework_app(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=FRAMEWORK_COMBINATIONS)
def framework_stack(framework_app: str, request: pytest.FixtureRequest, nginx_binary: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    transport, keep_conn = request.param
    directory = tmp_path_factory.mktemp("framework")
    with serve_behind_nginx(framework_app, directory, nginx_binary, transport=transport,
                            keep_conn=keep_conn) as stack:
        yield stack


@pytest.fixture
def framework(framework_stack: Stack) -> Iterator[Stack]:
    mark = framework_stack.nginx.log_mark()
    yield framework_stack
    framework_stack.check_healthy(mark)


class TestFrameworksBehindNginx:
    """``fcgibridge APP`` serves Django (WSGI and ASGI) and Starlette behind nginx."""

    def test_text_page(self, framework: Stack, framework_app: str) -> None:
        reply = framework.nginx.get("/hello" if "starlette" in framework_app else "/")
        assert reply.status == 200
        expected = b"Hello from Starlette" if "starlette" in framework_app else b"Hello from Django\n"
        assert reply.body == expected

    def test_body_of_2mib_arrives_whole(self, framework: Stack, framework_app: str) -> None:
        data = payload(2 * MiB, seed=7)  # under Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        reply = framework.nginx.request("POST", "/echo", body=data,
                                        headers={"Content-Type": "application/octet-stream"})
        assert reply.status == 200, reply.body[:500]
        answer = json_body(reply)
        assert answer["length"] == len(data)
        assert answer["sha256"] == hashlib.sha256(data).hexdigest()

    def test_routes_under_a_mount_prefix(self, framework: Stack, framework_app: str) -> None:
        if "starlette" in framework_app:
            answer = json_body(framework.nginx.get("/app/items/42?q=x"))
            assert answer == {"id": 42, "q": "x", "root_path": "/app",
                              "url": answer["url"]} and answer["url"].endswith("/app/items/42?q=x")
        else:
            answer = json_body(framework.nginx.get("/app/info/42?q=x"))
            assert (answer["number"], answer["script_name"], answer["path"]) == (42, "/app", "/app/info/42")
            assert answer["query"] == {"q": "x"}

    def test_not_found_and_keepalive(self, framework: Stack, framework_app: str) -> None:
        good = "/hello" if "starlette" in framework_app else "/"

        def expect(path: str, reply: Reply) -> None:
            assert reply.status == (200 if path == good else 404), (path, reply.status)

        keepalive_run(framework.nginx, [good, "/no/such/page"] * 10, expect)
