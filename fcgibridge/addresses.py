"""FastCGI addresses: one grammar for where the server listens and where a client connects.

Both the server's ``-b`` (:func:`parse_bind`) and the client (:func:`parse_connect`,
hence ``FastCGIClient``, the proxy and ``fcgibridge request``) read:

- ``HOST:PORT``: TCP; HOST is a name or an IPv4 address.
- ``[IPV6]:PORT``: TCP on IPv6, the address in brackets (a zone may follow it:
  ``[fe80::1%eth0]:9000``).
- ``unix:PATH``: a unix socket. ``unix://PATH`` is the same, so ``unix:///run/app.sock``
  is ``/run/app.sock``; a relative PATH is relative to the working directory.
- ``fd://N``: the server only: the listening socket inherited as file descriptor N.
  A client refuses it (there is nothing to connect to).

The sides differ where a value means something only to one of them:

- ``:PORT`` (no host): a client connects to ``127.0.0.1:PORT``; the server refuses it,
  since listening there could mean this machine only or every interface, and the
  message asks for ``127.0.0.1:PORT`` or ``0.0.0.0:PORT``.
- Port 0: the server binds any free port; a client refuses it (it needs the port the
  server listens on).

Both strip surrounding blanks and refuse a port not written in ASCII digits or above
65535, an IPv6 address without brackets, another scheme (``tcp://``), a bare path
(``/run/app.sock``: write ``unix:/run/app.sock``) and a bare port (``9000``: write
``127.0.0.1:9000``). Every mistake is an :class:`AddressError`, one line that names the
address and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from .errors import UserError

__all__ = [
    "Address",
    "AddressError",
    "FdAddress",
    "TcpAddress",
    "UnixAddress",
    "parse_bind",
    "parse_connect",
]


class AddressError(UserError, ValueError):
    """A malformed address. A :class:`~fcgibridge.errors.UserError` for the command line
    (``-b``) and a :class:`ValueError` for the client's callers."""


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """``HOST:PORT``; ``host`` is an IPv6 address (without brackets), an IPv4 address or a name."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """``unix:PATH``."""

    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True, slots=True)
class FdAddress:
    """``fd://N``: a listening socket the server inherited (only the server has these)."""

    fd: int

    def __str__(self) -> str:
        return f"fd://{self.fd}"


Address = TcpAddress | UnixAddress | FdAddress

Side = Literal["bind", "connect"]

#: How each side names an address in its messages, and the forms it takes.
_LABEL = {"bind": "bind address", "connect": "bad FastCGI address"}
_NOUN = {"bind": "bind address", "connect": "FastCGI address"}
_FORMS = {
    "bind": "use HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N",
    "connect": "use HOST:PORT, [IPv6]:PORT or unix:PATH",
}
_LOWEST_PORT = {"bind": 0, "connect": 1}


def parse_bind(text: str) -> Address:
    """Parse one ``-b`` address (see the module docstring); raises :class:`AddressError`."""
    return _parse(text, "bind")


def parse_connect(text: str) -> TcpAddress | UnixAddress:
    """Parse the address a client connects to (see the module docstring); raises :class:`AddressError`."""
    address = _parse(text, "connect")
    assert not isinstance(address, FdAddress)  # _parse refuses fd:// for a client
    return address


def _parse(text: str, side: Side) -> Address:
    text = text.strip()
    label = f"{_LABEL[side]} {text!r}"
    if not text:
        raise AddressError(f"empty {_NOUN[side]}; {_FORMS[side]}")
    if text.startswith("unix:"):
        return _unix(text, label)
    if text.startswith("fd://"):
        return _fd(text, label, side)
    if "://" in text:
        raise AddressError(f"{label} has an unknown scheme; {_FORMS[side]}")
    if text.startswith(("/", "./", "../", "~")):
        raise AddressError(f"{label} looks like a path; write unix:{text}")
    host, port_text = _bracketed(text, label) if text.startswith("[") else _plain(text, label, side)
    lowest = _LOWEST_PORT[side]
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise AddressError(f"{label}: the port must be a number from {lowest} to 65535")
    if int(port_text) < lowest:
        raise AddressError(f"{label}: port 0 means any free port, which only a server can bind; "
                           "give the port the server listens on")
    return TcpAddress(host, int(port_text))


def _unix(text: str, label: str) -> UnixAddress:
    path = text.removeprefix("unix:")
    path = path[2:] if path.startswith("//") else path  # unix:///run/app.sock is unix:/run/app.sock
    if not path:
        raise AddressError(f"{label} has no path; write unix:/run/app.sock, for example")
    if "\0" in path:
        raise AddressError(f"{label} contains a NUL character")
    return UnixAddress(path)


def _fd(text: str, label: str, side: Side) -> FdAddress:
    if side == "connect":
        raise AddressError(f"{label}: fd://N names a socket a server inherited, there is nothing to connect to; "
                           f"{_FORMS[side]}")
    number = text.removeprefix("fd://")
    if not re.fullmatch(r"[0-9]+", number):
        raise AddressError(f"{label} needs a file descriptor number, such as fd://3")
    return FdAddress(int(number))


def _bracketed(text: str, label: str) -> tuple[str, str]:
    """Host and port text of ``[IPv6]:PORT``."""
    host, bracket, rest = text[1:].partition("]")
    if not bracket:
        raise AddressError(f"{label} lacks the closing ']'; write [::1]:9000, for example")
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise AddressError(f"{label}: {host!r} is not an IPv6 address") from None
    if not rest.startswith(":"):
        raise AddressError(f"{label} has no port; write [{host}]:9000, for example")
    return host, rest[1:]


def _plain(text: str, label: str, side: Side) -> tuple[str, str]:
    """Host and port text of ``HOST:PORT`` (and ``:PORT`` for a client)."""
    host, colon, port_text = text.rpartition(":")
    if not colon:
        example = f"127.0.0.1:{text}" if text.isdigit() else f"{text}:9000"
        raise AddressError(f"{label} has no port; write {example}, for example")
    if ":" in host:
        raise AddressError(f"{label}: IPv6 addresses go in brackets, as in [{host}]:{port_text}")
    if not host and side == "connect":
        return "127.0.0.1", port_text  # connecting to "the port here" is unambiguous
    if not host:
        # Listening on ":9000" could mean this machine only or every interface; say which.
        raise AddressError(
            f"{label} has no host; write 127.0.0.1:{port_text} (this machine only) "
            f"or 0.0.0.0:{port_text} (every interface)"
        )
    return host, port_text
