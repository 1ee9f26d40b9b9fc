"""The scoreboard: what every worker is doing, in memory all worker processes share.

The parent creates it before it forks (:func:`install`), so every worker inherits the
same shared mapping; with ``-w 1`` the one process creates it for itself. A worker claims
one fixed-size slot (:meth:`Scoreboard.claim`) and is the only writer of that slot; any
worker answering the status path reads every slot. Nothing goes through the parent.

A slot is claimed by taking a POSIX record lock on one byte of the backing memfd: the
kernel drops the lock when the process dies, so the slot of a crashed worker is free
for its replacement, which first adds the old slot's counters to the totals in the
header (under the header's lock), so totals never go backwards across restarts.

Besides the counters, a slot holds its worker's request-duration histogram (fixed
:data:`BUCKETS`, added to the header's like the counters when the slot is reused) and,
while a status page is on, what the worker's last request cost. The header also keeps
the most workers seen busy at once (each worker counts the busy map as it becomes busy:
a slice of shared memory, no system call) and the longest listen queue seen (the
supervisor samples it every second, and every status page reader raises it to what it sees).

Reads are not synchronised with a worker's writes: a figure can be one request behind, as
in any status page, but each field is written whole. A new worker moves the old figures of
its slot into the totals and empties the slot under the header's lock, and a reader holds
it (shared) while it reads, so totals never count a retired slot twice or not at all.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import mmap
import os
import struct
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["BUCKETS", "Scoreboard", "Slot", "SlotView", "Totals", "for_workers"]

log = logging.getLogger("fcgibridge.server")

#: Upper bounds (seconds) of the request-duration histogram's buckets; one more counts the rest.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_COUNTS = f"{len(BUCKETS) + 1}Q"

# Header: start time (wall clock), number of slots, then the totals of retired slots
# (accepted connections, requests served, slow requests, times at capacity, requests
# refused past --limit-concurrency), then how
# often the supervisor wanted another worker past --max-workers (PHP-FPM's "max children
# reached", written by the supervisor only), the most workers seen busy at once and the
# longest listen queue seen (written by whoever sees them, under the header's lock), and
# the retired slots' request-duration histogram (bucket counts, sum of durations). Then one
# byte per slot, 1 while its worker has a request in flight (the busy map), padded to 8.
_HEADER = struct.Struct(f"=dI4xQQQQQQQQ{_COUNTS}d")
_OFF_BUSY = _HEADER.size
_TOTALS = struct.Struct("=QQQQQ")
_OFF_TOTALS = 16
_OFF_MAX_CHILDREN = _OFF_TOTALS + _TOTALS.size
_OFF_PEAKS = _OFF_MAX_CHILDREN + 8
_PEAKS = struct.Struct("=QQ")
_OFF_HISTOGRAM = _OFF_PEAKS + _PEAKS.size
_HISTOGRAM = struct.Struct(f"={_COUNTS}d")
# Slot: pid, state, in flight, max in flight, accepted, served, slow, saturated,
# request start (wall clock), last duration, method, uri; then when the slot was claimed
# (wall clock), the CPU time (s) and the peak RSS (bytes) of the worker's last request,
# the requests it refused past --limit-concurrency, and its request-duration histogram
# (bucket counts, sum of durations).
_SLOT_HEAD = struct.Struct("=iIIIQQQQdd8s")
URI_SIZE = 240
_SLOT_TAIL = struct.Struct(f"=ddQQ{_COUNTS}d")
_SLOT = struct.Struct(_SLOT_HEAD.format + f"{URI_SIZE}s" + _SLOT_TAIL.format[1:])

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
_OFF_USAGE = _OFF_URI + URI_SIZE + 8  # last request's CPU time and peak RSS
_OFF_REFUSED = _OFF_USAGE + 16
_OFF_BUCKETS = _OFF_REFUSED + 8
_OFF_DURATION_SUM = _OFF_BUCKETS + 8 * (len(BUCKETS) + 1)
assert _SLOT.size == _OFF_DURATION_SUM + 8
assert _HEADER.size == _OFF_HISTOGRAM + _HISTOGRAM.size


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
    #: When the slot was claimed (wall clock): the worker's start.
    started: float = 0.0
    #: CPU time (user + system, seconds) the worker used while its last request ran.
    last_cpu: float = 0.0
    #: The worker's peak RSS (bytes) when its last request ended.
    last_memory: int = 0
    #: Requests per duration bucket (:data:`BUCKETS`, then the rest; not cumulative).
    durations: tuple[int, ...] = ()
    #: Seconds all of them took together.
    duration_sum: float = 0.0
    #: Requests it answered 503 past ``--limit-concurrency``.
    refused: int = 0

    @property
    def number(self) -> int:
        """The slot's number (1, 2, ...): the ``worker`` label of the metrics."""
        return self.index + 1

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
    #: How often the supervisor wanted a worker past ``--max-workers``.
    max_children_reached: int = 0
    #: The most workers seen busy at once, and the longest listen queue seen.
    max_active_workers: int = 0
    max_listen_queue: int = 0
    #: The request-duration histogram over every slot, retired ones included (not cumulative).
    durations: tuple[int, ...] = ()
    duration_sum: float = 0.0
    #: Requests answered 503 past ``--limit-concurrency``.
    refused: int = 0


