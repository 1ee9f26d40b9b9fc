"""The scoreboard: what every worker is doing, in memory all worker processes share.

The parent creates it before it forks (:func:`install`), so every worker inherits the
same shared mapping; with ``-w 1`` the one process creates it for itself. A worker claims
one fixed-size slot (:meth:`Scoreboard.claim`) and is the only writer of that slot; any
worker answering the status path reads every slot. Nothing goes through the parent.

A slot is claimed by taking a POSIX record lock on one byte of the backing memfd: the
kernel drops the lock when the process dies, so the slot of a crashed worker is free
for its replacement, which first adds the old slot's counters to the totals in the
header (under the header's lock), so totals never go backwards across restarts.

Reads are not synchronised with writes: a figure can be one request behind, as in any
status page, but each field is written whole.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from dataclasses import dataclass

__all__ = ["Scoreboard", "Slot", "SlotView", "for_workers"]

# Header: start time (wall clock), number of slots, then the totals of retired slots
# (accepted connections, requests served, slow requests, times at capacity), then how
# often the supervisor wanted another worker past --max-workers (PHP-FPM's "max children
# reached", written by the supervisor only).
_HEADER = struct.Struct("=dI4xQQQQQ")
_TOTALS = struct.Struct("=QQQQ")
_OFF_TOTALS = 16
_OFF_MAX_CHILDREN = _OFF_TOTALS + _TOTALS.size
# Slot: pid, state, in flight, max in flight, accepted, served, slow, saturated,
# request start (wall clock), last duration, method, uri.
_SLOT_HEAD = struct.Struct("=iIIIQQQQdd8s")
URI_SIZE = 240
_SLOT = struct.Struct(_SLOT_HEAD.format + f"{URI_SIZE}s")

STATES = ("free", "idle", "busy")
IDLE, BUSY = 1, 2

# Offsets of the fields a worker updates on every request.
_OFF_STATE = 4
_OFF_IN_FLIGHT = 8
_OFF_MAX_IN_FLIGHT = 12
_OFF_ACCEPTED = 16
_OFF_SERVED = 24
_OFF_SLOW = 32
_OFF_SATURATED = 40
_OFF_START = 48
_OFF_DURATION = 56
_OFF_METHOD = 64
_OFF_URI = 72


@dataclass(frozen=True, slots=True)
class SlotView:
    """One slot as read by the status page."""

    index: int
    pid: int
    state: str
    in_flight: int
    max_in_flight: int
    accepted: int
    served: int
    slow: int
    saturated: int
    request_start: float
    last_duration: float
    method: str
    uri: str

    @property
    def alive(self) -> bool:
        if self.pid <= 0 or self.state == "free":
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass(frozen=True, slots=True)
class Totals:
    start_time: float
    accepted: int
    served: int
    slow: int
    saturated: int


class Scoreboard:
    """A header and ``slots`` slots in an anonymous shared mapping."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.size = _HEADER.size + slots * _SLOT.size
        self.fd = os.memfd_create("fcgibridge-scoreboard", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        _HEADER.pack_into(self.map, 0, time.time(), slots, 0, 0, 0, 0, 0)
        self._claimed: set[int] = set()  # by this process (threads in tests claim several)

    @property
    def start_time(self) -> float:
        return float(_HEADER.unpack_from(self.map, 0)[0])

    @property
    def max_children_reached(self) -> int:
        return int(struct.unpack_from("=Q", self.map, _OFF_MAX_CHILDREN)[0])

    def count_max_children_reached(self) -> None:
        """The supervisor (the one writer of this field) wanted a worker more than ``--max-workers``."""
        struct.pack_into("=Q", self.map, _OFF_MAX_CHILDREN, self.max_children_reached + 1)

    def _offset(self, index: int) -> int:
        return _HEADER.size + index * _SLOT.size

    def claim(self) -> Slot | None:
        """A free slot for this worker, or None when all are taken."""
        for index in range(self.slots):
            if index in self._claimed:
                continue
            try:  # byte index+1 of the file stands for the slot; byte 0 for the header
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index + 1)
            except OSError:
                continue
            self._claimed.add(index)
            self._retire(index)
            offset = self._offset(index)
            _SLOT.pack_into(self.map, offset, os.getpid(), IDLE, 0, 0, 0, 0, 0, 0, 0.0, 0.0, b"", b"")
            return Slot(self, index, offset)
        return None

    def _retire(self, index: int) -> None:
        """Move the counters a previous owner left in slot *index* into the header totals."""
        old = self.read_slot(index)
        if not (old.accepted or old.served or old.slow or old.saturated):
            return
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
        try:
            accepted, served, slow, saturated = _TOTALS.unpack_from(self.map, _OFF_TOTALS)
            _TOTALS.pack_into(self.map, _OFF_TOTALS, accepted + old.accepted, served + old.served,
                              slow + old.slow, saturated + old.saturated)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)

    def read_slot(self, index: int) -> SlotView:
        (pid, state, in_flight, max_in_flight, accepted, served, slow, saturated, start, duration, method,
         uri) = _SLOT.unpack_from(self.map, self._offset(index))
        return SlotView(index, pid, STATES[state] if state < len(STATES) else "free", in_flight, max_in_flight,
                        accepted, served, slow, saturated, start, duration,
                        method.rstrip(b"\0").decode("latin-1"), uri.rstrip(b"\0").decode("utf-8", "replace"))

    def read(self) -> tuple[Totals, list[SlotView]]:
        """The totals (retired slots plus every slot) and every slot ever used."""
        start, _, accepted, served, slow, saturated, _ = _HEADER.unpack_from(self.map, 0)
        views = [self.read_slot(index) for index in range(self.slots)]
        used = [view for view in views if view.pid]
        totals = Totals(start, accepted + sum(v.accepted for v in used), served + sum(v.served for v in used),
                        slow + sum(v.slow for v in used), saturated + sum(v.saturated for v in used))
        return totals, used


