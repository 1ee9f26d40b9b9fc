"""Listening sockets: the ``-b`` addresses, inherited sockets, and who may connect.

:func:`open_listeners` decides where to listen, in this order:

1. every ``-b/--bind`` address: ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:PATH``, ``fd://N``
   (the grammar of :mod:`fcgibridge.addresses`, which the client shares);
2. systemd socket activation (``LISTEN_FDS`` sockets from fd 3 on, for this ``LISTEN_PID``);
3. fd 0, when it is a listening socket: that is how spawn-fcgi, lighttpd's ``bin-path``
   and Apache mod_fcgid start a FastCGI application;
4. ``127.0.0.1:9000``.

Sockets it binds get ``SO_REUSEADDR`` (IPv6 ones ``IPV6_V6ONLY``, so that ``[::]:9000``
and ``0.0.0.0:9000`` can both be bound), ``listen(config.backlog)``, and are
non-blocking. Inherited sockets keep the backlog their creator chose. Every mistake is
a :class:`~fcgibridge.errors.UserError` naming the address and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import socket
import stat
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

from ..addresses import Address, FdAddress, TcpAddress, UnixAddress, parse_bind
from ..errors import UserError

if TYPE_CHECKING:
    import pwd

    from ..config import Config

__all__ = [
    "DEFAULT_BIND",
    "BindAddress",
    "FdAddress",
    "IPAddress",
    "TcpAddress",
    "UnixAddress",
    "open_listeners",
    "parse_bind",
    "peer_allowed",
    "socket_warnings",
    "unix_access",
    "web_server_addrs",
]

DEFAULT_BIND = "127.0.0.1:9000"

#: The first file descriptor systemd passes (SD_LISTEN_FDS_START).
SYSTEMD_FIRST_FD = 3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What ``-b`` takes: the address grammar (:mod:`fcgibridge.addresses`) the client shares.
BindAddress = Address


def open_listeners(config: Config, *, environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """Open (or take over) every socket to serve on, as the module docstring describes.

    *environ* defaults to ``os.environ``; the systemd variables are removed from it once
    used, so that the app's own child processes do not take the sockets for theirs.
    """
    from ..config import parse_socket_mode

    env: MutableMapping[str, str] = os.environ if environ is None else environ
    try:
        mode = parse_socket_mode(config.socket_mode)
    except ValueError as exc:
        raise UserError(f"--socket-mode {exc}") from None
    owner = socket_owner(config.socket_owner, config.socket_group)

    if config.bind:
        addresses = [parse_bind(text) for text in config.bind]  # every typo before any bind
        seen: set[BindAddress] = set()
        for address in addresses:
            if address in seen:
                raise UserError(f"bind address {address} is given twice")
            seen.add(address)
        return _open_all(addresses, config.backlog, mode, owner)

    inherited = _systemd_listeners(env)
    if inherited:
        return inherited
    stdin = _stdin_listener()
    if stdin is not None:
        return [stdin]
    return _open_all([parse_bind(DEFAULT_BIND)], config.backlog, mode, owner)


def _open_all(addresses: list[BindAddress], backlog: int, mode: int,
              owner: tuple[int, int] = (-1, -1)) -> list[socket.socket]:
    opened: list[tuple[socket.socket, bool]] = []  # (socket, whether we created it)
    try:
        for address in addresses:
            match address:
                case TcpAddress():
                    opened.append((_open_tcp(address, backlog), True))
                case UnixAddress():
                    opened.append((_open_unix(address, backlog, mode, owner), True))
                case FdAddress():
                    opened.append((_adopt(address.fd, str(address)), False))
    except BaseException:
        # One bad address: give back what the others took, leaving inherited fds as they were.
        for sock, ours in opened:
            if ours:
                _close_listener(sock)
            else:
                sock.detach()
        raise
    return [sock for sock, _ in opened]


def _close_listener(sock: socket.socket) -> None:
    """Close a socket we opened; a unix one also loses its file."""
    name = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if isinstance(name, str) and name:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _open_tcp(address: TcpAddress, backlog: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {address}: cannot resolve host {address.host!r} ({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(address, exc) from None
    sock.setblocking(False)
    return sock


def _open_unix(address: UnixAddress, backlog: int, mode: int, owner: tuple[int, int] = (-1, -1)) -> socket.socket:
    _remove_stale_socket(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() creates the file with 0777 less the umask (often 0755, 0777 under UMask=0000):
    # a umask that leaves at most *mode* makes it no wider than asked from its first
    # moment. Nobody can connect before listen() anyway, which comes after chmod and chown.
    previous = os.umask(0o777 & ~mode)
    try:
        sock.bind(address.path)
    except OSError as exc:
        sock.close()
        raise _bind_error(address, exc) from None
    finally:
        os.umask(previous)
    try:
        os.chmod(address.path, mode)
        if owner != (-1, -1):
            os.chown(address.path, *owner)
        sock.listen(backlog)
    except OSError as exc:
        _close_listener(sock)
        raise _bind_error(address, exc) from None
    sock.setblocking(False)
    return sock


def _remove_stale_socket(address: UnixAddress) -> None:
    """Remove a socket file left by a server that is gone; refuse anything else."""
    try:
        info = os.lstat(address.path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _bind_error(address, exc) from None
    if not stat.S_ISSOCK(info.st_mode):
        raise UserError(f"cannot listen on {address}: the path exists and is not a socket; choose another path")
    # A socket file does not tell whether a server still owns it; connecting does.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(address.path)
    except ConnectionRefusedError:
        os.unlink(address.path)  # stale: nobody accepts on it
        return
    except FileNotFoundError:
        return
    except TimeoutError:
        pass  # a server that is alive but too busy to accept
    except OSError as exc:
        raise UserError(
            f"cannot listen on {address}: cannot tell whether a server still uses it ({exc.strerror}); "
            "remove the file if none does"
        ) from None
    finally:
        probe.close()
    raise UserError(f"cannot listen on {address}: another server is listening there; stop it or choose another path")


def _bind_error(address: BindAddress, exc: OSError) -> UserError:
    where = f"cannot listen on {address}"
    match exc.errno:
        case errno.EADDRINUSE:
            return UserError(f"{where}: address already in use; stop the other server or choose another address")
        case errno.EACCES | errno.EPERM:
            if isinstance(address, TcpAddress) and 0 < address.port < 1024:
                hint = "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port above 1023"
            elif isinstance(address, UnixAddress):
                directory = os.path.dirname(os.path.abspath(address.path))
                hint = f"check that this user may create files in {directory}"
            else:
                hint = "check the user this server runs as"
            return UserError(f"{where}: permission denied; {hint}")
        case errno.EADDRNOTAVAIL:
            return UserError(f"{where}: this machine has no such address; use 127.0.0.1 or 0.0.0.0")
        case errno.ENOENT | errno.ENOTDIR if isinstance(address, UnixAddress):
            directory = os.path.dirname(os.path.abspath(address.path))
            return UserError(f"{where}: directory {directory} does not exist; create it first")
    return UserError(f"{where}: {exc.strerror or exc}")


# Sockets handed to us by the process that started us.


def _adopt(fd: int, what: str) -> socket.socket:
    """Wrap inherited *fd*, which must be a listening stream socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise UserError(f"cannot listen on {what}: file descriptor {fd} is not open") from None
        if exc.errno == errno.ENOTSOCK:
            raise UserError(f"cannot listen on {what}: file descriptor {fd} is not a socket") from None
        raise UserError(f"cannot listen on {what}: file descriptor {fd}: {exc.strerror or exc}") from None
    if not _is_listening(sock):
        sock.detach()  # not ours to close
        raise UserError(
            f"cannot listen on {what}: file descriptor {fd} is a socket, but not a listening stream socket"
        )
    sock.setblocking(False)
    return sock


