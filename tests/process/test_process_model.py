"""The process model on real processes: --pid, --chdir, --umask, --env-file and -e,
process titles (setproctitle), and --user/--group dropping root.

The privilege drop runs the system Python with fcgibridge copied where ``nobody`` can
read it (root's venv is not readable to other users; a worker imports after the drop).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import programs
import pytest
from support import (
    ROOT,
    children_of,
    fcgibridge_command,
    free_port,
    lib_for_another_user,
    machine_has,
    run_fcgibridge,
    stop_process,
    wait_for_port,
    wait_until,
)

from fcgibridge.client import FastCGIClient, FastCGIError

APP = "tests.apps.ops_app:app"

ENV_APP = '''
import json, os

def app(environ, start_response):
    mask = os.umask(0)
    os.umask(mask)
    names = ("FROM_FILE", "QUOTED", "SINGLE", "BOTH", "EXPORTED", "EMPTY", "FROM_CLI")
    body = json.dumps({"cwd": os.getcwd(), "umask": mask, "env": {n: os.environ.get(n) for n in names}})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
'''


def fcgibridge(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fcgibridge", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=30)


def title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_the_pid_file_names_the_server_while_it_runs(tmp_path: Path) -> None:
    """Written once the sockets are bound and removed at exit; one naming a dead process
    is replaced, one naming a live process refuses the start."""
    pidfile = tmp_path / "run" / "fcgibridge.pid"
    pidfile.parent.mkdir()
    finished = subprocess.Popen(["true"])
    finished.wait()
    pidfile.write_text(f"{finished.pid}\n")  # a stale file: that process is gone
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--pid", str(pidfile), address=address) as proc:
        # The socket accepts as soon as it listens; the pid file comes right after.
        wait_until(lambda: pidfile.exists() and pidfile.read_text() == f"{proc.pid}\n")
        assert sorted(p.name for p in pidfile.parent.iterdir()) == ["fcgibridge.pid"]  # no temporary file left
        second = fcgibridge(APP, "-b", f"127.0.0.1:{free_port()}", "--pid", str(pidfile))
        assert second.returncode == 2
        assert second.stderr == (f"fcgibridge: error: --pid {pidfile}: already running as pid {proc.pid} (stop it "
                                 "first, or remove the file if that process is not fcgibridge)\n")
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert not pidfile.exists()
    single = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", single, "--pid", "server.pid", address=single, cwd=tmp_path) as proc:
        written = tmp_path / "server.pid"
        wait_until(lambda: written.exists() and written.read_text() == f"{proc.pid}\n")
        # Once it serves: a SIGTERM while the app still imports ends the start with 143.
        FastCGIClient(single, timeout=15).request("GET", "/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert not (tmp_path / "server.pid").exists()


def test_sigterm_while_the_app_imports_still_removes_the_pid_file(tmp_path: Path) -> None:
    """Before the worker or the supervisor handles SIGTERM (a slow import, alone or with
    --preload), it ends the start through on_exit and the pid file's removal."""
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(60)\napp = None\n")
    (tmp_path / "hooks.py").write_text("import os\ndef on_exit(config):\n"
                                       "    open(os.environ['EXIT_LOG'], 'a').write('on_exit\\n')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXIT_LOG": str(tmp_path / "exit.log")}
    for extra in ([], ["--preload", "-w", "2"]):
        pidfile = tmp_path / "app.pid"
        (tmp_path / "exit.log").unlink(missing_ok=True)
        with (tmp_path / "server.log").open("wb") as out:
            proc = subprocess.Popen(fcgibridge_command("slow_import:app", "-b", f"127.0.0.1:{free_port()}", "--pid",
                                                       str(pidfile), "--hooks", "hooks.py", *extra),
                                    cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(pidfile.exists, what="the pid file")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 128 + signal.SIGTERM
        finally:
            stop_process(proc)
        assert not pidfile.exists(), extra
        assert (tmp_path / "exit.log").read_text() == "on_exit\n"
        assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_a_relative_socket_file_goes_at_exit_though_the_app_changed_directory(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "wanders.py").write_text("import os\nos.chdir('elsewhere')\n"
                                         "def app(environ, start_response):\n"
                                         "    start_response('200 OK', [])\n    return [b'ok']\n")
    address = f"unix:{tmp_path / 'app.sock'}"
    with run_fcgibridge("wanders:app", "-b", "unix:app.sock", address=address, cwd=tmp_path) as proc:
        assert FastCGIClient(address).request("GET", "/").body == b"ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert not (tmp_path / "app.sock").exists()


def test_chdir_umask_and_the_environment_reach_the_app(tmp_path: Path) -> None:
    """--chdir first (the app and a relative --env-file are found there), --umask, the
    env file's lines (comments, quotes, export), then -e, which beats the file."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "envapp.py").write_text(ENV_APP)
    (site / "app.env").write_text("# settings\r\n\nFROM_FILE=file value\nQUOTED=\"a # b \"\nSINGLE='x=y'\n"
                                  "  export EXPORTED = yes\nEMPTY=\nBOTH=file\n", encoding="utf-8-sig")  # a BOM
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("envapp:app", "-b", address, "--chdir", str(site), "--umask", "027", "--env-file",
                        "app.env", "-e", "BOTH=cli", "-e", "FROM_CLI=a=b", address=address, cwd=tmp_path):
        seen = json.loads(FastCGIClient(address).request("GET", "/").body)
    assert seen == {"cwd": str(site), "umask": 0o027,
                    "env": {"FROM_FILE": "file value", "QUOTED": "a # b ", "SINGLE": "x=y", "BOTH": "cli",
                            "EXPORTED": "yes", "EMPTY": "", "FROM_CLI": "a=b"}}


def test_process_model_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.env").write_text("GOOD=1\nthis is not a setting\n")
    (tmp_path / "nul.env").write_text("GOOD=1\f\nX=a\0b\n")  # \f: not a line break for the numbering
    (tmp_path / "nul.toml").write_text('env = ["X=a\\u0000b"]\n')
    cases = [
        (["--chdir", str(tmp_path / "nowhere")], f"--chdir {tmp_path / 'nowhere'}: No such file or directory"),
        (["--env-file", str(tmp_path / "bad.env")],
         f"--env-file {tmp_path / 'bad.env'}, line 2: expected NAME=VALUE, got 'this is not a setting'"),
        (["--env-file", "no-such.env"], "--env-file no-such.env: No such file or directory"),
        (["--env-file", "nul.env"], "--env-file nul.env, line 2: a NUL character"),
        (["-c", "nul.toml"], "-e X=...: the value holds a NUL character"),
        (["--user", "no-such-user-xyz"], "--user: no user named 'no-such-user-xyz' on this system"),
        (["--group", "no-such-group-xyz"], "--group: no group named 'no-such-group-xyz' on this system"),
        (["--user", "54321"], "--user 54321: uid 54321 has no account here, so it has no group; give one with"),
        (["--group", "99999999999"], "--group 99999999999: not a gid (0 to 4294967294)"),
        (["--user", "4294967295", "--group", "0"], "--user 4294967295: not a uid (0 to 4294967294)"),
    ]
    for options, message in cases:
        for extra in ([], ["--check-config"]):
            result = fcgibridge(APP, "-b", f"127.0.0.1:{free_port()}", *options, *extra, cwd=tmp_path)
            assert result.returncode == 2, (options, result.stderr)
            assert result.stderr.startswith(f"fcgibridge: error: {message}"), result.stderr
            assert result.stderr.count("\n") == 1


def test_process_titles_name_the_master_and_each_worker(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--name", "shop", address=address) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        wait_until(lambda: all(title(pid).startswith("fcgibridge: worker") for pid in children_of(proc.pid)),
                   what="the workers' titles")
        assert title(proc.pid) == "fcgibridge: master shop"
        assert sorted(title(pid) for pid in children_of(proc.pid)) == ["fcgibridge: worker 1 shop",
                                                                       "fcgibridge: worker 2 shop"]
    single = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", single, address=single) as proc:
        assert title(proc.pid) == f"fcgibridge: {APP}"


# ------------------------------------------------------------------------- --user, --group


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory every user may read (pytest's tmp dirs are root's only)."""
    directory = Path(tempfile.mkdtemp(prefix="fcgibridge-identity-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def nobody() -> pwd.struct_passwd:
    machine_has(os.geteuid() == 0, "root")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        machine_has(False, "a 'nobody' account")
        raise


def ps_user(pid: int) -> str:
    """The name of the user *pid* runs as (its real uid), as ``ps -o user=`` shows it."""
    return pwd.getpwuid(status_ids(pid)["Uid"][0]).pw_name


def status_ids(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(n) for n in value.split()]
    return fields


def start_as_root(lib: Path, *args: str, address: str, cwd: Path) -> subprocess.Popen[bytes]:
    python = programs.find("system-python3")
    log = (cwd / "server.log").open("wb")
    # Root with a supplementary group (root's own), which the workers must not keep.
    proc = subprocess.Popen([python, "-m", "fcgibridge", *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(lib)}, extra_groups=[0])
    log.close()
    try:
        wait_for_port(address, proc=proc)
    except RuntimeError as exc:
        stop_process(proc)
        raise AssertionError(f"{exc}: {(cwd / 'server.log').read_text()}") from None
    return proc


def test_workers_drop_to_the_user_and_the_master_stays_root(readable_dir: Path) -> None:
    account = nobody()
    lib = lib_for_another_user(readable_dir, ROOT / "tests" / "apps" / "ops_app.py")
    sock = readable_dir / "app.sock"
    status_sock = readable_dir / "status.sock"
    address = f"unix:{sock}"
    proc = start_as_root(lib, "ops_app:app", "-b", address, "-w", "2", "--user", "nobody", "--pid",
                         str(readable_dir / "app.pid"), "--status-bind", f"unix:{status_sock}", "--status-path",
                         "/status", address=address, cwd=readable_dir)
    try:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        workers = children_of(proc.pid)
        status = FastCGIClient(f"unix:{status_sock}")
        # Both serve (each dropped right after its fork, then loaded the app).
        wait_until(lambda: b"total_workers:            2" in status.request("GET", "/status").body)
        assert ps_user(proc.pid) == "root" and status_ids(proc.pid)["Groups"] == [0]
        assert {ps_user(pid) for pid in workers} == {account.pw_name}
        for pid in workers:
            ids = status_ids(pid)
            assert set(ids["Uid"]) == {account.pw_uid} and set(ids["Gid"]) == {account.pw_gid}
            assert ids["Groups"] == [account.pw_gid]  # os.initgroups: root's supplementary group is gone
        # The socket file is the workers' (--socket-owner and --socket-group default to them).
        assert (sock.stat().st_uid, sock.stat().st_gid) == (account.pw_uid, account.pw_gid)
        # So is the master's --status-bind socket file (who may reach the app may reach its status).
        assert (status_sock.stat().st_uid, status_sock.stat().st_gid) == (account.pw_uid, account.pw_gid)
        served_by = int(FastCGIClient(address).request("GET", "/").body.split()[1])
        assert served_by in workers
        assert (readable_dir / "app.pid").read_text() == f"{proc.pid}\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop_process(proc)
    assert not sock.exists() and not status_sock.exists() and not (readable_dir / "app.pid").exists()  # the master


def test_the_workers_log_files_are_theirs_through_a_rotation(readable_dir: Path) -> None:
    """The access log and the slow log are opened by each worker, after the drop, and the
    workers reopen every log file on SIGUSR1: in a directory only root may write to, the
    master makes them the workers' before the first fork and after its own reopen."""
    account = nobody()
    lib = lib_for_another_user(readable_dir, ROOT / "tests" / "apps" / "ops_app.py")
    logs = readable_dir / "logs"
    logs.mkdir(mode=0o755)
    address = f"127.0.0.1:{free_port()}"
    proc = start_as_root(lib, "ops_app:app", "-b", address, "-w", "2", "--user", "nobody",
                         "--access-log", str(logs / "access.log"), "--error-log", str(logs / "error.log"),
                         "--slowlog", str(logs / "slow.log"), "--slowlog-timeout", "0.2",
                         address=address, cwd=readable_dir)
    try:
        wait_until(lambda: (logs / "error.log").read_text().count("worker ready") == 2,
                   what="both workers serving (handling SIGUSR1)")
        FastCGIClient(address).request("GET", "/before")
        wait_until(lambda: "/before" in (logs / "access.log").read_text(), what="the first access log line")
        for name in ("access.log", "error.log"):
            (logs / name).rename(logs / f"{name}.1")
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: (logs / "error.log.1").read_text().count("SIGUSR1: reopening") == 3,
                   what="the master and both workers reopening")
        for path in ("/after/1", "/after/2", "/after/3", "/slow?s=0.5"):
            FastCGIClient(address).request("GET", path)
        wait_until(lambda: (logs / "access.log").read_text().count("/after/") == 3, what="the new access log")
        wait_until(lambda: "GET /slow?s=0.5" in (logs / "slow.log").read_text(), what="the slow log")
        for name in ("access.log", "error.log", "slow.log"):
            assert ((logs / name).stat().st_uid, (logs / name).stat().st_gid) == (account.pw_uid, account.pw_gid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop_process(proc)
    everything = "".join((logs / name).read_text() for name in ("error.log.1", "error.log"))
    assert "Traceback" not in everything and "crashed" not in everything, everything


def test_a_log_file_symlink_is_followed_only_when_root_made_it(readable_dir: Path) -> None:
    """Giving a log file to --user follows a symlink root made (an admin's), not one
    another user made: root would give that user the file it points to."""
    account = nobody()
    lib = lib_for_another_user(readable_dir, ROOT / "tests" / "apps" / "ops_app.py")
    target = readable_dir / "target.log"
    link = readable_dir / "access.log"
    link.symlink_to(target)
    address = f"127.0.0.1:{free_port()}"
    proc = start_as_root(lib, "ops_app:app", "-b", address, "-w", "2", "--user", "nobody", "--access-log", str(link),
                         address=address, cwd=readable_dir)
    try:
        FastCGIClient(address).request("GET", "/through-the-link")
        wait_until(lambda: "/through-the-link" in target.read_text(), what="the access log line")
        assert target.stat().st_uid == account.pw_uid
    finally:
        stop_process(proc)
    target.unlink()
    target.write_text("")
    os.lchown(link, account.pw_uid, account.pw_gid)  # as if a worker had put it there
    result = subprocess.run([programs.find("system-python3"), "-m", "fcgibridge", "ops_app:app", "-b",
                             f"127.0.0.1:{free_port()}", "--user", "nobody", "--access-log", str(link)],
                            cwd=readable_dir, env={**os.environ, "PYTHONPATH": str(lib)}, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"cannot give the log file {link} to " in result.stderr and "symbolic links" in result.stderr
    assert result.stderr.count("fcgibridge: error:") == 1 and "Traceback" not in result.stderr
    assert target.stat().st_uid == 0


def test_the_root_master_does_not_follow_a_link_the_workers_user_planted(readable_dir: Path) -> None:
    """The log directory is the workers' user's: a worker could put a symlink where the
    error log or the slow log was, so that the root master, reopening the one or writing
    a stuck request's line to the other, writes to a file of root's. Neither is followed:
    the reopen fails (logged; the master and its workers go on with the old files) and
    the stuck line goes to the error log instead."""
    account = nobody()
    lib = lib_for_another_user(readable_dir, ROOT / "tests" / "apps" / "stuck_app.py")
    logs = readable_dir / "logs"
    logs.mkdir()
    os.chown(logs, account.pw_uid, account.pw_gid)
    secret = readable_dir / "secret"
    secret.write_text("root's own\n")
    address = f"127.0.0.1:{free_port()}"
    proc = start_as_root(lib, "stuck_app:app", "--sync", "-b", address, "--user", "nobody", "--timeout", "1",
                         "--timeout-grace", "1", "--graceful-timeout", "1", "--slowlog", str(logs / "slow.log"),
                         "--error-log", str(logs / "error.log"), address=address, cwd=readable_dir)
    try:
        wait_until(lambda: len(children_of(proc.pid)) == 1)
        (worker,) = children_of(proc.pid)
        assert FastCGIClient(address).request("GET", "/pid").body == f"pid={worker}".encode()  # it handles USR1
        for name in ("slow.log", "error.log"):
            (logs / name).unlink()
            (logs / name).symlink_to(secret)
            os.lchown(logs / name, account.pw_uid, account.pw_gid)
        master_log = Path(f"/proc/{proc.pid}/fd/2")  # the error log it had opened, now unlinked
        proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: master_log.read_text().count("SIGUSR1: cannot open the error log") == 2,
                   what="the master's and the worker's failed reopen logged")
        with pytest.raises(FastCGIError):  # the stuck worker is killed under the request
            FastCGIClient(address, timeout=15).request("GET", "/stuck")
        wait_until(lambda: children_of(proc.pid) - {worker}, what="a new worker")
        assert "cannot write the slow log" in master_log.read_text()
        assert "killing its worker: GET /stuck" in master_log.read_text()
        assert proc.poll() is None and secret.read_text() == "root's own\n" and secret.stat().st_uid == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop_process(proc)


def test_reloaded_workers_drop_too(readable_dir: Path) -> None:
    """--reload under --user: the root master watches, each new worker drops again."""
    account = nobody()
    machine_has(importlib.util.find_spec("watchfiles") is not None, "watchfiles")
    # The worker is forked from the master, which imported fcgibridge: only the app is read as nobody.
    app = readable_dir / "versioned.py"
    app.write_text("import os\ndef app(environ, start_response):\n    start_response('200 OK', [])\n"
                   "    return [b'v1 %d' % os.getuid()]\n")
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("versioned:app", "-b", address, "--reload", "--user", "nobody", address=address,
                        cwd=readable_dir) as proc:
        assert FastCGIClient(address).request("GET", "/").body == f"v1 {account.pw_uid}".encode()
        app.write_text(app.read_text().replace("v1", "v2"))
        wait_until(lambda: FastCGIClient(address).request("GET", "/").body == f"v2 {account.pw_uid}".encode(),
                   what="the reloaded worker, as nobody")
        assert ps_user(proc.pid) == "root"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_a_single_process_drops_once_bound(readable_dir: Path) -> None:
    account = nobody()
    lib = lib_for_another_user(readable_dir, ROOT / "tests" / "apps" / "ops_app.py")
    address = f"127.0.0.1:{free_port()}"
    proc = start_as_root(lib, "ops_app:app", "-b", address, "--user", "nobody", "--group", "nogroup"
                         if _has_group("nogroup") else str(account.pw_gid), address=address, cwd=readable_dir)
    try:
        assert ps_user(proc.pid) == account.pw_name and status_ids(proc.pid)["Groups"] == [account.pw_gid]
        assert FastCGIClient(address).request("GET", "/").body == f"app {proc.pid}".encode()
        assert "running as nobody" in (readable_dir / "server.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop_process(proc)


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_a_drop_the_kernel_refuses_is_a_one_line_error(tmp_path: Path) -> None:
    """Root that may not change its groups (a container without CAP_SETGID, or a user
    namespace that maps no other uid) stops each worker, or the single process, with one
    line, not a traceback. The kernel's refusal is made here by a sitecustomize that has
    os.initgroups fail with EPERM, as it does there, so the test needs no namespaces."""
    nobody()
    machine_has(os.geteuid() == 0, "root")
    (tmp_path / "sitecustomize.py").write_text(
        "import errno, os\n"
        "def refuse(*args):\n"
        "    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))\n"
        "os.initgroups = refuse\n")
    for workers in ("2", "1"):
        pidfile = tmp_path / "app.pid"
        result = subprocess.run(fcgibridge_command(APP, "-b", f"127.0.0.1:{free_port()}", "-w", workers, "--user",
                                                   "nobody", "--pid", str(pidfile)),
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("fcgibridge: error:")]
        assert len(errors) == 1 and errors[0].startswith("fcgibridge: error: cannot switch to nobody:"), errors
        assert errors[0].endswith(" for --user/--group: could not set the supplementary groups: "
                                  "Operation not permitted")
        assert "Traceback" not in result.stderr and not pidfile.exists()


def test_user_needs_root(readable_dir: Path) -> None:
    """Started as nobody, --user root (or any other user) is a one-line error, before binding."""
    account = nobody()
    python = programs.find("system-python3")
    lib = lib_for_another_user(readable_dir, ROOT / "tests" / "apps" / "ops_app.py")
    for extra in ([], ["--check-config"]):
        result = subprocess.run([python, "-m", "fcgibridge", "ops_app:app", "-b", f"127.0.0.1:{free_port()}",
                                 "--user", "root", *extra], cwd=readable_dir, capture_output=True, text=True,
                                timeout=30, user=account.pw_uid, group=account.pw_gid, extra_groups=[],
                                env={"PATH": os.environ["PATH"], "PYTHONPATH": str(lib)})
        assert result.returncode == 2, result.stderr
        assert result.stderr == ("fcgibridge: error: --user root needs root to switch to (running as nobody); "
                                 "start as root, or leave the option out\n")
