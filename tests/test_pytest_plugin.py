"""The pytest plugin (fcgibridge/pytest_plugin.py), run as a user runs it: test files in a
temporary directory, pytest in a subprocess that loads the plugin through its entry point,
against a real PHP-FPM and real fcgibridge servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import programs
import pytest
from snippets import snippet
from support import alive

pytest_plugins = ["pytester"]

#: The inner tests note every process they saw here; the outer test checks they are gone.
PIDS_FILE = "pids.json"

NOTE_PIDS = f'''
import json, pathlib

import pytest


@pytest.fixture
def note():
    return note_pids


def note_pids(*pids):
    """Record these processes and their children, for the check that teardown ended them."""
    found = []
    for pid in pids:
        children = pathlib.Path(f"/proc/{{pid}}/task/{{pid}}/children").read_text().split()
        found += [pid, *map(int, children)]
    path = pathlib.Path({PIDS_FILE!r})
    path.write_text(json.dumps((json.loads(path.read_text()) if path.exists() else []) + found))
'''


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a subprocess (the plugin loaded by its entry point), with the php-fpm the
    project's tests use (tests/programs.py)."""
    return pytester.runpytest_subprocess(f"--php-fpm={programs.find('php-fpm')}", "-p", "no:cacheprovider",
                                         "-W", "error", *args)


def assert_all_gone(pytester: pytest.Pytester, at_least: int) -> None:
    pids = json.loads((pytester.path / PIDS_FILE).read_text())
    assert len(pids) >= at_least, pids
    assert [pid for pid in pids if alive(pid)] == []


def test_php_script_through_the_client(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NOTE_PIDS)
    pytester.makepyfile(test_php='''
        import pytest


        def test_hi(php_fpm, fastcgi_client, note):
            (php_fpm.root / "index.php").write_text('<?php echo "hi";')
            response = fastcgi_client().request("GET", "/index.php")
            assert (response.status, response.body) == (200, b"hi")
            assert php_fpm.address.startswith("unix:")
            assert php_fpm.script("index.php") == str(php_fpm.root / "index.php")
            note(php_fpm.pid)


        def test_hi_through_httpx(php_fpm, fastcgi_httpx):
            script = '<?php header("X-Method: " . $_SERVER["REQUEST_METHOD"]); echo "hi";'
            (php_fpm.root / "index.php").write_text(script)
            response = fastcgi_httpx().post("/index.php?x=1", data={"a": "b"})
            assert (response.status_code, response.headers["x-method"], response.text) == (200, "POST", "hi")


        def test_log_holds_what_php_logged(php_fpm, fastcgi_client):
            (php_fpm.root / "log.php").write_text('<?php error_log("written by the script"); echo "ok";')
            assert fastcgi_client(php_fpm).request("GET", "/log.php").body == b"ok"
            assert "ready to handle connections" in php_fpm.log
            assert "written by the script" in php_fpm.wait_for_log("written by the script")
            with pytest.raises(AssertionError, match="'never written' not in PHP-FPM's log after 0.1 s"):
                php_fpm.wait_for_log("never written", timeout=0.1)


        @pytest.mark.php_fpm(ini={"memory_limit": "77M"}, system_ini=False)
        def test_marker_sets_php_ini_values(php_fpm, fastcgi_client):
            (php_fpm.root / "ini.php").write_text('<?php echo ini_get("memory_limit");')
            assert fastcgi_client().request("GET", "/ini.php").body == b"77M"


        def test_factory_with_another_root(php_fpm_factory, fastcgi_client, tmp_path, note):
            site = tmp_path / "site"
            site.mkdir()
            (site / "page.php").write_text('<?php echo $_SERVER["DOCUMENT_ROOT"], " ", $_GET["q"];')
            first, second = php_fpm_factory(root=site), php_fpm_factory(root=site)
            assert first.address != second.address and first.root == site
            for server in (first, second):
                assert fastcgi_client(server).request("GET", "/page.php?q=1").body == f"{site} 1".encode()
            note(first.pid, second.pid)


        def test_refused_config_says_why(php_fpm_factory):
            with pytest.raises(RuntimeError, match=r"(?s)PHP-FPM .* did not start: process exited .*max_children"):
                php_fpm_factory(children=0)
    ''')
    result = run(pytester)
    result.assert_outcomes(passed=6)
    assert_all_gone(pytester, at_least=3 * 3)  # three masters, two children each


