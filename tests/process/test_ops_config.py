"""Config commands and socket/peer options on real processes: --check-config,
--print-config, --socket-owner/--socket-group, --allow-from."""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, free_port, ipv6_loopback, machine_has, process_log, run_fcgibridge

from fcgibridge.client import FastCGIClient

APP = "tests.apps.ops_app:app"


def fcgibridge(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fcgibridge", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=30)


def test_check_config_imports_the_app_and_says_ok(tmp_path: Path) -> None:
    (tmp_path / "fcgibridge.toml").write_text('workers = 3\naccess_log = "-"\n')
    result = fcgibridge(APP, "--check-config", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"OK: {APP} (WSGI app), config file {tmp_path / 'fcgibridge.toml'}\n"

    broken = fcgibridge("tests.apps.fbapp_broken_import:app", "--check-config")
    assert broken.returncode == 2 and broken.stderr.startswith("fcgibridge: error:") and not broken.stdout
    missing = fcgibridge("no_such_module_xyz:app", "--check-config")
    assert missing.returncode == 2 and "no_such_module_xyz" in missing.stderr
    (tmp_path / "fcgibridge.toml").write_text("wokers = 3\n")
    typo = fcgibridge(APP, "--check-config", cwd=tmp_path)
    assert typo.returncode == 2 and "unknown option 'wokers'; did you mean 'workers'?" in typo.stderr
    nobody = fcgibridge(APP, "--check-config", "--socket-group", "no-such-group-xyz")
    assert nobody.returncode == 2 and "no group named 'no-such-group-xyz'" in nobody.stderr


def test_print_config_shows_the_effective_values_and_reads_back(tmp_path: Path) -> None:
    (tmp_path / "fcgibridge.toml").write_text('workers = 3\nthreads = 5\nbind = ["unix:/tmp/x.sock"]\n'
                                              'status_path = "/status"\n')
    result = fcgibridge(APP, "--threads", "7", "--print-config", cwd=tmp_path,
                        env={"FCGIBRIDGE_WORKERS": "4", "FCGIBRIDGE_ACCESS_LOG_FORMAT": '%(h)s "%(r)s" \\ ü'})
    assert result.returncode == 0, result.stderr
    values = tomllib.loads(result.stdout)
    # file < environment < command line
    assert (values["workers"], values["threads"], values["bind"]) == (4, 7, ["unix:/tmp/x.sock"])
    assert values["app"] == APP and values["status_path"] == "/status"
    assert values["access_log_format"] == '%(h)s "%(r)s" \\ ü'
    assert values["graceful_timeout"] == 30.0 and values["sync"] is False and values["allow_from"] == []
    assert "config" not in values and "print_config" not in values

    saved = tmp_path / "saved.toml"
    saved.write_text(result.stdout)
    again = fcgibridge("--print-config", "-c", str(saved), cwd=tmp_path / "..")
    assert again.returncode == 0, again.stderr
    assert tomllib.loads(again.stdout) == values


def test_socket_owner_and_group_by_name_and_number(tmp_path: Path) -> None:
    machine_has(os.geteuid() == 0, "root (to change a socket's owner)")
    user, group = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    path = tmp_path / "by-name.sock"
    with run_fcgibridge(APP, "-b", f"unix:{path}", "--socket-owner", "nobody", "--socket-group", "nogroup",
                        "--socket-mode", "660", address=f"unix:{path}"):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (user.pw_uid, group.gr_gid, 0o660)
    path = tmp_path / "by-number.sock"
    with run_fcgibridge(APP, "-b", f"unix:{path}", "--socket-group", str(group.gr_gid), address=f"unix:{path}"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (os.geteuid(), group.gr_gid)
        assert FastCGIClient(f"unix:{path}").request("GET", "/pid").status == 200


@contextlib.contextmanager
def directory_everyone_may_enter() -> Iterator[Path]:
    """pytest's temporary directories are 0700: another user could not reach a socket there."""
    path = Path(tempfile.mkdtemp(prefix="fcgibridge-sock-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def connect_as(user: pwd.struct_passwd, path: Path) -> int:
    """Connect to the unix socket *path* from a child running as *user* (its own group
    only); 0 when it connected, else the errno."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads (3.12+)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
            code = 0
        except OSError as exc:
            code = exc.errno or 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_unix_socket_lets_in_only_its_owner_and_group_and_says_so() -> None:
    """The default mode 0660: another local user (nobody) cannot connect, until the
    socket's group is theirs; the startup log line tells who may."""
    machine_has(os.geteuid() == 0, "root (to connect as another user)")
    nobody = pwd.getpwnam("nobody")
    own = f"{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}"
    with directory_everyone_may_enter() as directory:
        path = directory / "app.sock"
        with run_fcgibridge(APP, "-b", f"unix:{path}", address=f"unix:{path}") as proc:
            assert connect_as(nobody, path) == errno.EACCES
            assert (f"listening on unix:{path} (mode 0660, owner {own}: that user and group may connect)"
                    in process_log(proc))
        group = grp.getgrgid(nobody.pw_gid).gr_name
        with run_fcgibridge(APP, "-b", f"unix:{path}", "--socket-group", group, address=f"unix:{path}") as proc:
            assert connect_as(nobody, path) == 0
            owner = f"{pwd.getpwuid(os.geteuid()).pw_name}:{group}"
            assert f"(mode 0660, owner {owner}: that user and group may connect)" in process_log(proc)
        with run_fcgibridge(APP, "-b", f"unix:{path}", "--socket-mode", "666", address=f"unix:{path}") as proc:
            assert connect_as(nobody, path) == 0
            assert f"(mode 0666, owner {own}: every local user may connect)" in process_log(proc)


def test_check_config_warns_about_who_may_connect_but_exits_0(tmp_path: Path) -> None:
    sock = f"unix:{tmp_path / 's.sock'}"
    wide = fcgibridge(APP, "-b", sock, "--socket-mode", "666", "--check-config")
    assert (wide.returncode, wide.stdout) == (0, f"OK: {APP} (WSGI app)\n")
    assert wide.stderr == (f"WARNING: --socket-mode 0666 lets every local user connect to {sock} and send requests "
                           "with any REMOTE_USER, HTTPS or REMOTE_ADDR; use 660 and --socket-group with the web "
                           "server's group\n")
    assert fcgibridge(APP, "-b", sock, "--socket-mode", "600", "--check-config").stdout.startswith("OK:")
    assert not (tmp_path / "s.sock").exists()  # checking binds nothing
    machine_has("www-data" in {user.pw_name for user in pwd.getpwall()}, "a www-data account (Debian's)")
    web = pwd.getpwnam("www-data")
    if os.geteuid() == 0 and web.pw_gid != os.getegid():
        default = fcgibridge(APP, "-b", sock, "--check-config")
        assert default.returncode == 0 and default.stdout.startswith("OK:")
        assert default.stderr.startswith(f"WARNING: {sock} will be mode 0660, owner root:"), default.stderr
        assert "no web server account here (www-data" in default.stderr
        assert default.stderr.endswith("(such as --socket-group www-data)\n")
    grouped = fcgibridge(APP, "-b", sock, "--socket-group", grp.getgrgid(web.pw_gid).gr_name, "--check-config")
    assert (grouped.returncode, grouped.stderr) == (0, "")


def test_unknown_socket_owner_or_group_is_one_line_error(tmp_path: Path) -> None:
    sock = f"unix:{tmp_path / 's.sock'}"
    result = fcgibridge(APP, "-b", sock, "--socket-owner", "no-such-user-xyz")
    assert result.returncode == 2
    assert result.stderr == ("fcgibridge: error: --socket-owner: no user named 'no-such-user-xyz' on this system; "
                             "give a user name or a uid\n")
    result = fcgibridge(APP, "-b", sock, "--socket-group", "no-such-group-xyz")
    assert result.returncode == 2 and "no group named 'no-such-group-xyz'" in result.stderr
    assert not (tmp_path / "s.sock").exists()


def served(address: str) -> bool:
    try:
        return FastCGIClient(address, timeout=5).request("GET", "/pid").status == 200
    except Exception:
        return False


@pytest.mark.parametrize(("allow", "env", "ok"), [
    (["127.0.0.0/8"], {}, True),
    (["10.0.0.0/8", "127.0.0.1"], {}, True),
    (["10.0.0.0/8", "::1/128"], {}, False),
    (["192.168.0.0/16"], {"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}, False),  # --allow-from wins
    ([], {"FCGI_WEB_SERVER_ADDRS": "10.1.2.3"}, False),  # the default stays FCGI_WEB_SERVER_ADDRS
])
def test_allow_from_cidr_ranges(allow: list[str], env: dict[str, str], ok: bool) -> None:
    address = f"127.0.0.1:{free_port()}"
    args = [arg for item in allow for arg in ("--allow-from", item)]
    with run_fcgibridge(APP, "-b", address, *args, env=env, address=address) as proc:
        assert served(address) is ok
        if not ok:
            assert "refused connection from ('127.0.0.1'" in process_log(proc)


def test_allow_from_ipv6_and_env_var(tmp_path: Path) -> None:
    machine_has(ipv6_loopback(), "an IPv6 loopback")
    address = f"[::1]:{free_port()}"
    unix = f"unix:{tmp_path / 's.sock'}"  # what the test waits for: its wait_for_port speaks IPv4 only
    with run_fcgibridge(APP, "-b", address, "-b", unix, env={"FCGIBRIDGE_ALLOW_FROM": "::1/128, 10.0.0.0/8"},
                        address=unix):
        assert served(address)
    with run_fcgibridge(APP, "-b", address, "-b", unix, "--allow-from", "fe80::/10", address=unix):
        assert not served(address)
        assert served(unix)  # unix socket peers are always allowed


def test_allow_from_rejects_a_bad_range() -> None:
    result = fcgibridge(APP, "--allow-from", "10.0.0.0/33")
    assert result.returncode == 2
    assert "must be an IP address or a CIDR range" in result.stderr
