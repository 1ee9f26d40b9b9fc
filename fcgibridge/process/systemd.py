"""systemd integration: ``sd_notify`` for ``Type=notify`` units (socket activation is in
:mod:`fcgibridge.process.listeners`).

Under a supervisor, :class:`SystemdNotifier` follows the master's events: READY=1 once
the first worker serves (with ``--pm ondemand``, at the first tick with no worker), a
STATUS= line as the counts change, RELOADING=1 on SIGHUP and READY=1 again once the new
workers serve, STOPPING=1 as the stop begins. A :class:`Watchdog` thread sends
WATCHDOG=1 every half ``$WATCHDOG_USEC`` while the supervisor loop keeps ticking.
Without a supervisor, :func:`run.run` sends READY=1 and STOPPING=1 (as the worker's stop
begins) itself and runs the watchdog alone, petting while the process's event loop still
runs callbacks (:class:`LoopLiveness`), so a loop held by a blocking call is seen.

Every message is one datagram to ``$NOTIFY_SOCKET``; nothing is sent when it is unset,
so all of this costs nothing outside systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from .scoreboard import Scoreboard
from .supervisor import NOT_READY, TICK, Phase, Supervisor, SupervisorEvents

#: After RELOADING=1, how long before "no new worker is still starting" means the reload
#: is done: the workers ask for their successors within this time of the SIGHUP.
RELOAD_SETTLE = 0.5

#: The watchdog stops petting when the supervisor loop has not ticked for this long (it
#: ticks every TICK seconds), so that systemd sees a master that hangs.
STALL_AFTER = 3 * TICK


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


def notify_socket_set(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether systemd (or anything speaking its protocol) listens on ``$NOTIFY_SOCKET``."""
    return bool(environ.get("NOTIFY_SOCKET"))


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between two WATCHDOG=1 (half of ``$WATCHDOG_USEC``), or None when systemd
    wants none from this process (unset, not a positive number, or ``$WATCHDOG_PID``
    names another process), as sd_watchdog_enabled(3) reads them."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


class Watchdog:
    """A daemon thread sending WATCHDOG=1 every *interval* seconds while *alive* says so."""

    def __init__(self, interval: float, alive: Callable[[], bool] | None = None) -> None:
        self.interval = interval
        self.alive = alive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fcgibridge-watchdog", daemon=True)

    @classmethod
    def from_environ(cls, alive: Callable[[], bool] | None = None,
                     environ: Mapping[str, str] = os.environ) -> Watchdog | None:
        """A started watchdog when systemd asks for one, else None."""
        interval = watchdog_interval(environ)
        if interval is None or not notify_socket_set(environ):
            return None
        watchdog = cls(interval, alive)
        watchdog._thread.start()
        return watchdog

    def _run(self) -> None:
        sd_notify("WATCHDOG=1")
        while not self._stop.wait(self.interval):
            if self.alive is None or self.alive():
                sd_notify("WATCHDOG=1")

    def stop(self) -> None:
        self._stop.set()


class LoopLiveness:
    """A single process's watchdog check: its event loop still runs callbacks.

    Each check (from the watchdog thread) schedules a stamp on the loop and says whether
    the last one ran within :data:`STALL_AFTER`. Alive until :meth:`attach` (the loop
    starts serving: startup may take long) and once the loop is closed (the process ends).
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last = time.monotonic()

    def attach(self) -> None:
        """Watch the running loop (call it in the loop)."""
        self.last = time.monotonic()
        self.loop = asyncio.get_running_loop()

    def _stamp(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> bool:
        loop = self.loop
        if loop is None:
            return True
        try:
            loop.call_soon_threadsafe(self._stamp)
        except RuntimeError:  # closed
            return True
        return time.monotonic() - self.last < STALL_AFTER


class SystemdNotifier(SupervisorEvents):
    """The master's sd_notify: readiness, reloads, stopping, a STATUS= line and the watchdog."""

    def __init__(self, board: Scoreboard | None) -> None:
        self.board = board
        self.last_tick = time.monotonic()
        self.reload_since: float | None = None
        self.status = ""
        self.ready_sent = False
        self.watchdog = Watchdog.from_environ(self._ticking)

    def _ticking(self) -> bool:
        """The supervisor loop still runs (the watchdog thread asks)."""
        return time.monotonic() - self.last_tick < STALL_AFTER

    def ready(self, supervisor: Supervisor) -> None:
        if not self.ready_sent:
            self.ready_sent = True
            sd_notify("READY=1")
        self._send_status(supervisor)

    def reloading(self, supervisor: Supervisor) -> None:
        self.reload_since = time.monotonic()
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}\nSTATUS=reloading")
        self.status = "reloading"

    def stopping(self, supervisor: Supervisor) -> None:
        self.reload_since = None
        sd_notify("STOPPING=1\nSTATUS=stopping")
        self.status = "stopping"

    def tick(self, supervisor: Supervisor, now: float) -> None:
        self.last_tick = now
        if not self.ready_sent and supervisor.count == 0 and supervisor.stopping_since is None:
            # --pm ondemand before any connection: no worker, yet the listeners take
            # connections (the first one starts a worker), so the service is up.
            self.ready(supervisor)
            return
        if supervisor.stopping_since is not None or not supervisor.booted:
            return
        if self.reload_since is not None:
            if now - self.reload_since < RELOAD_SETTLE or _starting(supervisor):
                return
            self.reload_since = None
            sd_notify(f"READY=1\nMONOTONIC_USEC={monotonic_usec()}")
        self._send_status(supervisor)

    def _send_status(self, supervisor: Supervisor) -> None:
        """STATUS= with the current counts, when they changed since the last one."""
        status = status_line(supervisor, self.board)
        if status != self.status:
            self.status = status
            sd_notify(f"STATUS={status}")


def _starting(supervisor: Supervisor) -> bool:
    """A worker is forked and not serving yet (a reload is still under way)."""
    return any(worker.phase in NOT_READY for worker in supervisor.workers.values())


def status_line(supervisor: Supervisor, board: Scoreboard | None) -> str:
    """What ``systemctl status`` shows: "3 workers, 120 requests served, 2 in flight"
    with a scoreboard (--status-path, --status-bind), else the worker count alone."""
    serving = sum(1 for worker in supervisor.workers.values() if worker.phase is Phase.SERVING)
    text = f"{serving} worker{'' if serving == 1 else 's'}"
    if board is None:
        return text
    totals, slots = board.read()
    in_flight = sum(slot.in_flight for slot in slots if slot.pid in supervisor.workers)
    return f"{text}, {totals.served} requests served, {in_flight} in flight"
