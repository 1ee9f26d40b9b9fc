"""How many connections each worker holds, in memory every worker process shares.

``--max-connections`` is a worker's share, and the server behind the address holds
``workers x max_connections`` (what GET_VALUES reports as FCGI_MAX_CONNS). But the
kernel hands each new connection to whichever worker accepts first, not to the one with
room: under a burst one worker may reach its share while another still has room (with
``-w 2 --max-connections 1024``, of 2,048 connections opened at once the server held
2,005 to 2,047 in five runs, the rest closed to make room).
So a worker that holds its share looks here as it accepts: while the workers together hold less than
``workers x max_connections`` it takes the newcomer on, even past its own share; only
when the whole server is full does it make room (closing its connection idle longest)
or refuse.

The parent makes the table before it forks (like the scoreboard), so every worker maps
the same memory. A worker claims a slot with a POSIX record lock on one byte of the
memfd (the kernel drops it when the process dies, so a replacement may take the slot
over) and is the only writer of its slot: its pid and its count. Reads take no lock: a
count can be a moment old, which only moves the line by the connections opened or
closed in that moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import time

from .identity import alive

__all__ = ["ConnectionShares"]

#: One slot: the pid of the worker holding it, and its open connections.
_SLOT = struct.Struct("=qq")


class ConnectionShares:
    """The open connections of every worker of one server (see the module docstring)."""

    def __init__(self, workers: int) -> None:
        # Room for a reload's new workers beside the old ones, and for replacements of
        # crashed ones whose slots are free again.
        self.slots = max(8, 4 * workers)
        self.fd = os.memfd_create("fcgibridge-connections", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.slots * _SLOT.size)
        self.memory = mmap.mmap(self.fd, self.slots * _SLOT.size)
        self.index = -1
        self._seen_alive: dict[int, float] = {}  # pid: when it was last seen alive

    def claim(self) -> bool:
        """Take a free slot for this process (in the worker, after the fork); False when
        every slot is taken (the worker then counts on its own share only)."""
        for index in range(self.slots):
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
            except OSError:
                continue
            self.index = index
            _SLOT.pack_into(self.memory, index * _SLOT.size, os.getpid(), 0)
            return True
        return False

    def publish(self, count: int) -> None:
        """This worker's open connections."""
        if self.index >= 0:
            _SLOT.pack_into(self.memory, self.index * _SLOT.size, os.getpid(), count)

    def others(self) -> int:
        """The connections the other live workers hold (asked on every accept past this
        worker's share: whether a worker is alive is checked at most once a second)."""
        total = 0
        now = time.monotonic()
        for index in range(self.slots):
            if index == self.index:
                continue
            pid, count = _SLOT.unpack_from(self.memory, index * _SLOT.size)
            if pid <= 0 or count <= 0:
                continue
            if self._seen_alive.get(pid, -1.0) < now - 1.0:
                if not alive(pid):
                    continue
                if len(self._seen_alive) > 4 * self.slots:
                    self._seen_alive.clear()
                self._seen_alive[pid] = now
            total += count
        return total

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.memory.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
