"""End to end: HTTP client -> nginx -> fcgibridge started by a real spawn-fcgi -> an app.

The spawn-fcgi commands are the snippets of docs/servers/spawn-fcgi.md, rendered with the
test's paths and ports and run without a shell. spawn-fcgi binds the socket, forks
fcgibridge with it on fd 0, prints the PID and exits; the tests parse the PID and stop
that process (and its workers) by it. nginx in front is test plumbing: one plain
``fastcgi_pass`` location at the root (``tests/nginx.py``).

- the unix and TCP commands, with ``tests/apps/frontend_app.py`` as WSGI and as ASGI:
  every check of ``tests/frontend_checks.py`` (one spawn-fcgi and one nginx per
  combination, module-scoped);
- the service command (``-M 0660 -U -G -P``, ``-w``, ``--error-log``): the socket's owner
  and mode, the PID file, the log, the workers, a graceful stop by that PID, and what
  happens to the socket file;
- ``-u``: the app runs as that user.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import programs
import pytest
from apps.frontend_app import SECRET
from frontend_checks import CHECKS, Check, Site, check_id
from nginx import Location, Nginx, unix_socket_path
from snippets import doc_snippet
from support import ROOT, alive, descendants, free_port, lib_for_another_user, wait_until

pytestmark = pytest.mark.e2e

PAGE = "servers/spawn-fcgi.md"
INTERFACES = ["wsgi", "asgi"]


def fcgibridge_script() -> str:
    """The venv's ``fcgibridge`` console script (the docs' ``/srv/venv/bin/fcgibridge``)."""
    path = Path(sysconfig.get_path("scripts")) / "fcgibridge"
    assert path.exists(), f"{path} is missing: install the package into the venv (pip install -e .)"
    return str(path)


def command(name: str, replacements: Mapping[str, str]) -> list[str]:
    """Snippet ``name`` as an argv: rendered, its line continuations joined, spawn-fcgi found."""
    text = doc_snippet(PAGE, name, {"/srv/venv/bin/fcgibridge": fcgibridge_script(), **replacements})
    argv = shlex.split(text.replace("\\\n", " "))
    assert argv[0] == "spawn-fcgi", argv
    return [programs.find("spawn-fcgi"), *argv[1:]]


def run_spawn_fcgi(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """spawn-fcgi run to its end (it forks the app and exits), from the repository, with
    PYTHONPATH there (what a user sets in the shell or unit that runs it)."""
    return subprocess.run(list(argv), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=30)


def spawned_pids(result: subprocess.CompletedProcess[str]) -> list[int]:
    output = result.stdout + result.stderr
    pids = [int(pid) for pid in re.findall(r"child spawned successfully: PID: (\d+)", output)]
    assert result.returncode == 0 and pids, f"spawn-fcgi exited with {result.returncode}: {output}"
    return pids


# ------------------------------------------------------------------------------- processes


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def stop_spawned(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM to ``pid``; SIGKILL to it and its workers if they are not gone in time.
    True when the graceful stop was enough."""
    workers = descendants(pid, depth=1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in (pid, *workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    graceful = True
    for leftover in (p for p in (pid, *workers) if alive(p)):
        graceful = False
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover, signal.SIGKILL)
    return graceful


@contextlib.contextmanager
def spawned(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Iterator[list[int]]:
    """Run spawn-fcgi; the PIDs it printed until the block ends, then they are stopped."""
    pids = spawned_pids(run_spawn_fcgi(argv, env))
    try:
        yield pids
    finally:
        stopped = [stop_spawned(pid) for pid in pids]
    assert all(stopped), "fcgibridge did not stop on SIGTERM"


# ------------------------------------------------------------------ the front-end checks

COMBINATIONS = [(transport, interface) for transport in ("unix", "tcp") for interface in INTERFACES]


@pytest.fixture(scope="module", params=COMBINATIONS, ids=[f"{t}-{i}" for t, i in COMBINATIONS])
def site(request: pytest.FixtureRequest, nginx_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    transport, interface = request.param
    directory = tmp_path_factory.mktemp(f"spawn-fcgi-{transport}-{interface}")
    app = {"myapp:app": f"tests.apps.frontend_app:{interface}"}
    if transport == "unix":
        socket = unix_socket_path(directory)
        argv, backend = command("spawn-fcgi-unix", {"/run/app/fcgi.sock": str(socket), **app}), f"unix:{socket}"
    else:
        port = free_port()
        argv, backend = command("spawn-fcgi-tcp", {"-p 9000": f"-p {port}", **app}), f"127.0.0.1:{port}"
    with spawned(argv) as pids, Nginx(directory / "nginx", [Location(backend)], binary=nginx_binary) as server:
        assert len(pids) == 1 and alive(pids[0])
        # spawn-fcgi's child writes into the void: without --error-log, fcgibridge's log is lost
        assert [os.readlink(f"/proc/{pids[0]}/fd/{fd}") for fd in (1, 2)] == ["/dev/null", "/dev/null"]
        yield Site(server, interface, scratch=directory)
        assert alive(pids[0]), "fcgibridge exited"
        problems = server.log_problems()
        assert not problems, "nginx logged:\n" + "\n".join(problems)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
def test_spawned(site: Site, check: Check) -> None:
    check(site)


# ------------------------------------------------------------------------------- a service


def test_service_command(tmp_path: Path, nginx_factory: object) -> None:
    user = pwd.getpwnam("www-data")
    socket, pid_file, log = unix_socket_path(tmp_path), tmp_path / "fcgibridge.pid", tmp_path / "fcgibridge.log"
    argv = command("spawn-fcgi-service", {
        "/run/app/fcgi.sock": str(socket), "/run/app/fcgibridge.pid": str(pid_file),
        "/var/log/app/fcgibridge.log": str(log), "-w 4": "-w 2", "myapp:app": "tests.apps.frontend_app:wsgi",
    })
    with spawned(argv) as pids:
        (pid,) = pids
        assert pid_file.read_text().split() == [str(pid)]
        status = socket.stat()
        assert (status.st_mode & 0o777, status.st_uid, status.st_gid) == (0o660, user.pw_uid, user.pw_gid)
        wait_until(lambda: len(descendants(pid, depth=1)) == 2, 20, "fcgibridge did not start its 2 workers")
        assert os.getsid(pid) == pid  # a session of its own
        assert uid_of(pid) == os.geteuid()  # no -u: the user who ran spawn-fcgi
        assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"  # stderr is the --error-log file

        nginx = nginx_factory(Location(f"unix:{socket}"))  # type: ignore[operator]
        assert nginx.get("/hello").body == b"Hello from WSGI"
        assert nginx.get("/boom").status == 500
        wait_until(lambda: SECRET in log.read_text(), 10, "the traceback is not in --error-log's file")
        assert "worker ready" in log.read_text()

        again = run_spawn_fcgi(argv)  # the socket is in use
        assert again.returncode == 255, again
        assert "socket is already in use" in again.stdout + again.stderr
        # ... and it emptied the PID file on its way out
        assert pid_file.exists() and pid_file.read_text() == ""
        workers = descendants(pid, depth=1)
        assert stop_spawned(pid), "no graceful stop on SIGTERM"
        assert not any(alive(p) for p in (pid, *workers))

    assert socket.is_socket()  # left behind: fcgibridge did not create it
    with spawned(argv) as pids:  # and reused
        assert nginx.get("/hello").body == b"Hello from WSGI"
        assert pid_file.read_text().split() == [str(pids[0])]
    assert not nginx.log_problems()


def test_the_app_runs_as_the_user_of_u(nginx_factory: object) -> None:
    """``-u www-data -g www-data`` (spawn-fcgi run as root): the app runs as www-data, so
    what it runs must be readable by www-data. Root's venv is not: this app is the system
    Python with fcgibridge, asgiref and the app copied to a directory www-data can read."""
    python = programs.find("system-python3")
    user = pwd.getpwnam("www-data")
    directory = Path(tempfile.mkdtemp(prefix="fcgibridge-spawn-fcgi-user-"))  # pytest's tmp dirs are root's only
    try:
        directory.chmod(0o755)
        lib = lib_for_another_user(directory, ROOT / "tests" / "apps" / "authorizer_app.py")
        socket = unix_socket_path(directory)
        argv = command("spawn-fcgi-unix", {"/run/app/fcgi.sock": str(socket), "myapp:app": "authorizer_app:wsgi"})
        argv = [argv[0], "-u", "www-data", "-g", "www-data", *argv[1:]]
        argv[argv.index(fcgibridge_script()) : argv.index(fcgibridge_script()) + 1] = [python, "-m", "fcgibridge"]
        with spawned(argv, {"PYTHONPATH": str(lib)}) as pids:
            assert uid_of(pids[0]) == user.pw_uid
            nginx = nginx_factory(Location(f"unix:{socket}", "/app/", mount="/app"))  # type: ignore[operator]
            reply = nginx.get("/app/who")
            assert reply.status == 200, reply.body[:500]
            answer = json.loads(reply.body)
            assert (answer["uid"], answer["script_name"], answer["path_info"]) == (user.pw_uid, "/app", "/who")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