def _is_listening(sock: socket.socket) -> bool:
    try:
        return sock.type == socket.SOCK_STREAM and bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


def _stdin_listener() -> socket.socket | None:
    """fd 0, when it is a listening socket (spawn-fcgi, lighttpd bin-path, mod_fcgid)."""
    try:
        sock = socket.socket(fileno=0)
    except OSError:  # closed, a terminal, a pipe, a file
        return None
    if not _is_listening(sock):
        sock.detach()
        return None
    sock.setblocking(False)
    return sock


def _systemd_listeners(environ: MutableMapping[str, str]) -> list[socket.socket]:
    """The sockets of systemd socket activation, as sd_listen_fds(3) defines it."""
    count_text = environ.get("LISTEN_FDS", "").strip()
    if not count_text or environ.get("LISTEN_PID", "").strip() != str(os.getpid()):
        return []  # none, or meant for another process
    if not re.fullmatch(r"[0-9]+", count_text):
        raise UserError(f"LISTEN_FDS={count_text!r} is not a number of sockets")
    sockets: list[socket.socket] = []
    try:
        for fd in range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + int(count_text)):
            sockets.append(_adopt(fd, f"fd {fd} from systemd (LISTEN_FDS={count_text})"))
    except UserError:
        for sock in sockets:
            sock.detach()
        raise
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    return sockets


