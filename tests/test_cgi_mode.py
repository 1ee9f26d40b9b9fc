"""CGI mode: the CLI as a CGI program, for every kind of app, run as a subprocess with a
CGI environment and through a real CGI server (lighttpd mod_cgi)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import programs
import pytest
from lighttpd import Lighttpd
from support import ROOT, fcgibridge_command

from fcgibridge.cgi import split_response
from fcgibridge.cgi_mode import is_cgi_invocation

APPS = {
    "wsgi": "tests.apps.cgi_apps:wsgi_echo",
    "asgi": "tests.apps.cgi_apps:asgi_echo",
    "accept": "tests/apps/accept_script.py",
    "lua": "tests/apps/lua/hooks.lua",
}


def cgi_env(method: str, path: str, query: str = "", body: bytes = b"", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_", "FCGIBRIDGE_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "REQUEST_URI": path + (f"?{query}" if query else ""), "SERVER_NAME": "localhost", "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
    })
    if body:
        env.update(CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="application/x-www-form-urlencoded")
    env.update(extra)
    return env


def run_cgi(app: str, env: dict[str, str], body: bytes = b"", *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(fcgibridge_command(app, *args), cwd=ROOT, env=env, input=body, capture_output=True,
                          timeout=30)


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_wsgi_and_asgi_apps_answer_one_request_on_stdout(kind: str) -> None:
    body = b"name=value"
    proc = run_cgi(APPS[kind], cgi_env("POST", "/echo", "q=1", body), body)
    assert proc.returncode == 0, proc.stderr
    head, data = split_response(proc.stdout)
    assert (head.status, head.get("X-Kind")) == (201, kind)
    assert data == b"POST /echo q=1 name=value"
    if kind == "wsgi":
        assert b"printed by the WSGI app" in proc.stderr


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_a_body_of_many_stdin_records_arrives_whole(kind: str) -> None:
    body = bytes(range(256)) * 20_000  # 5 MB: sent in 64 KiB pieces while the app answers
    proc = run_cgi(APPS[kind], cgi_env("POST", "/echo", "", body), body)
    assert proc.returncode == 0, proc.stderr
    head, data = split_response(proc.stdout)
    assert head.status == 201 and data == b"POST /echo  " + body


@pytest.mark.parametrize("kind", ["accept", "lua"])
def test_accept_style_scripts_answer_one_request_on_stdout(kind: str) -> None:
    proc = run_cgi(APPS[kind], cgi_env("POST", "/body", body=b"a=1&b=2"), b"a=1&b=2")
    assert proc.returncode == 0, proc.stderr
    head, data = split_response(proc.stdout)
    assert (head.status, data) == (200, b"a=1&b=2")
    proc = run_cgi(APPS[kind], cgi_env("GET", "/print"))
    head, data = split_response(proc.stdout)
    assert head.status == 200 and data.startswith(b"uri=/print count=1")
    assert b"a line printed by accept" in proc.stderr and b"printed" not in proc.stdout


@pytest.mark.parametrize("kind", ["accept", "lua"])
def test_cgi_mode_drops_http_proxy_from_getenv(kind: str) -> None:
    proc = run_cgi(APPS[kind], cgi_env("GET", "/env", "HTTP_PROXY,HTTP_X_A", HTTP_PROXY="http://evil:1",
                                       HTTP_X_A="b"))
    _, data = split_response(proc.stdout)
    assert data.decode().splitlines()[0] in ("HTTP_PROXY=None", "HTTP_PROXY=nil")
    assert data.decode().splitlines()[1] == "HTTP_X_A=b"


@pytest.mark.parametrize("kind", ["accept", "lua"])
def test_a_malformed_response_is_a_500_in_cgi_mode_too(kind: str) -> None:
    proc = run_cgi(APPS[kind], cgi_env("GET", "/bad-status"))
    head, _ = split_response(proc.stdout)
    assert head.status == 500 and b"bad Status header" in proc.stderr


def test_start_failing_in_cgi_mode_exits_with_its_code() -> None:
    proc = run_cgi(APPS["lua"], cgi_env("GET", "/", START_CODE="5"))
    assert proc.returncode == 5 and proc.stdout == b""
    assert b"start function returned non-zero value: 5" in proc.stderr


def test_the_cgi_flag_debugs_a_script_on_the_command_line() -> None:
    env = {k: v for k, v in cgi_env("GET", "/hello").items() if k != "GATEWAY_INTERFACE"}
    proc = run_cgi(APPS["lua"], env, b"", "--cgi")
    head, data = split_response(proc.stdout)
    assert head.status == 200 and data.startswith(b"uri=/hello count=1")
    assert proc.stdout.startswith(b"Status: 200 OK\r\n")


@pytest.mark.parametrize(("kind", "path"), [("accept", "/argv"), ("lua", "/args")])
def test_script_arguments_follow_the_script(kind: str, path: str) -> None:
    proc = run_cgi(APPS[kind], cgi_env("GET", path), b"", "one", "two words")
    assert split_response(proc.stdout)[1] == b"one,two words", proc.stderr


@pytest.mark.parametrize(("version", "expected"), [("5.1", b"Lua 5.1"), ("luajit2.1", b"Lua 5.1"),
                                                   ("5.3", b"Lua 5.3"), ("5.4", b"Lua 5.4")])
def test_lua_version_picks_the_runtime(version: str, expected: bytes) -> None:
    proc = run_cgi("tests/apps/lua/version.lua", cgi_env("GET", "/"), b"", "--lua-version", version)
    assert split_response(proc.stdout)[1].startswith(expected), proc.stderr
    assert (b"LuaJIT" in split_response(proc.stdout)[1]) == version.startswith("luajit")


def test_error_log_from_errlog_gets_what_scripts_print(tmp_path: Path) -> None:
    log = tmp_path / "errors.log"
    proc = run_cgi(APPS["accept"], cgi_env("GET", "/print", ERRLOG=str(log)))
    assert split_response(proc.stdout)[0].status == 200
    assert "a line printed by accept" in log.read_text() and b"printed" not in proc.stderr


def test_cgi_invocation_is_detected_by_gateway_interface_and_a_non_socket_stdin(tmp_path: Path) -> None:
    import socket

    assert not is_cgi_invocation({})
    with (tmp_path / "f").open("w") as f:
        assert is_cgi_invocation({"GATEWAY_INTERFACE": "CGI/1.1"}, f.fileno())
    with socket.socket() as sock:
        assert not is_cgi_invocation({"GATEWAY_INTERFACE": "CGI/1.1"}, sock.fileno())


# ------------------------------------------------------------------ a real CGI server


@pytest.fixture
def lighttpd(tmp_path: Path) -> Iterator[Lighttpd]:
    binary = programs.find("lighttpd")
    server = Lighttpd(tmp_path / "lighttpd", binary)
    for kind, app in APPS.items():
        server.add_cgi(f"{kind}.cgi", "#!/bin/sh\n"
                       f"export PYTHONPATH={ROOT}\n"
                       f"cd {ROOT}\n"
                       f"exec {sys.executable} -m fcgibridge {app}\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
def test_every_kind_of_app_through_lighttpd_mod_cgi(lighttpd: Lighttpd) -> None:
    for kind in ("wsgi", "asgi"):
        status, headers, body = lighttpd.request("POST", f"/{kind}.cgi/echo?q=2", body=b"x=y",
                                                 headers={"Content-Type": "text/plain"})
        path = "/echo" if kind == "wsgi" else "/asgi.cgi/echo"  # ASGI's path includes root_path (SCRIPT_NAME)
        assert (status, headers["X-Kind"], body) == (201, kind, f"POST {path} q=2 x=y".encode()), lighttpd.error_log()
    for kind in ("accept", "lua"):
        status, headers, body = lighttpd.request("POST", f"/{kind}.cgi/body", body=b"posted")
        assert (status, body) == (200, b"posted"), lighttpd.error_log()
        status, headers, body = lighttpd.request("GET", f"/{kind}.cgi/redirect")
        assert (status, headers["Location"]) == (302, "/elsewhere")
        status, _, body = lighttpd.request("GET", f"/{kind}.cgi/env?REQUEST_METHOD,SCRIPT_NAME,HTTP_PROXY",
                                           headers={"Proxy": "http://evil:1"})
        lines = body.decode().splitlines()
        assert lines[:2] == ["REQUEST_METHOD=GET", f"SCRIPT_NAME=/{kind}.cgi"]
        assert lines[2] in ("HTTP_PROXY=None", "HTTP_PROXY=nil")