class Scoreboard:
    """A header and ``slots`` slots in an anonymous shared mapping."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.header_size = _OFF_BUSY + (slots + 7) // 8 * 8
        self.size = self.header_size + slots * _SLOT.size
        self.fd = os.memfd_create("fcgibridge-scoreboard", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        struct.pack_into("=dI", self.map, 0, time.time(), slots)  # the rest of a new memfd is zeros
        self._claimed: set[int] = set()  # by this process (threads in tests claim several)
        self._thread_lock = threading.Lock()
        board = weakref.ref(self)  # a fork while a thread holds the lock: the child's copy is free
        os.register_at_fork(after_in_child=lambda: _new_thread_lock(board()))
        #: The slot a new worker tries first (its worker number - 1, set right after the fork),
        #: so that a slot's number is the worker's number whenever that slot is free.
        self.preferred: int | None = None

    @property
    def start_time(self) -> float:
        return float(_HEADER.unpack_from(self.map, 0)[0])

    @property
    def max_children_reached(self) -> int:
        return int(struct.unpack_from("=Q", self.map, _OFF_MAX_CHILDREN)[0])

    def count_max_children_reached(self) -> None:
        """The supervisor (the one writer of this field) wanted a worker more than ``--max-workers``."""
        struct.pack_into("=Q", self.map, _OFF_MAX_CHILDREN, self.max_children_reached + 1)

    def note_peaks(self, active_workers: int, listen_queue: int | None) -> None:
        """Raise the most-busy-workers and longest-listen-queue figures to what was just seen.

        Any process may call it (a worker that becomes busy, the supervisor every second,
        a status page reader); the header's lock keeps one from lowering what another wrote.
        """
        queue = listen_queue or 0
        most_active, longest = _PEAKS.unpack_from(self.map, _OFF_PEAKS)
        if active_workers <= most_active and queue <= longest:
            return
        with self._header_locked():
            most_active, longest = _PEAKS.unpack_from(self.map, _OFF_PEAKS)
            _PEAKS.pack_into(self.map, _OFF_PEAKS, max(most_active, active_workers), max(longest, queue))

    @contextlib.contextmanager
    def _header_locked(self, shared: bool = False) -> Iterator[None]:
        # Byte 0 of the file stands for the header. A record lock belongs to the process,
        # not the thread, so threads of one process (the master's status listener and its
        # tick) take turns on a thread lock first.
        with self._thread_lock:
            fcntl.lockf(self.fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, 1, 0)
            try:
                yield
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)

    def _offset(self, index: int) -> int:
        return self.header_size + index * _SLOT.size

    def busy_workers(self) -> int:
        """Slots whose worker has a request in flight now, from the busy map."""
        return self.map[_OFF_BUSY:_OFF_BUSY + self.slots].count(1)

    def released(self, pid: int) -> None:
        """Worker *pid* is gone (the supervisor reaped it): its slot no longer counts as busy,
        even if it died in the middle of a request."""
        for index in range(self.slots):
            if struct.unpack_from("=i", self.map, self._offset(index))[0] == pid:
                self.map[_OFF_BUSY + index] = 0

    def claim(self) -> Slot | None:
        """A free slot for this worker (:attr:`preferred` first), or None when all are taken."""
        order = list(range(self.slots))
        if self.preferred is not None and 0 <= self.preferred < self.slots:
            order.remove(self.preferred)
            order.insert(0, self.preferred)
        for index in order:
            if index in self._claimed:
                continue
            try:  # byte index+1 of the file stands for the slot
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index + 1)
            except OSError:
                continue
            self._claimed.add(index)
            offset = self._offset(index)
            # The old figures into the totals and the slot emptied in one step under the
            # header's lock, which readers take too: a reader in between would count them
            # twice, then once again (a counter going backwards is a reset to Prometheus).
            with self._header_locked():
                self._retire(index)
                self.map[_OFF_BUSY + index] = 0
                _SLOT.pack_into(self.map, offset, os.getpid(), IDLE, 0, 0, 0, 0, 0, 0, 0.0, 0.0, b"", b"",
                                time.time(), 0.0, 0, 0, *_NO_COUNTS, 0.0)
            return Slot(self, index, offset)
        log.warning("the scoreboard's %d slots are all taken: worker pid %d serves, but the status page, "
                    "--pm and --timeout's hard kill do not see it (fewer workers, or a restart with a larger -w)",
                    self.slots, os.getpid())
        return None

    def _retire(self, index: int) -> None:
        """Move the counters a previous owner left in slot *index* into the header totals
        (the caller holds the header's lock)."""
        old = self.read_slot(index)
        if not (old.accepted or old.served or old.slow or old.saturated or old.refused):
            return
        accepted, served, slow, saturated, refused = _TOTALS.unpack_from(self.map, _OFF_TOTALS)
        _TOTALS.pack_into(self.map, _OFF_TOTALS, accepted + old.accepted, served + old.served,
                          slow + old.slow, saturated + old.saturated, refused + old.refused)
        *counts, total = _HISTOGRAM.unpack_from(self.map, _OFF_HISTOGRAM)
        _HISTOGRAM.pack_into(self.map, _OFF_HISTOGRAM, *_add(counts, old.durations), total + old.duration_sum)

    def read_slot(self, index: int) -> SlotView:
        (pid, state, in_flight, max_in_flight, accepted, served, slow, saturated, start, duration, method,
         uri, started, last_cpu, last_memory, refused, *counts, duration_sum) = _SLOT.unpack_from(
            self.map, self._offset(index))
        return SlotView(index, pid, STATES[state] if state < len(STATES) else "free", in_flight, max_in_flight,
                        accepted, served, slow, saturated, start, duration,
                        method.rstrip(b"\0").decode("latin-1"), uri.rstrip(b"\0").decode("utf-8", "replace"),
                        started, last_cpu, last_memory, tuple(counts), duration_sum, refused)

    def read(self) -> tuple[Totals, list[SlotView]]:
        """The totals (retired slots plus every slot) and every slot ever used."""
        with self._header_locked(shared=True):  # not while a new worker moves a slot into the totals
            (start, _, accepted, served, slow, saturated, refused, max_children, max_active, max_queue, *counts,
             duration_sum) = _HEADER.unpack_from(self.map, 0)
            views = [self.read_slot(index) for index in range(self.slots)]
        used = [view for view in views if view.pid]
        for view in used:
            counts = _add(counts, view.durations)
        totals = Totals(start, accepted + sum(v.accepted for v in used), served + sum(v.served for v in used),
                        slow + sum(v.slow for v in used), saturated + sum(v.saturated for v in used),
                        max_children, max_active, max_queue, tuple(counts),
                        duration_sum + sum(v.duration_sum for v in used), refused + sum(v.refused for v in used))
        return totals, used


def _new_thread_lock(board: Scoreboard | None) -> None:
    if board is not None:
        board._thread_lock = threading.Lock()


_NO_COUNTS = (0,) * (len(BUCKETS) + 1)
_Q = struct.Struct("=Q")
_D = struct.Struct("=d")


def _add(counts: Sequence[int], more: Sequence[int]) -> list[int]:
    return [a + b for a, b in zip(counts, more, strict=True)]


class Slot:
    """The one slot a worker writes."""

    __slots__ = (
        "_busy",
        "_busy_end",
        "_map",
        "_peak",
        "accepted",
        "board",
        "counts",
        "duration_sum",
        "in_flight",
        "index",
        "max_in_flight",
        "offset",
        "refused",
        "saturated",
        "served",
        "shown",
        "slow",
    )

    def __init__(self, board: Scoreboard, index: int, offset: int) -> None:
        self.board = board
        self.index = index
        self.offset = offset
        self._map = board.map
        self._busy = _OFF_BUSY + index
        self._busy_end = _OFF_BUSY + board.slots
        self._peak = 0  # the most busy workers at once, as this worker last read it
        #: Whether a status page shows this slot: only then the histogram and the busy map
        #: are kept (a scoreboard without one serves the scaler and --timeout, which need neither).
        self.shown = True
        self.in_flight = self.max_in_flight = 0
        self.accepted = self.served = self.slow = self.saturated = self.refused = 0
        self.counts = list(_NO_COUNTS)
        self.duration_sum = 0.0

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
        if self.in_flight == 1 and self.shown:  # became busy: into the busy map, and count it
            self._map[self._busy] = 1
            if self._map[_OFF_BUSY:self._busy_end].count(1) > self._peak:
                self._raise_peak()
        struct.pack_into("=d", self._map, offset + _OFF_START, time.time())
        struct.pack_into(f"=8s{URI_SIZE}s", self._map, offset + _OFF_METHOD, method.encode("latin-1", "replace")[:8],
                         uri.encode("utf-8", "replace")[:URI_SIZE])

    def request_done(self, duration: float, slow: bool) -> None:
        """A request ended after *duration* seconds: served, its histogram bucket, its state."""
        self.in_flight -= 1
        self.served += 1
        offset = self.offset
        if slow:
            self.slow += 1
            struct.pack_into("=Q", self._map, offset + _OFF_SLOW, self.slow)
        if self.shown:
            bucket = bisect.bisect_left(BUCKETS, duration)
            self.counts[bucket] += 1
            self.duration_sum += duration
            _Q.pack_into(self._map, offset + _OFF_BUCKETS + 8 * bucket, self.counts[bucket])
            _D.pack_into(self._map, offset + _OFF_DURATION_SUM, self.duration_sum)
        struct.pack_into("=Q", self._map, offset + _OFF_SERVED, self.served)
        struct.pack_into("=d", self._map, offset + _OFF_DURATION, duration)
        struct.pack_into("=II", self._map, offset + _OFF_STATE, BUSY if self.in_flight else IDLE, self.in_flight)
        if not self.in_flight and self.shown:
            self._map[self._busy] = 0

    def _raise_peak(self) -> None:
        """More workers are busy than this worker last knew the most to be: raise the
        board's figure if it is lower too (it only rises, so a copy here is enough to skip
        this on almost every request)."""
        self.board.note_peaks(self.board.busy_workers(), None)
        self._peak = int(struct.unpack_from("=Q", self._map, _OFF_PEAKS)[0])

    def request_refused(self) -> None:
        """A request was answered 503 past ``--limit-concurrency`` (it is served as well)."""
        self.refused += 1
        _Q.pack_into(self._map, self.offset + _OFF_REFUSED, self.refused)

    def request_usage(self, cpu: float, memory: int) -> None:
        """What the last request cost: *cpu* seconds of CPU time, the peak RSS *memory* (bytes).
        Measured only while a status page is on (see :class:`~fcgibridge.process.status.Observer`)."""
        struct.pack_into("=dQ", self._map, self.offset + _OFF_USAGE, cpu, memory)


def for_workers(workers: int) -> Scoreboard:
    """The scoreboard of a server of at most ``workers`` (``-w``, or ``--max-workers``
    with ``--pm dynamic`` / ``ondemand``), made in the parent before forking: room for
    replacements still starting while the old workers finish, and workers added with TTIN.
    A worker that finds every slot taken serves unseen, and says so (:meth:`Scoreboard.claim`)."""
    return Scoreboard(max(16, 4 * workers))