# Which peers may talk to us.


def socket_owner(user: str, group: str) -> tuple[int, int]:
    """The uid and gid of ``--socket-owner`` and ``--socket-group`` (names or numbers;
    -1 for one not given), for ``os.chown`` of unix sockets after binding."""
    import grp
    import pwd

    uid = gid = -1
    if user:
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            raise UserError(f"--socket-owner: no user named {user!r} on this system; give a user name or a uid"
                            ) from None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise UserError(f"--socket-group: no group named {group!r} on this system; give a group name or a gid"
                            ) from None
    return uid, gid


#: Accounts web servers commonly run as (Debian, Red Hat, Arch, their packages): who
#: ``--check-config`` expects to connect to a unix socket.
WEB_SERVER_USERS = ("www-data", "nginx", "apache", "http", "lighttpd", "caddy")


def unix_access(path: str) -> str:
    """Who may connect to the unix socket at *path*, for the startup log line:
    ``mode 0660, owner www-data:www-data: that user and group may connect``.

    Connecting to a unix socket needs write permission on its file (and root needs
    none), so the write bits decide.
    """
    try:
        info = os.stat(path)
    except OSError:
        return "its file is gone"
    mode = stat.S_IMODE(info.st_mode)
    owner = f"{user_name(info.st_uid)}:{group_name(info.st_gid)}"
    return f"mode {mode:04o}, owner {owner}: {_who(mode)} may connect"


def _who(mode: int) -> str:
    if mode & stat.S_IWOTH:
        return "every local user"
    match bool(mode & stat.S_IWUSR), bool(mode & stat.S_IWGRP):
        case True, True:
            return "that user and group"
        case True, False:
            return "that user"
        case False, True:
            return "that group"
    return "only root"


