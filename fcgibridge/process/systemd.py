"""systemd integration: ``sd_notify`` for ``Type=notify`` units (socket activation is in
:mod:`fcgibridge.process.listeners`)."""

from __future__ import annotations

import contextlib
import os
import socket


def sd_notify(state: str) -> bool:
    """Send *state* to ``$NOTIFY_SOCKET`` (systemd); False when not started that way."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), address)
        return True
    return False
