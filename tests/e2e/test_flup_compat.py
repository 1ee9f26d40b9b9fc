"""fcgibridge.compat.flup on real processes: a flup-style ``.fcgi`` script whose one changed
line is its import, run by lighttpd (``bin-path``, fd 0), by spawn-fcgi (fd 0, TCP and
unix), and on its own ``bindAddress`` (TCP, unix path with umask); and ``FCGIApp`` in
front of a real PHP-FPM. The snippets run are those of docs/migrating-from-flup.md.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import programs
import pytest
from lighttpd import lighttpd_fastcgi, log_problems
from nginx import unix_socket_path
from phpfpm import php_fpm
from snippets import doc_snippet
from support import (
    ROOT,
    alive,
    descendants,
    free_port,
    listening_socket,
    serve,
    stop_process,
    wait_for_port,
    wait_until,
)

from fcgibridge.client import FastCGIClient
from fcgibridge.compat.flup import FCGIApp, WSGIServer
from fcgibridge.errors import UserError

pytestmark = pytest.mark.e2e

PAGE = "migrating-from-flup.md"
SCRIPT = ROOT / "tests" / "apps" / "flup_style.fcgi"
FLUP_IMPORT = "from flup.server.fcgi import WSGIServer\n"
COMPAT_IMPORT = "from fcgibridge.compat.flup import WSGIServer\n"


def script_env(**extra: str) -> dict[str, str]:
    """The script's environment: the venv's Python first on PATH (its ``#!/usr/bin/env
    python3`` must find fcgibridge), the repository on PYTHONPATH."""
    venv_bin = sysconfig.get_path("scripts")
    return {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(ROOT), **extra}


def test_the_import_line_is_the_only_change_from_the_flup_script() -> None:
    text = SCRIPT.read_text()
    assert text.count(COMPAT_IMPORT) == 1
    flup_version = text.replace(COMPAT_IMPORT, FLUP_IMPORT)
    changed = [line for line in difflib.unified_diff(flup_version.splitlines(), text.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed == ["-" + FLUP_IMPORT.strip(), "+" + COMPAT_IMPORT.strip()]
    assert text.startswith("#!/usr/bin/env python3\n") and os.access(SCRIPT, os.X_OK)
    assert "WSGIServer(application, environ=" in text


# ------------------------------------------------------------------ the script on its own


@contextlib.contextmanager
def running_script(tmp_path: Path, bind: str, *, wait_for: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The script serving on ``bind`` (FLUP_BIND) until the block ends; then SIGTERM, and
    it must leave with status 0, having written what run() returned to ``tmp_path/result``."""
    log = (tmp_path / "script.log").open("wb")
    proc = subprocess.Popen([str(SCRIPT)], env=script_env(FLUP_BIND=bind, FLUP_RESULT=str(tmp_path / "result"), **env),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(wait_for, proc=proc)
        yield proc
    finally:
        stop_process(proc)
        log.close()


def json_of(response: Any) -> Any:
    assert response.status == 200, (response.status, response.body[:500])
    return json.loads(response.body)


def script_log(tmp_path: Path) -> str:
    return (tmp_path / "script.log").read_text(errors="replace")


def test_bind_address_tcp_serves_environ_and_post_and_sigterm_ends_run(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with running_script(tmp_path, address, wait_for=address) as proc:
        client = FastCGIClient(address)
        answer = json_of(client.request("GET", "/app/hello?x=1"))
        assert answer["hello"] == "from a flup-style script"
        assert answer["app_name"] == "flup-style"  # WSGIServer(environ=...)
        assert answer["query"] == "x=1" and answer["multithread"] is True
        assert answer["pid"] == proc.pid  # one process: flup's threaded server has no workers
        # setproctitle (in the test extra) renames it, after the script.
        title = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert title.startswith(b"fcgibridge: flup_style.fcgi (flup WSGIServer)"), title
        body = b"name=flup&" + b"x" * 200_000
        posted = json_of(client.request("POST", "/app/post", body=body,
                                headers={"Content-Type": "application/x-www-form-urlencoded"}))
        assert posted == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                          "text": body[:64].decode()}
        failed = client.request("GET", "/app/boom")
        assert failed.status == 500
        assert b"Traceback" not in failed.body and b"broke on purpose" not in failed.body
    assert proc.returncode == 0, script_log(tmp_path)
    assert (tmp_path / "result").read_text() == "False"  # run() after SIGTERM, as flup's
    assert "RuntimeError: the app broke on purpose" in script_log(tmp_path)  # the traceback is logged


def test_debug_answers_the_traceback_page(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with running_script(tmp_path, address, wait_for=address, FLUP_DEBUG="1"):
        client = FastCGIClient(address)
        failed = client.request("GET", "/boom")
        assert client.request("GET", "/").status == 200  # still serving
    assert failed.status == 500
    assert failed.headers.get("Content-Type") == "text/html; charset=utf-8"
    page = failed.body.decode()
    assert "RuntimeError: the app broke on purpose" in page
    assert "Traceback (most recent call last)" in page and "flup_style.fcgi" in page


@pytest.mark.parametrize(("signum", "returned"), [(signal.SIGHUP, "True"), (signal.SIGINT, "False")])
def test_run_returns_true_after_sighup_only(tmp_path: Path, signum: int, returned: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    with running_script(tmp_path, address, wait_for=address) as proc:
        assert FastCGIClient(address).request("GET", "/").status == 200
        proc.send_signal(signum)
        proc.wait(15)
    assert proc.returncode == 0, script_log(tmp_path)
    assert (tmp_path / "result").read_text() == returned


def test_bind_address_unix_path_with_umask(tmp_path: Path) -> None:
    path = unix_socket_path(tmp_path)
    with running_script(tmp_path, str(path), wait_for=f"unix:{path}", FLUP_UMASK="007"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o770  # what umask 007 leaves of 0777
        assert json_of(FastCGIClient(f"unix:{path}").request("GET", "/"))["app_name"] == "flup-style"
    assert not path.exists()  # removed as run() returned


def test_not_under_fastcgi_it_answers_one_cgi_request(tmp_path: Path) -> None:
    """fd 0 a pipe and no bindAddress: flup's CGI fallback."""
    env = script_env(GATEWAY_INTERFACE="CGI/1.1", REQUEST_METHOD="POST", REQUEST_URI="/post", PATH_INFO="/post",
                     SCRIPT_NAME="", QUERY_STRING="", CONTENT_LENGTH="5", SERVER_NAME="localhost",
                     SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1")
    env.pop("FLUP_BIND", None)
    done = subprocess.run([str(SCRIPT)], input=b"hello", env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200 OK"), done.stdout
    assert json.loads(body)["text"] == "hello"


def streaming_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """Fails while making its first body byte (``/early``) or after it (``/late``)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/early":
        raise ValueError("no first byte")
    yield b"first part\n"
    if environ["PATH_INFO"] == "/late":
        raise ValueError("after the first byte")
    yield b"second part\n"


def test_debug_page_until_the_first_byte_then_the_response_is_cut_short() -> None:
    with serve(WSGIServer(streaming_app, debug=True).app()) as server:
        client = FastCGIClient(server.address)
        whole = client.request("GET", "/")
        early = client.request("GET", "/early")
        late = client.request("GET", "/late")
    assert whole.status == 200 and whole.body == b"first part\nsecond part\n" and whole.app_status == 0
    assert early.status == 500 and b"ValueError: no first byte" in early.body
    # The head was out: no page any more, the body ends short and appStatus says it failed.
    assert late.status == 200 and late.body == b"first part\n" and late.app_status == 1


# --------------------------------------------------------------------- under spawn-fcgi


def spawn(snippet: str, replacements: Mapping[str, str]) -> int:
    """Run the docs' spawn-fcgi command (it starts the script with the socket on fd 0 and
    exits); the script's PID."""
    text = doc_snippet(PAGE, snippet, {"/srv/app/app.fcgi": str(SCRIPT), **replacements})
    argv = shlex.split(text)
    done = subprocess.run([programs.find("spawn-fcgi"), *argv[1:]], env=script_env(), capture_output=True,
                          text=True, timeout=30)
    found = re.search(r"child spawned successfully: PID: (\d+)", done.stdout + done.stderr)
    assert done.returncode == 0 and found, done.stdout + done.stderr
    return int(found.group(1))


def stop_spawned(pid: int) -> None:
    """SIGTERM, and it must be gone soon (it is not our child: spawn-fcgi exited)."""
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not alive(pid), 15, f"the script {pid} outlived SIGTERM")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_spawn_fcgi(tmp_path: Path, transport: str) -> None:
    if transport == "tcp":
        port = free_port()
        address = f"127.0.0.1:{port}"
        pid = spawn("flup-spawn-fcgi-tcp", {"9000": str(port)})
    else:
        path = unix_socket_path(tmp_path)
        address = f"unix:{path}"
        pid = spawn("flup-spawn-fcgi-unix", {"/run/app/app.sock": str(path)})
    try:
        if transport == "unix":  # spawn-fcgi's -M: the script takes the socket on fd 0 as it is
            assert stat.S_IMODE(path.stat().st_mode) == 0o660
        wait_for_port(address)
        client = FastCGIClient(address)
        answer = json_of(client.request("GET", "/hello"))
        assert answer["pid"] == pid and answer["app_name"] == "flup-style"
        assert json_of(client.request("POST", "/post", body=b"spawned"))["text"] == "spawned"
        assert client.request("GET", "/boom").status == 500
    finally:
        stop_spawned(pid)


# ------------------------------------------------------------------------ under lighttpd


def test_lighttpd_bin_path_starts_the_script(tmp_path: Path) -> None:
    socket = unix_socket_path(tmp_path)
    body = doc_snippet(PAGE, "flup-lighttpd", {
        "/run/app/app.sock": str(socket), "/srv/app/app.fcgi": str(SCRIPT),
        "/srv/venv/bin": sysconfig.get_path("scripts"),
        '"bin-environment" => (': f'"bin-environment" => ("PYTHONPATH" => "{ROOT}", ',
    })
    server = lighttpd_fastcgi(tmp_path / "lighttpd", body)
    server.start()
    try:
        assert server.proc is not None
        lighttpd_pid = server.proc.pid
        wait_until(lambda: descendants(lighttpd_pid), 20, "lighttpd started no script")
        backends = descendants(lighttpd_pid)
        reply = server.get("/app/hello?from=lighttpd")
        assert reply.status == 200, reply.body
        answer = json.loads(reply.body)
        assert answer["app_name"] == "flup-style" and answer["query"] == "from=lighttpd"
        assert answer["pid"] in backends
        posted = server.request("POST", "/app/post", b"through lighttpd", {"Content-Type": "text/plain"})
        assert json.loads(posted.body)["text"] == "through lighttpd"
        assert server.get("/app/boom").status == 500
        server.proc.send_signal(signal.SIGTERM)  # lighttpd stops the backend it started
        server.proc.wait(10)
        wait_until(lambda: not any(alive(pid) for pid in backends), 15, "the script outlived lighttpd")
    finally:
        server.stop()
    assert not log_problems(server)
    # The script's stderr is lighttpd's: the app error's traceback is there, not in server.errorlog.
    assert "RuntimeError: the app broke on purpose" in server.output_path.read_text()


# ------------------------------------------------------------------------- the arguments


def test_prefork_and_unknown_arguments_are_refused_by_name() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:  # never called: nothing is served
        raise AssertionError("served")

    with pytest.raises(TypeError, match=r"maxChildren= is an argument of flup's prefork server.*fcgibridge -w"):
        WSGIServer(app, maxChildren=10)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'maxthreads'"):
        WSGIServer(app, maxthreads=4)
    with pytest.raises(TypeError, match=r"bindAddress must be a unix socket path \(str\) or a \(host, port\)"):
        WSGIServer(app, bindAddress=9000)  # type: ignore[arg-type]
    assert WSGIServer(app, maxThreads=4, minSpare=1, maxSpare=5).config().threads == 4
    assert WSGIServer(app, multithreaded=False).config().threads == 1
    assert WSGIServer(app, bindAddress=("", 9000)).config().bind == ["0.0.0.0:9000"]
    assert WSGIServer(app).config().bind == ["fd://0"]
    with pytest.raises(NotImplementedError, match="start it yourself"):
        FCGIApp(command="php-cgi")
    with pytest.raises(TypeError, match="connect= is missing"):
        FCGIApp()


def test_an_address_in_use_is_a_user_error_naming_it() -> None:
    with contextlib.closing(listening_socket(("127.0.0.1", 0))) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"cannot listen on 127.0.0.1:{port}: address already in use"):
            WSGIServer(streaming_app, bindAddress=("127.0.0.1", port)).run()


# ----------------------------------------------------------------- FCGIApp and PHP-FPM


def wsgi_call(app: Any, method: str, path: str, body: bytes = b"", **environ: str) -> tuple[str, dict[str, str], bytes]:
    """One WSGI call of *app*: its status, headers and body."""
    env: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(body),
                           "CONTENT_LENGTH": str(len(body)) if body else "", **environ}
    setup_testing_defaults(env)
    started: list[Any] = []
    chunks = app(env, lambda status, headers, exc_info=None: started.append((status, headers)))
    try:
        data = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    status, headers = started[0]
    return status, dict(headers), data


@pytest.fixture(scope="module")
def fpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with php_fpm(tmp_path_factory.mktemp("php-fpm")) as server:
        yield server


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_fcgiapp_forwards_get_and_post_to_php_fpm(fpm: Any, where: str) -> None:
    connect: Any = ("127.0.0.1", int(fpm.tcp.rpartition(":")[2])) if where == "tcp" else fpm.unix[len("unix:"):]
    app = FCGIApp(connect=connect, filterEnviron=False)
    try:
        script = fpm.script("info.php")
        status, headers, body = wsgi_call(app, "GET", "/info.php", SCRIPT_FILENAME=script, QUERY_STRING="a=1",
                                          HTTP_X_TOKEN="t")
        assert status == "200 OK" and headers["Content-Type"] == "application/json"
        seen = json.loads(body)
        assert seen["method"] == "GET" and seen["query"] == {"a": "1"} and seen["token"] == "t"
        assert seen["script"] == script
        payload = b"name=flup&" + b"y" * 100_000
        status, _, body = wsgi_call(app, "POST", "/info.php", payload, SCRIPT_FILENAME=script,
                                    CONTENT_TYPE="application/x-www-form-urlencoded")
        seen = json.loads(body)
        assert status == "200 OK" and seen["length"] == len(payload)
        assert seen["sha256"] == hashlib.sha256(payload).hexdigest() and seen["post"]["name"] == "flup"
    finally:
        app.close()


def test_fcgiapp_filter_environ(fpm: Any) -> None:
    """True sends only flup's variables (no SCRIPT_FILENAME: PHP-FPM takes PATH_TRANSLATED);
    False sends every upper-case one."""
    script = fpm.script("info.php")
    extra = {"SCRIPT_FILENAME": "/nonexistent.php", "PATH_TRANSLATED": script, "HTTP_X_TOKEN": "kept"}
    filtered = FCGIApp(connect=fpm.unix[len("unix:"):])
    assert "SCRIPT_FILENAME" not in filtered.params({**extra, "REQUEST_METHOD": "GET", "wsgi.input": None})
    status, _, body = wsgi_call(filtered, "GET", "/info.php", **extra)
    assert status == "200 OK", body
    assert json.loads(body)["token"] == "kept"
    unfiltered = FCGIApp(connect=fpm.unix[len("unix:"):], filterEnviron=False)
    status, _, body = wsgi_call(unfiltered, "GET", "/info.php", **extra)
    assert status.startswith("404"), (status, body)  # the SCRIPT_FILENAME it now sends does not exist
    for app in (filtered, unfiltered):
        app.close()


def test_fcgiapp_unreachable_backend_is_a_502(tmp_path: Path) -> None:
    app = FCGIApp(connect=str(tmp_path / "nobody.sock"))
    status, _, body = wsgi_call(app, "GET", "/")
    assert status == "502 Bad Gateway" and body == b"Bad Gateway\n"
