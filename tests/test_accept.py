"""Accept-style scripts (Python and Lua) through real sockets: the contract of accept()."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RawConnection, serve

from fcgibridge import AcceptApp
from fcgibridge.accept import AcceptError, LogWriter, hook_code
from fcgibridge.lua import load_lua
from fcgibridge.process.apps import AcceptHooks

APPS = Path(__file__).resolve().parent / "apps"


def python_app() -> AcceptApp:
    module = importlib.import_module("tests.apps.accept_script")
    module.state.update(count=0, generation=0)
    return AcceptApp(module)


def lua_app() -> AcceptApp:
    return load_lua(APPS / "lua" / "hooks.lua", args=["one", "two"])


@pytest.fixture(params=["python", "lua"])
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    app = python_app() if request.param == "python" else lua_app()
    with serve(app, "accept") as srv:
        yield srv


def get(server: Any, path: str, *, body: bytes | None = None,
        headers: tuple[tuple[str, str], ...] = ()) -> tuple[Any, bytes]:
    with RawConnection(server.address) as conn:
        request_id = conn.begin("POST" if body is not None else "GET", path, body=body or b"", headers=headers)
        conn.wait_end(request_id)
        head, data = conn.response(request_id)
        return head, data


def test_accept_returns_the_response_and_keeps_state(server: Any) -> None:
    head, body = get(server, "/hello")
    assert (head.status, head.reason) == (200, "OK")
    assert head.get("Content-Type") == "text/plain"
    assert body == b"uri=/hello count=1 generation=0"
    assert get(server, "/again?x=1")[1] == b"uri=/again?x=1 count=2 generation=0"


def test_location_without_status_is_302_and_plain_newlines_are_accepted(server: Any) -> None:
    head, body = get(server, "/redirect")
    assert (head.status, head.get("Location"), body) == (302, "/elsewhere", b"")


def test_python_accept_may_return_bytes() -> None:
    with serve(python_app(), "accept") as srv:
        head, body = get(srv, "/bytes")
    assert (head.status, head.reason, body) == (201, "Created", b"\x00\xff")


def test_the_body_is_read_from_stdin(server: Any) -> None:
    assert get(server, "/body", body=b"name=value&x=\xc3\xa9")[1] == b"name=value&x=\xc3\xa9"


def test_getenv_sees_each_request_and_the_process_environment(server: Any) -> None:
    _, body = get(server, "/env?REQUEST_URI,REQUEST_METHOD,HTTP_X_TOKEN,PATH",
                     headers=(("X-Token", "abc"),))
    lines = dict(line.split("=", 1) for line in body.decode().splitlines())
    assert lines["REQUEST_URI"] == "/env?REQUEST_URI,REQUEST_METHOD,HTTP_X_TOKEN,PATH"
    assert lines["REQUEST_METHOD"] == "GET"
    assert lines["HTTP_X_TOKEN"] == "abc"
    assert lines["PATH"] not in ("None", "nil", "")


def test_httpoxy_the_proxy_header_never_reaches_getenv(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://process-setting:3128")
    body = get(server, "/env?HTTP_PROXY,HTTP_X_OTHER", headers=(("Proxy", "http://evil:666"), ("X-Other", "1")))[1]
    assert body.decode().splitlines()[0] in ("HTTP_PROXY=None", "HTTP_PROXY=nil")
    assert body.decode().splitlines()[1] == "HTTP_X_OTHER=1"


def test_getenv_is_right_for_every_one_of_many_concurrent_requests(server: Any) -> None:
    results: dict[int, bytes] = {}

    def one(n: int) -> None:
        results[n] = get(server, f"/slow?0.02&n={n}")[1]

    threads = [threading.Thread(target=one, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 12
    for n, body in results.items():
        assert body.startswith(f"uri=/slow?0.02&n={n} ".encode()), body


def test_print_goes_to_the_log_never_into_the_response(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fcgibridge.app"):
        head, body = get(server, "/print")
    assert head.status == 200 and body.startswith(b"uri=/print ")
    assert b"printed" not in body
    assert any("a line printed by accept" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("path", "logged"), [
    ("/bad-type", "expected a string, got int 42"),
    ("/no-separator", "no blank line between headers and body"),
    ("/bad-status", "bad Status header 'abc'"),
    ("/raise", "accept failed on purpose"),
])
def test_a_malformed_return_or_an_error_is_a_500_and_a_log_line_then_serving_goes_on(
        server: Any, caplog: pytest.LogCaptureFixture, path: str, logged: str) -> None:
    with caplog.at_level(logging.INFO, logger="fcgibridge.app"):
        head, body = get(server, path)
    assert head.status == 500 and body == b"Internal Server Error\n"
    assert any(logged in r.getMessage() or logged in (r.exc_text or "") for r in caplog.records), caplog.text
    assert get(server, "/after")[0].status == 200


def test_a_lua_error_is_logged_with_lua_s_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with serve(lua_app(), "lua") as srv, caplog.at_level(logging.ERROR, logger="fcgibridge.app"):
        assert get(srv, "/raise")[0].status == 500
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "hooks.lua:" in message and "accept failed on purpose" in message and "stack traceback:" in message


def test_lua_arg_holds_the_script_arguments() -> None:
    with serve(lua_app(), "lua") as srv:
        assert get(srv, "/args")[1] == b"one,two"


def test_accept_may_take_the_environ_instead() -> None:
    class Script:
        def accept(self, environ: dict[str, Any]) -> str:
            data = environ["wsgi.input"].read()
            return f"Status: 200 OK\r\n\r\n{environ['PATH_INFO']} {data.decode()}"

    with serve(AcceptApp(Script()), "accept") as srv:
        assert get(srv, "/x", body=b"payload")[1] == b"/x payload"


def test_hooks_are_optional_and_return_codes_are_normalised() -> None:
    class Script:
        def accept(self) -> str:
            return "\r\n"

    app = AcceptApp(Script())
    assert (app.start(), app.restart(), app.stop()) == (0, 0, 0)
    assert not app.has_hook("stop")
    assert [hook_code("x", v) for v in (None, False, 0, 3, 2.0, True)] == [0, 0, 0, 3, 2, 1]
    with pytest.raises(TypeError):
        AcceptApp(object())
    assert issubclass(AcceptError, Exception)


def test_log_writer_sends_whole_lines(caplog: pytest.LogCaptureFixture) -> None:
    writer = LogWriter()
    with caplog.at_level(logging.INFO, logger="fcgibridge.app"):
        writer.write("a\nb")
        writer.write("c\n")
        writer.write("tail")
        writer.flush()
    assert [r.getMessage() for r in caplog.records] == ["a", "bc", "tail"]
    writer.close()


@pytest.mark.parametrize("make", [python_app, lua_app])
def test_sync_mode_serves_accept_style_scripts_too(make: Any) -> None:
    with serve(make(), "accept", sync=True) as srv:
        assert get(srv, "/one")[1] == b"uri=/one count=1 generation=0"
        assert get(srv, "/body", body=b"xyz")[1] == b"xyz"
        assert get(srv, "/raise")[0].status == 500
        assert isinstance(srv.worker.lifecycle, AcceptHooks)  # its hooks are wired