@pytest.mark.parametrize("how", ["option", "env"])
def test_missing_php_fpm_fails_saying_how_to_install_it(pytester: pytest.Pytester, how: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_php='''
        def test_needs_php(php_fpm):
            raise AssertionError("not reached")


        def test_does_not(fastcgi_client):
            pass
    ''')
    if how == "option":
        result = pytester.runpytest_subprocess("--php-fpm=/nonexistent", "-p", "no:cacheprovider")
        named = "--php-fpm=/nonexistent"
    else:
        monkeypatch.setenv("FCGIBRIDGE_PHP_FPM", "/nonexistent")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        named = "FCGIBRIDGE_PHP_FPM=/nonexistent"
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*php-fpm is needed by this test, and {named} is no executable file. "
                                 "Install it (Debian/Ubuntu: apt-get install php-fpm;*"])
    assert "not reached" not in result.stdout.str()


def test_wsgi_and_asgi_apps_in_a_thread(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_apps='''
        import json

        import flask
        import pytest

        site = flask.Flask(__name__)


        @site.post("/hello/<name>")
        def hello(name):
            return {"hello": name, "body": flask.request.get_data(as_text=True)}


        async def asgi_app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"asgi")]})
            await send({"type": "http.response.body", "body": scope["path"].encode()})


        def test_flask(fastcgi_server, fastcgi_client):
            server = fastcgi_server(site)
            assert server.address.startswith("unix:")
            response = fastcgi_client(server).request("POST", "/hello/you", body=b"data")
            assert response.status == 200 and json.loads(response.body) == {"hello": "you", "body": "data"}


        @pytest.mark.parametrize("interface", ["auto", "asgi"])
        def test_asgi(fastcgi_server, fastcgi_client, interface):
            server = fastcgi_server(asgi_app, interface)
            response = fastcgi_client(server.address).request("GET", "/path")
            assert (response.status, response.header("x-app"), response.body) == (201, "asgi", b"/path")


        def test_httpx(fastcgi_server, fastcgi_httpx):
            client = fastcgi_httpx(fastcgi_server(site))
            response = client.post("/hello/httpx", content=b"data")
            assert response.json() == {"hello": "httpx", "body": "data"}


        def test_server_options(fastcgi_server, fastcgi_client):
            server = fastcgi_server(site, ping_path="/ping")
            assert fastcgi_client(server).request("GET", "/ping").body == b"pong\\n"


        def test_not_an_app(fastcgi_server):
            with pytest.raises(Exception, match="not a WSGI or ASGI application"):
                fastcgi_server(42)


        def test_not_a_target(fastcgi_client):
            with pytest.raises(TypeError, match="a FastCGI address .* or a server with .address, not 42"):
                fastcgi_client(42)
    ''')
    run(pytester).assert_outcomes(passed=7)


def test_app_in_a_real_fcgibridge_process(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NOTE_PIDS)
    pytester.makepyfile(myapp='''
        import os


        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(os.getpid()).encode()]
    ''', test_process='''
        import pytest


        def test_two_workers(fastcgi_server, fastcgi_client, note):
            server = fastcgi_server("myapp:app", process=True, workers=2, preload=True)
            client = fastcgi_client(server)
            pids = {int(client.request("GET", "/").body) for _ in range(4)}
            assert server.pid not in pids and pids
            assert "started worker" in server.output
            note(server.pid)


        def test_unknown_option(fastcgi_server):
            with pytest.raises(TypeError, match="'nope' is not an fcgibridge option"):
                fastcgi_server("myapp:app", process=True, nope=1)


        def test_app_object_refused(fastcgi_server):
            with pytest.raises(TypeError, match="import string"):
                fastcgi_server(lambda environ, start_response: [], process=True)
    ''')
    run(pytester).assert_outcomes(passed=3)
    assert_all_gone(pytester, at_least=3)  # the master and its two workers


def test_importing_the_plugin_loads_nothing_else() -> None:
    """Every pytest session where fcgibridge is installed loads the plugin: no server,
    client or httpx at import time."""
    code = ("import sys; before = set(sys.modules); import fcgibridge.pytest_plugin; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "fcgibridge.pytest_plugin" in loaded
    assert [m for m in loaded if m.startswith(("fcgibridge.", "httpx", "asyncio", "asgiref"))
            and m != "fcgibridge.pytest_plugin"] == []


def test_support_serves_through_the_plugin() -> None:
    """tests/support.py keeps no copy of the plugin's servers."""
    import support

    from fcgibridge import pytest_plugin

    assert support.ServerThread is pytest_plugin.ServerThread
    assert support.stop_process is pytest_plugin.stop_process
    assert "class ServerThread" not in Path(support.__file__).read_text()


def test_the_docs_example(pytester: pytest.Pytester) -> None:
    """docs/client.md's example, run as it is printed."""
    pytester.makepyfile(test_site=snippet("client.md", "pytest-example"))
    run(pytester).assert_outcomes(passed=5)