def user_name(uid: int) -> str:
    """The account name of *uid*, or the number when it has none."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    """The group name of *gid*, or the number when it has none."""
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def socket_warnings(config: Config) -> list[str]:
    """What ``--check-config`` warns about the unix sockets of ``-b`` (it still exits 0:
    a wide mode can be deliberate, say in a directory only the web server may enter).

    - a world-writable ``--socket-mode``: every local user could send requests, and
      with them any REMOTE_USER, HTTPS or REMOTE_ADDR the app trusts;
    - otherwise, a socket none of the usual web server accounts present on this
      machine (:data:`WEB_SERVER_USERS`) could connect to: its owner and group will be
      this user's unless ``--socket-owner``/``--socket-group`` say otherwise.
    """
    from ..config import parse_socket_mode

    paths = [a.path for a in map(parse_bind, config.bind) if isinstance(a, UnixAddress)]
    if not paths:
        return []
    mode = parse_socket_mode(config.socket_mode)
    if mode & stat.S_IWOTH:
        return [f"--socket-mode {mode:04o} lets every local user connect to unix:{path} and send requests "
                "with any REMOTE_USER, HTTPS or REMOTE_ADDR; use 660 and --socket-group with the web "
                "server's group" for path in paths]
    uid, gid = socket_owner(config.socket_owner, config.socket_group)
    warnings = []
    for path in paths:
        owner = uid if uid != -1 else os.geteuid()
        group = gid if gid != -1 else _new_file_group(path)
        users = _web_server_users()
        if users and not any(_may_connect(user, owner, group, mode) for user in users):
            names = ", ".join(user.pw_name for user in users)
            warnings.append(
                f"unix:{path} will be mode {mode:04o}, owner {user_name(owner)}:{group_name(group)}: no web "
                f"server account here ({names}) may connect; give the web server's group with --socket-group "
                f"(such as --socket-group {users[0].pw_name})"
            )
    return warnings


def _new_file_group(path: str) -> int:
    """The group a new file at *path* gets: its directory's when that is set-group-ID."""
    try:
        info = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return os.getegid()
    return info.st_gid if info.st_mode & stat.S_ISGID else os.getegid()


def _web_server_users() -> list[pwd.struct_passwd]:
    import pwd

    users = []
    for name in WEB_SERVER_USERS:
        with contextlib.suppress(KeyError):
            users.append(pwd.getpwnam(name))
    return users


def _may_connect(user: pwd.struct_passwd, owner: int, group: int, mode: int) -> bool:
    import grp

    if user.pw_uid == 0 or mode & stat.S_IWOTH:
        return True
    if user.pw_uid == owner:
        return bool(mode & stat.S_IWUSR)
    try:
        members = grp.getgrgid(group).gr_mem
    except KeyError:
        members = []
    return bool(mode & stat.S_IWGRP) and (user.pw_gid == group or user.pw_name in members)


def web_server_addrs(environ: Mapping[str, str]) -> frozenset[IPAddress] | None:
    """The addresses in ``FCGI_WEB_SERVER_ADDRS``, or None when it is unset or blank.

    The FastCGI specification: "FCGI_WEB_SERVER_ADDRS ... is a comma-separated list of
    valid IP addresses for the Web server. If FCGI_WEB_SERVER_ADDRS was set, the
    application checks the peer IP address of each new connection for membership in the
    list." IPv6 addresses are accepted as well, and IPv4-mapped ones match their IPv4.
    """
    raw = environ.get("FCGI_WEB_SERVER_ADDRS")
    if raw is None or not raw.strip():
        return None
    addresses = set()
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            addresses.add(_plain(ipaddress.ip_address(item)))
        except ValueError:
            raise UserError(
                f"FCGI_WEB_SERVER_ADDRS: {item!r} is not an IP address; list addresses separated by commas, "
                "such as 127.0.0.1,::1"
            ) from None
    if not addresses:
        raise UserError(f"FCGI_WEB_SERVER_ADDRS={raw!r} lists no addresses; unset it to allow every peer")
    return frozenset(addresses)


def peer_allowed(peername: object, allowed: frozenset[IPAddress] | frozenset[IPNetwork] | None) -> bool:
    """Whether a connection from *peername* (as ``getpeername()`` gives it) may be served.

    Unix socket peers (a ``str`` or ``bytes`` name) are always allowed: the file's
    permissions guard them. A TCP peer is allowed when *allowed* is None or lists it.
    Anything else (an unknown peer) is refused while a list is in force.
    """
    if allowed is None or isinstance(peername, str | bytes):
        return True
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return False
    try:
        address = ipaddress.ip_address(peername[0])
    except ValueError:
        return False
    address = _plain(address)
    if address in allowed:
        return True
    return any(isinstance(net, IPNetwork) and address in net for net in allowed)


def _plain(address: IPAddress) -> IPAddress:
    """*address* without an IPv6 zone, and as IPv4 when it is IPv4-mapped (::ffff:a.b.c.d)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address