class Slot:
    """The one slot a worker writes."""

    __slots__ = (
        "_map",
        "accepted",
        "board",
        "in_flight",
        "index",
        "max_in_flight",
        "offset",
        "saturated",
        "served",
        "slow",
    )

    def __init__(self, board: Scoreboard, index: int, offset: int) -> None:
        self.board = board
        self.index = index
        self.offset = offset
        self._map = board.map
        self.in_flight = self.max_in_flight = 0
        self.accepted = self.served = self.slow = self.saturated = 0

    def connection_accepted(self) -> None:
        self.accepted += 1
        struct.pack_into("=Q", self._map, self.offset + _OFF_ACCEPTED, self.accepted)

    def request_started(self, method: str, uri: str, saturated: bool) -> None:
        self.in_flight += 1
        offset = self.offset
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
            struct.pack_into("=I", self._map, offset + _OFF_MAX_IN_FLIGHT, self.max_in_flight)
        if saturated:
            self.saturated += 1
            struct.pack_into("=Q", self._map, offset + _OFF_SATURATED, self.saturated)
        struct.pack_into("=II", self._map, offset + _OFF_STATE, BUSY, self.in_flight)
        struct.pack_into("=d", self._map, offset + _OFF_START, time.time())
        struct.pack_into(f"=8s{URI_SIZE}s", self._map, offset + _OFF_METHOD, method.encode("latin-1", "replace")[:8],
                         uri.encode("utf-8", "replace")[:URI_SIZE])

    def request_done(self, duration: float, slow: bool) -> None:
        self.in_flight -= 1
        self.served += 1
        offset = self.offset
        if slow:
            self.slow += 1
            struct.pack_into("=Q", self._map, offset + _OFF_SLOW, self.slow)
        struct.pack_into("=Q", self._map, offset + _OFF_SERVED, self.served)
        struct.pack_into("=d", self._map, offset + _OFF_DURATION, duration)
        struct.pack_into("=II", self._map, offset + _OFF_STATE, BUSY if self.in_flight else IDLE, self.in_flight)


def for_workers(workers: int) -> Scoreboard:
    """The scoreboard of a server of ``workers`` (made in the parent, before forking;
    room for replacements and workers added with TTIN)."""
    return Scoreboard(max(16, 4 * workers))
