"""Lua scripts: load failures through the real CLI, the runtimes of --lua-version, and
the script served by the real CLI under spawn-fcgi (the listen socket on fd 0)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import programs
import pytest
from support import ROOT, RawConnection, fcgibridge_command, free_port, wait_for_port

from fcgibridge.errors import UserError
from fcgibridge.lua import LUA_VERSIONS, load_lua

LUA = ROOT / "tests" / "apps" / "lua"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fcgibridge_command(*args, "-b", f"127.0.0.1:{free_port()}"), cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("script", "message"), [
    ("tests/apps/lua/missing.lua", "Lua file tests/apps/lua/missing.lua not found"),
    ("tests/apps/lua/syntax_error.lua", "cannot load Lua file tests/apps/lua/syntax_error.lua: "),
    ("tests/apps/lua/no_table.lua", "does not return a table (it returned string)"),
    ("tests/apps/lua/no_accept.lua", 'Lua file doesn\'t provide an "accept" function.'),
    ("tests/apps/lua/raises.lua", "the script failed while loading"),
])
def test_load_failures_exit_non_zero_with_one_clear_line(script: str, message: str) -> None:
    proc = run_cli(script)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode != 0
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_syntax_error_carries_lua_s_message() -> None:
    with pytest.raises(UserError) as info:
        load_lua(LUA / "syntax_error.lua")
    assert re.search(r"syntax_error\.lua:3: unexpected symbol near 'end'", str(info.value)), info.value


def test_interface_lua_is_explicit_too(tmp_path: Path) -> None:
    script = tmp_path / "script.txt"  # any name, with --interface lua
    script.write_text((LUA / "no_table.lua").read_text())
    proc = run_cli(str(script), "--interface", "lua")
    assert proc.returncode == 2 and "does not return a table" in proc.stderr


@pytest.mark.parametrize("version", sorted(LUA_VERSIONS))
def test_every_runtime_lupa_ships_runs_the_script(version: str) -> None:
    import io

    app = load_lua(LUA / "hooks.lua", version=version)
    seen: list[str] = []
    body = app({"REQUEST_URI": "/v", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}, lambda s, h: seen.append(s))
    assert seen == ["200 OK"] and list(body) == [b"uri=/v count=1 generation=0"]
    assert app.lua_version == version


# ------------------------------------------------------------------------ spawn-fcgi


def test_the_lua_script_under_spawn_fcgi(tmp_path: Path) -> None:
    binary = programs.find("spawn-fcgi")
    port = free_port()
    log = tmp_path / "hooks.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOOK_LOG": str(log), "ERRLOG": str(tmp_path / "error.log")}
    # As the issue runs it: spawn-fcgi forks the app with the listen socket on fd 0 and exits.
    spawned = subprocess.run([binary, "-a", "127.0.0.1", "-p", str(port), "--", *fcgibridge_command(
        "tests/apps/lua/hooks.lua")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    found = re.search(r"PID: (\d+)", spawned.stdout + spawned.stderr)
    assert spawned.returncode == 0 and found, spawned.stdout + spawned.stderr
    pid = int(found.group(1))
    try:
        wait_for_port(f"127.0.0.1:{port}")
        with RawConnection(f"127.0.0.1:{port}") as conn:
            for n in (1, 2):
                request_id = conn.begin("GET", "/spawned", body=b"")
                conn.wait_end(request_id)
                head, body = conn.response(request_id)
                assert head.status == 200 and body == f"uri=/spawned count={n} generation=0".encode()
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "restart" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "restart" in log.read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert f"{pid} stop 0" in log.read_text()
    assert "worker ready" in (tmp_path / "error.log").read_text()


def test_io_read_reads_the_request_body_in_every_format(tmp_path: Path) -> None:
    import io

    script = tmp_path / "reader.lua"
    script.write_text(
        'return { accept = function()\n'
        '  local line, number, three, rest = io.read("l"), io.read("n"), io.read(3), io.read("a")\n'
        '  return "\\n" .. line .. "|" .. tostring(number) .. "|" .. three .. "|" .. rest\n'
        'end }\n')
    app = load_lua(script)
    body = b"first line\n42\nabcdef"
    environ = {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    assert list(app(environ, lambda s, h: None)) == [b"first line|42|abc|def"]
