"""Bind addresses, listening sockets (bound, inherited by fd, fd 0, systemd), and peer checks."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, ipv6_loopback, machine_has

from fcgibridge.config import Config
from fcgibridge.errors import UserError
from fcgibridge.process import listeners
from fcgibridge.process.listeners import (
    FdAddress,
    TcpAddress,
    UnixAddress,
    open_listeners,
    parse_bind,
    peer_allowed,
    web_server_addrs,
)


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    """Collects sockets a test opens, and closes them afterwards."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def listen(config: Config, opened: list[socket.socket], **kwargs: Any) -> list[socket.socket]:
    result = open_listeners(config, environ=kwargs.pop("environ", {}), **kwargs)
    opened.extend(result)
    return result


def config(*binds: str, **kwargs: Any) -> Config:
    return Config(app="x:app", bind=list(binds), **kwargs)


def is_listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


# parse_bind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9000", TcpAddress("127.0.0.1", 9000)),
        ("  0.0.0.0:80 ", TcpAddress("0.0.0.0", 80)),
        ("localhost:0", TcpAddress("localhost", 0)),
        ("app.internal:65535", TcpAddress("app.internal", 65535)),
        ("[::1]:9000", TcpAddress("::1", 9000)),
        ("[::]:9000", TcpAddress("::", 9000)),
        ("[fe80::1%eth0]:9000", TcpAddress("fe80::1%eth0", 9000)),
        ("unix:/run/app.sock", UnixAddress("/run/app.sock")),
        ("unix:///run/app.sock", UnixAddress("/run/app.sock")),
        ("unix:run/app.sock", UnixAddress("run/app.sock")),
        ("fd://0", FdAddress(0)),
        ("fd://3", FdAddress(3)),
    ],
)
def test_parse_bind(text: str, expected: object) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("127.0.0.1:9000", "127.0.0.1:9000"), ("[::1]:9000", "[::1]:9000"), ("unix:///a", "unix:/a"), ("fd://3", "fd://3")],
)
def test_bind_address_str(text: str, canonical: str) -> None:
    assert str(parse_bind(text)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty bind address; use HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"),
        ("9000", "bind address '9000' has no port; write 127.0.0.1:9000, for example"),
        ("localhost", "bind address 'localhost' has no port; write localhost:9000, for example"),
        (":9000", "bind address ':9000' has no host; write 127.0.0.1:9000 (this machine only) or 0.0.0.0:9000"),
        ("::1:9000", "IPv6 addresses go in brackets, as in [::1]:9000"),
        ("[::1:9000", "lacks the closing ']'"),
        ("[::1]", "bind address '[::1]' has no port; write [::1]:9000"),
        ("[::1]9000", "has no port"),
        ("[localhost]:9000", "'localhost' is not an IPv6 address"),
        ("127.0.0.1:http", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:65536", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:-1", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:\uff19\uff10", "the port must be a number from 0 to 65535"),
        ("unix:", "has no path; write unix:/run/app.sock"),
        ("unix:a\0b", "contains a NUL character"),
        ("fd://", "needs a file descriptor number, such as fd://3"),
        ("fd://x", "needs a file descriptor number"),
        ("fd://-1", "needs a file descriptor number"),
        ("tcp://127.0.0.1:9000", "has an unknown scheme"),
        ("/run/app.sock", "looks like a path; write unix:/run/app.sock"),
        ("./app.sock", "looks like a path; write unix:./app.sock"),
    ],
)
def test_parse_bind_errors(text: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        parse_bind(text)
    assert message in str(info.value)


# TCP


def test_tcp(opened: list[socket.socket]) -> None:
    (sock,) = listen(config("127.0.0.1:0"), opened)
    assert sock.family == socket.AF_INET
    assert is_listening(sock)
    assert not sock.getblocking()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    with socket.create_connection(sock.getsockname(), timeout=5):
        pass


def test_tcp_ipv6_is_v6only(opened: list[socket.socket]) -> None:
    machine_has(ipv6_loopback(), "an IPv6 loopback")
    (sock,) = listen(config("[::1]:0"), opened)
    assert sock.family == socket.AF_INET6
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    assert is_listening(sock)


def test_several_binds(opened: list[socket.socket], tmp_path: Path) -> None:
    socks = listen(config("127.0.0.1:0", f"unix:{tmp_path}/a.sock"), opened)
    assert [s.family for s in socks] == [socket.AF_INET, socket.AF_UNIX]


def test_address_in_use(opened: list[socket.socket]) -> None:
    (first,) = listen(config("127.0.0.1:0"), opened)
    port = first.getsockname()[1]
    with pytest.raises(UserError) as info:
        listen(config(f"127.0.0.1:{port}"), opened)
    assert str(info.value) == (
        f"cannot listen on 127.0.0.1:{port}: address already in use; stop the other server or choose another address"
    )


def test_address_not_on_this_machine(opened: list[socket.socket]) -> None:
    with pytest.raises(UserError, match=r"^cannot listen on 192\.0\.2\.1:0: this machine has no such address"):
        listen(config("192.0.2.1:0"), opened)  # TEST-NET-1, never assigned


def test_permission_denied_on_a_low_port(opened: list[socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(UserError) as info:
        listen(config("127.0.0.1:80"), opened)
    assert str(info.value) == (
        "cannot listen on 127.0.0.1:80: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE; "
        "use a port above 1023"
    )


def test_permission_denied_on_a_unix_socket(
    opened: list[socket.socket], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(UserError) as info:
        listen(config(f"unix:{tmp_path}/a.sock"), opened)
    assert str(info.value) == (
        f"cannot listen on unix:{tmp_path}/a.sock: permission denied; check that this user may create files in "
        f"{tmp_path}"
    )


def test_unresolvable_host(opened: list[socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(UserError) as info:
        listen(config("nosuchhost.invalid:9000"), opened)
    assert str(info.value) == (
        "cannot listen on nosuchhost.invalid:9000: cannot resolve host 'nosuchhost.invalid' (Name or service not known)"
    )


def test_a_bad_address_binds_nothing(opened: list[socket.socket], tmp_path: Path) -> None:
    path = tmp_path / "a.sock"
    with pytest.raises(UserError, match="has no port"):
        listen(config(f"unix:{path}", "localhost"), opened)
    assert not path.exists()


def test_a_failing_bind_releases_the_others(opened: list[socket.socket], tmp_path: Path) -> None:
    path = tmp_path / "a.sock"
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(UserError, match="does not exist; create it first"):
        listen(config("127.0.0.1:0", f"unix:{path}", f"unix:{tmp_path}/missing/b.sock"), opened)
    assert not path.exists()
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_same_address_twice(opened: list[socket.socket]) -> None:
    with pytest.raises(UserError, match=r"^bind address 127\.0\.0\.1:9000 is given twice$"):
        listen(config("127.0.0.1:9000", " 127.0.0.1:9000"), opened)


# Unix sockets


def test_unix_socket_and_its_mode(opened: list[socket.socket], tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    (sock,) = listen(config(f"unix:{path}", socket_mode="0o660"), opened)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert is_listening(sock)
    assert not sock.getblocking()


def test_unix_socket_default_mode(opened: list[socket.socket], tmp_path: Path) -> None:
    """0660, as PHP-FPM's listen.mode: not every local user may send requests."""
    path = tmp_path / "app.sock"
    listen(config(f"unix:{path}"), opened)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660


@pytest.mark.parametrize("mode", ["660", "600"])
def test_unix_socket_is_never_wider_than_its_mode(opened: list[socket.socket], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Even under umask 000 the file bind() makes is no wider than --socket-mode before
    the chmod, and nothing is accepted before the chmod either (listen comes later)."""
    path = tmp_path / "app.sock"
    seen: list[tuple[int, str]] = []
    real_chmod = os.chmod

    def chmod(target: Any, bits: int, *args: Any, **kwargs: Any) -> None:
        if str(target) == str(path):
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                    outcome = "connected"
                except ConnectionRefusedError:
                    outcome = "refused"
            seen.append((stat.S_IMODE(os.stat(path).st_mode), outcome))
        real_chmod(target, bits, *args, **kwargs)

    monkeypatch.setattr(os, "chmod", chmod)
    previous = os.umask(0)
    try:
        listen(config(f"unix:{path}", socket_mode=mode), opened)
        assert os.umask(0) == 0  # the process's umask is given back
    finally:
        os.umask(previous)
    assert seen == [(int(mode, 8), "refused")]
    assert stat.S_IMODE(path.stat().st_mode) == int(mode, 8)


def test_bad_socket_mode(opened: list[socket.socket], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^--socket-mode must be octal permission bits such as 660 or 600, got '8'"):
        listen(config(f"unix:{tmp_path}/a.sock", socket_mode="8"), opened)


def test_stale_unix_socket_is_replaced(opened: list[socket.socket], tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays behind, as after a crash
    assert path.exists()
    listen(config(f"unix:{path}"), opened)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))


def test_live_unix_socket_is_refused(opened: list[socket.socket], tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        with pytest.raises(UserError) as info:
            listen(config(f"unix:{path}"), opened)
        assert str(info.value) == (
            f"cannot listen on unix:{path}: another server is listening there; stop it or choose another path"
        )
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # the other server still has its socket


def test_regular_file_is_not_replaced(opened: list[socket.socket], tmp_path: Path) -> None:
    path = tmp_path / "important.txt"
    path.write_text("keep me")
    with pytest.raises(UserError) as info:
        listen(config(f"unix:{path}"), opened)
    assert str(info.value) == f"cannot listen on unix:{path}: the path exists and is not a socket; choose another path"
    assert path.read_text() == "keep me"


def test_missing_directory(opened: list[socket.socket], tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        listen(config(f"unix:{tmp_path}/nope/app.sock"), opened)
    assert str(info.value) == (
        f"cannot listen on unix:{tmp_path}/nope/app.sock: directory {tmp_path}/nope does not exist; create it first"
    )


# fd://N


def test_fd_listening_socket_is_adopted(opened: list[socket.socket]) -> None:
    with socket.socket() as original:
        original.bind(("127.0.0.1", 0))
        original.listen()
        fd = os.dup(original.fileno())
        (sock,) = listen(config(f"fd://{fd}"), opened)
        assert sock.fileno() == fd
        assert sock.getsockname() == original.getsockname()
        assert not sock.getblocking()


def test_fd_not_listening(opened: list[socket.socket]) -> None:
    a, b = socket.socketpair()
    with a, b:
        fd = a.fileno()
        with pytest.raises(UserError) as info:
            listen(config(f"fd://{fd}"), opened)
        assert str(info.value) == (
            f"cannot listen on fd://{fd}: file descriptor {fd} is a socket, but not a listening stream socket"
        )
        a.sendall(b"still open")  # left open for its owner
        assert b.recv(100) == b"still open"


def test_fd_udp_socket(opened: list[socket.socket]) -> None:
    with socket.socket(type=socket.SOCK_DGRAM) as udp, pytest.raises(UserError, match="not a listening stream"):
        listen(config(f"fd://{udp.fileno()}"), opened)


def test_fd_not_a_socket(opened: list[socket.socket]) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(UserError, match=rf"^cannot listen on fd://{r}: file descriptor {r} is not a socket$"):
            listen(config(f"fd://{r}"), opened)
        os.fstat(r)  # still open
    finally:
        os.close(r)
        os.close(w)


def test_fd_not_open(opened: list[socket.socket]) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(UserError, match=rf"^cannot listen on fd://{r}: file descriptor {r} is not open$"):
        listen(config(f"fd://{r}"), opened)


# Inherited sockets in a fresh process: fd 0 (spawn-fcgi, lighttpd, mod_fcgid) and systemd.


CHILD_PRELUDE = """
    import json, os, socket, sys
    from fcgibridge.process import listeners
    from fcgibridge.config import Config
"""


def run_child(code: str, **kwargs: Any) -> dict[str, Any]:
    """Run *code* in a new interpreter; it prints one JSON object, which is returned."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.update(kwargs.pop("env", {}))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD_PRELUDE + code)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        **kwargs,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


SERVE_ONE = """
    socks = listeners.open_listeners(Config(app="x:app"))
    print(json.dumps({"fds": [s.fileno() for s in socks], "name": socks[0].getsockname(),
                      "blocking": socks[0].getblocking(), "environ": {k: v for k, v in os.environ.items()
                                                                      if k.startswith("LISTEN_")}}), flush=True)
    sys.stdout.close()
    socks[0].setblocking(True)
    conn, _ = socks[0].accept()
    conn.sendall(b"served")
    conn.close()
"""


def start_serving_child(stdin: socket.socket) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """A child whose fd 0 is *stdin*; it reports its listeners, then answers one connection."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD_PRELUDE + SERVE_ONE)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    with child.stdout:
        line = child.stdout.readline()
    assert line, "the child reported nothing"
    return child, json.loads(line)


def test_fd0_listening_tcp_socket_is_served() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        child, report = start_serving_child(server)
        address = server.getsockname()
    assert report["fds"] == [0]
    assert tuple(report["name"]) == address
    assert report["blocking"] is False
    # The parent's copy is closed: only the child can answer.
    with socket.create_connection(address, timeout=10) as client:
        assert client.recv(100) == b"served"
    assert child.wait(timeout=10) == 0


def test_fd0_listening_unix_socket_is_served(tmp_path: Path) -> None:
    path = str(tmp_path / "fcgid.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        child, report = start_serving_child(server)
    assert report["fds"] == [0]
    assert report["name"] == path
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(path)
        assert client.recv(100) == b"served"
    assert child.wait(timeout=10) == 0


DEFAULT_IN_CHILD = """
    listeners.DEFAULT_BIND = "unix:" + sys.argv[1]  # instead of 127.0.0.1:9000, which may be taken here
    socks = listeners.open_listeners(Config(app="x:app"))
    print(json.dumps({"name": [s.getsockname() for s in socks], "environ": sorted(k for k in os.environ
                                                                                    if k.startswith("LISTEN_"))}))
"""


@pytest.mark.parametrize("stdin", ["devnull", "pipe", "socketpair", "closed"])
def test_fd0_that_is_no_listening_socket_falls_back_to_the_default(stdin: str, tmp_path: Path) -> None:
    path = str(tmp_path / "default.sock")
    a, b = socket.socketpair()
    r, w = os.pipe()
    stdin_arg = {"devnull": subprocess.DEVNULL, "pipe": r, "socketpair": a, "closed": None}[stdin]
    extra: dict[str, Any] = {"stdin": stdin_arg}
    code = DEFAULT_IN_CHILD
    if stdin == "closed":
        code = "\n    os.close(0)" + code
    try:
        report = run_child(code.replace("sys.argv[1]", repr(path)), **extra)
    finally:
        for closable in (a, b):
            closable.close()
        os.close(r)
        os.close(w)
    assert report["name"] == [path]


def test_default_is_127_0_0_1_port_9000() -> None:
    assert listeners.DEFAULT_BIND == "127.0.0.1:9000"


SYSTEMD_CHILD = """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    name = server.getsockname()
    fd = server.detach()
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid()) if PID_MATCHES else "1"
    os.environ["LISTEN_FDNAMES"] = "fcgi"
    listeners.DEFAULT_BIND = "unix:" + DEFAULT_PATH
    socks = listeners.open_listeners(Config(app="x:app"))
    print(json.dumps({"fds": [s.fileno() for s in socks], "names": [s.getsockname() for s in socks],
                      "expected": name, "blocking": [s.getblocking() for s in socks],
                      "environ": sorted(k for k in os.environ if k.startswith("LISTEN_"))}))
"""


def test_systemd_socket_activation(tmp_path: Path) -> None:
    code = SYSTEMD_CHILD.replace("PID_MATCHES", "True").replace("DEFAULT_PATH", repr(str(tmp_path / "d.sock")))
    report = run_child(code, stdin=subprocess.DEVNULL)
    assert report["fds"] == [3]
    assert report["names"] == [report["expected"]]
    assert report["blocking"] == [False]
    assert report["environ"] == []  # consumed, so that the app's children do not take them


def test_systemd_sockets_for_another_process_are_ignored(tmp_path: Path) -> None:
    default = str(tmp_path / "d.sock")
    code = SYSTEMD_CHILD.replace("PID_MATCHES", "False").replace("DEFAULT_PATH", repr(default))
    report = run_child(code, stdin=subprocess.DEVNULL)
    assert report["names"] == [default]
    assert report["environ"] == ["LISTEN_FDNAMES", "LISTEN_FDS", "LISTEN_PID"]


def test_systemd_fd_that_is_not_a_socket() -> None:
    code = """
    r, w = os.pipe()
    if r != 3:
        os.dup2(r, 3)
    env = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    try:
        listeners.open_listeners(Config(app="x:app"), environ=env)
    except Exception as exc:
        print(json.dumps({"error": str(exc)}))
    """
    report = run_child(code, stdin=subprocess.DEVNULL)
    assert report["error"] == "cannot listen on fd 3 from systemd (LISTEN_FDS=1): file descriptor 3 is not a socket"


def test_systemd_bad_count() -> None:
    with pytest.raises(UserError, match=r"^LISTEN_FDS='two' is not a number of sockets$"):
        open_listeners(config(), environ={"LISTEN_FDS": "two", "LISTEN_PID": str(os.getpid())})


def test_bind_beats_systemd(opened: list[socket.socket]) -> None:
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    (sock,) = listen(config("127.0.0.1:0"), opened, environ=environ)
    assert sock.family == socket.AF_INET
    assert environ == {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}


# FCGI_WEB_SERVER_ADDRS


@pytest.mark.parametrize("value", [None, "", "  "])
def test_web_server_addrs_unset(value: str | None) -> None:
    environ = {} if value is None else {"FCGI_WEB_SERVER_ADDRS": value}
    assert web_server_addrs(environ) is None


def test_web_server_addrs() -> None:
    addrs = web_server_addrs({"FCGI_WEB_SERVER_ADDRS": "127.0.0.1, 10.0.0.2,::1,::ffff:192.168.1.1,fe80::1%eth0,"})
    assert addrs == frozenset(
        ipaddress.ip_address(a) for a in ("127.0.0.1", "10.0.0.2", "::1", "192.168.1.1", "fe80::1")
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.1,web", "FCGI_WEB_SERVER_ADDRS: 'web' is not an IP address; list addresses separated by commas"),
        ("127.0.0.1 10.0.0.1", "'127.0.0.1 10.0.0.1' is not an IP address"),
        ("10.0.0.0/8", "'10.0.0.0/8' is not an IP address"),
        (" , ", "FCGI_WEB_SERVER_ADDRS=' , ' lists no addresses; unset it to allow every peer"),
    ],
)
def test_web_server_addrs_errors(value: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        web_server_addrs({"FCGI_WEB_SERVER_ADDRS": value})
    assert message in str(info.value)


ALLOWED = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), ipaddress.ip_address("fe80::1")})


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        (("127.0.0.1", 40000), True),
        (("10.0.0.9", 40000), False),
        (("::1", 40000, 0, 0), True),
        (("::2", 40000, 0, 0), False),
        (("::ffff:127.0.0.1", 40000, 0, 0), True),
        (("::ffff:10.0.0.9", 40000, 0, 0), False),
        (("fe80::1%eth0", 40000, 0, 2), True),
        ("", True),
        ("/run/app.sock", True),
        (b"\0abstract", True),
        (None, False),
        (("not an address", 1), False),
        ((), False),
    ],
)
def test_peer_allowed(peer: object, allowed: bool) -> None:
    assert peer_allowed(peer, ALLOWED) is allowed


def test_peer_allowed_without_a_list() -> None:
    assert peer_allowed(("203.0.113.7", 1), None)
    assert peer_allowed(None, None)


def test_web_server_addrs_with_a_real_connection(opened: list[socket.socket]) -> None:
    (server,) = listen(config("127.0.0.1:0"), opened)
    server.setblocking(True)
    with socket.create_connection(server.getsockname(), timeout=5):
        conn, peer = server.accept()
        with conn:
            assert peer_allowed(peer, web_server_addrs({"FCGI_WEB_SERVER_ADDRS": "::1,127.0.0.1"}))
            assert peer_allowed(conn.getpeername(), web_server_addrs({"FCGI_WEB_SERVER_ADDRS": "127.0.0.1"}))
            assert not peer_allowed(conn.getpeername(), web_server_addrs({"FCGI_WEB_SERVER_ADDRS": "10.1.1.1"}))
