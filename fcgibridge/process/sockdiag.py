"""How many connections wait in the accept queue of listening sockets, for unix sockets and TCP.

The kernel tells through its sock_diag netlink interface (``NETLINK_SOCK_DIAG``, what
``ss -l`` uses): one dump request per address family, for listening sockets only, each
answer naming the socket by inode with its queue. A listening unix socket's queue comes
with ``UDIAG_SHOW_RQLEN`` (``unix_diag_rqlen``: connections waiting, and the backlog); a
listening TCP socket's is in ``inet_diag_msg`` itself (``idiag_rqueue``: waiting,
``idiag_wqueue``: the backlog). No privilege is needed.

Where netlink is not there (another system, a sandbox that forbids it), TCP sockets are
read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` (the accept queue is ``rx_queue`` in
the LISTEN state; the backlog is not shown), and unix sockets are not known at all.

Everything here is Linux only and best effort: a failure is an unknown queue, never an error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass

__all__ = ["Queue", "listen_queues", "socket_inodes"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_LISTEN = 10  # the LISTEN state, for unix sockets too
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4

_NLMSGHDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
# unix_diag_req: family, protocol, pad, states, inode, show, cookie[2]
_UNIX_REQ = struct.Struct("=BBHIIIII")
# unix_diag_msg: family, type, state, pad, inode, cookie[2]
_UNIX_MSG = struct.Struct("=BBBBIII")
_UNIX_RQLEN = struct.Struct("=II")
# inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48 bytes)
_INET_REQ = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode
_INET_MSG = struct.Struct("=BBBB48xIIIII")

#: Seconds one netlink dump may take before the answer counts as unknown.
TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Queue:
    """One listening socket's accept queue: connections waiting, and its size (None: not told)."""

    waiting: int
    backlog: int | None


def _align(size: int) -> int:
    return (size + 3) & ~3


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, data[offset + _NLMSGHDR.size: offset + length]
        offset += _align(length)


def _attributes(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each rtattr from *offset* on."""
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind, data[offset + _RTATTR.size: offset + length]
        offset += _align(length)


def _dump(request: bytes) -> list[bytes]:
    """Send one sock_diag dump request; the payload of every answer until the end of the dump.

    Raises OSError when netlink fails or says it failed.
    """
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:  # not Linux
        raise OSError(errno.EAFNOSUPPORT, "no netlink here")
    with socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendto(_NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY,
                                   NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request, (0, 0))
        payloads: list[bytes] = []
        while True:
            for kind, payload in _messages(sock.recv(65536)):
                if kind == NLMSG_DONE:
                    return payloads
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code:
                        raise OSError(code, os.strerror(code))
                    continue
                if kind == SOCK_DIAG_BY_FAMILY:
                    payloads.append(payload)


def unix_queues() -> dict[int, Queue]:
    """inode -> queue of every listening unix socket (in this network namespace). OSError when netlink fails."""
    found = {}
    request = _UNIX_REQ.pack(socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, 0, UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF)
    for payload in _dump(request):
        if len(payload) < _UNIX_MSG.size:
            continue
        _, _, state, _, inode, _, _ = _UNIX_MSG.unpack_from(payload)
        if state != TCP_LISTEN:
            continue
        for kind, value in _attributes(payload, _UNIX_MSG.size):
            if kind == UNIX_DIAG_RQLEN and len(value) >= _UNIX_RQLEN.size:
                waiting, backlog = _UNIX_RQLEN.unpack_from(value)
                found[inode] = Queue(waiting, backlog)
    return found


def tcp_queues() -> dict[int, Queue]:
    """inode -> queue of every listening TCP socket, IPv4 and IPv6. OSError when netlink fails."""
    found = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for payload in _dump(_INET_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)):
            if len(payload) < _INET_MSG.size:
                continue
            _, state, _, _, _, waiting, backlog, _, inode = _INET_MSG.unpack_from(payload)
            if state == TCP_LISTEN:
                found[inode] = Queue(waiting, backlog)
    return found


def proc_tcp_queues() -> dict[int, Queue]:
    """The fallback for TCP: inode -> queue from ``/proc/net/tcp*`` (no backlog there)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A":
                        found[int(fields[9])] = Queue(int(fields[4].partition(":")[2], 16), None)
        except (OSError, ValueError):
            continue
    return found


def listen_queues(inodes: Collection[int]) -> dict[int, Queue]:
    """The queues of those of *inodes* that are listening sockets the kernel tells about.

    Netlink first; TCP from ``/proc/net`` when that fails. A listening unix socket is
    missing from the answer only where netlink is not there.
    """
    wanted = set(inodes)
    found: dict[int, Queue] = {}
    with contextlib.suppress(OSError):
        found.update(unix_queues())
    try:
        found.update(tcp_queues())
    except OSError:
        found.update(proc_tcp_queues())
    return {inode: queue for inode, queue in found.items() if inode in wanted}


def socket_inodes(pid: int | str = "self") -> list[int]:
    """The inodes of the sockets process *pid* has open (listening or not), from ``/proc/PID/fd``."""
    inodes = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in names:
        with contextlib.suppress(OSError, ValueError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.append(int(target[8:-1]))
    return inodes
