"""Dynamic workers, PHP-FPM's ``pm = dynamic | ondemand``: the supervisor's count follows the load.

With ``--pm static`` (the default) nothing here runs: the count is ``-w``, moved only by
TTIN and TTOU. Otherwise a :class:`Scaler` joins the supervisor's events. Before the
first fork it sets the count (``dynamic``: ``-w`` within the bounds; ``ondemand``: 0),
its bounds (``--min-workers``, 0 for ondemand, and ``--max-workers``, 0 meaning 4 x the
CPUs; bounds that contradict each other are an error at startup) and the listeners the
parent watches while no worker serves (Rule 8 of :mod:`~fcgibridge.process.supervisor`).
Then, on every tick (once a second, once the first worker was ready, never while the
server stops), it reads from the shared scoreboard which workers are idle (no request
in flight; idle since the last tick that saw one in flight or served), and:

- dynamic: forks while fewer than ``--min-spare-workers`` are idle (a worker still
  starting counts as idle to be), and while connections wait in the listen queue
  (``listen_queue()``: unix and TCP sockets on Linux, through sock_diag); one worker the first second, twice as many
  each following second the need lasts, at most :data:`MAX_SPAWN_RATE`. It retires
  (gracefully) idle workers beyond ``--max-spare-workers`` once they have been idle
  ``--worker-idle-timeout`` seconds, longest idle first, never below ``--min-workers``.
- ondemand: the first connection forks the first worker (the supervisor, Rule 8); then
  it forks while every worker has a request in flight (or connections wait in the listen
  queue), at the same rate, and retires every worker idle ``--worker-idle-timeout``
  seconds, down to none.

When a worker is wanted but ``--max-workers`` run, it counts "max children reached" in
the scoreboard (the status page's ``max_children_reached``), once per tick.

The count it moves is the supervisor's (Rule 6): TTIN and TTOU move the same number,
and the scaler moves it back on a later tick if the load says otherwise.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import Config
from ..errors import UserError
from .scoreboard import Scoreboard
from .status import listen_queue
from .supervisor import Phase, Supervisor, SupervisorEvents, WorkerProcess

__all__ = ["MAX_SPAWN_RATE", "Scaler", "connection_workers", "most_workers", "start_count"]

log = logging.getLogger("fcgibridge.supervisor")

#: The most workers forked in one tick (the rate doubles each tick a need lasts).
MAX_SPAWN_RATE = 32


def most_workers(config: Config) -> int:
    """``--max-workers``, or 4 x the CPUs when it is 0."""
    return config.max_workers or 4 * (os.cpu_count() or 1)


def connection_workers(config: Config) -> int:
    """How many ``--max-connections`` shares the server holds (FCGI_MAX_CONNS, the
    connection shares): ``-w``, or with ``--pm dynamic`` or ``ondemand`` the most workers
    that may run (``-w`` there is only how many start: none at all with ondemand)."""
    return config.workers if config.pm == "static" else most_workers(config)


def least_workers(config: Config) -> int:
    """The fewest workers: ``--min-workers``, none with ondemand."""
    return 0 if config.pm == "ondemand" else config.min_workers


def start_count(config: Config) -> int:
    """How many workers start: none with ondemand, else ``-w`` within the bounds (at least one)."""
    if config.pm == "ondemand":
        return 0
    return max(1, least_workers(config), min(config.workers, most_workers(config)))


def check(config: Config) -> None:
    """Bounds that contradict each other are a :class:`UserError` (the scaler would fork and
    retire the same workers by turns)."""
    if config.pm == "dynamic" and config.min_spare_workers > config.max_spare_workers:
        raise UserError(f"--min-spare-workers ({config.min_spare_workers}) is more than --max-spare-workers "
                        f"({config.max_spare_workers})")
    if config.pm == "dynamic" and config.min_workers > most_workers(config):
        raise UserError(f"--min-workers ({config.min_workers}) is more than --max-workers ({most_workers(config)})")
    if config.pm == "dynamic" and config.min_spare_workers > most_workers(config):
        # It would want spares it can never have: "max children reached" every second, idle.
        raise UserError(f"--min-spare-workers ({config.min_spare_workers}) is more than --max-workers "
                        f"({most_workers(config)})")


@dataclass
class Seen:
    """What the scaler last saw of one worker's scoreboard slot."""

    served: int
    #: When it last had a request in flight or served one (``time.monotonic()``).
    active: float


#: pid -> (requests in flight, requests served) for the given worker pids found on the board.
Activity = Callable[[Sequence[int]], dict[int, tuple[int, int]]]


class Scaler(SupervisorEvents):
    """Moves the supervisor's count by the load (see the module docstring)."""

    def __init__(self, config: Config, board: Scoreboard | None, listeners: Sequence[socket.socket] = (),
                 queue: Callable[[], int | None] = listen_queue) -> None:
        if board is None:
            raise ValueError("dynamic workers need the scoreboard")
        check(config)
        self.board = board
        self.ondemand = config.pm == "ondemand"
        self.least = least_workers(config)
        self.most = most_workers(config)
        self.start = start_count(config)
        self.min_spare = config.min_spare_workers
        self.max_spare = config.max_spare_workers
        self.idle_timeout = config.worker_idle_timeout
        self.listeners = [sock.fileno() for sock in listeners]
        self.queue = queue
        self.rate = 1
        self.at_most = False  # warned that --max-workers run and more are wanted
        self.seen: dict[int, Seen] = {}
        self.activity: Activity = self._board_activity

    def starting(self, supervisor: Supervisor) -> None:
        supervisor.count = self.start
        supervisor.least = self.least
        supervisor.most = self.most
        supervisor.watched = list(self.listeners)

    def exited(self, supervisor: Supervisor, worker: WorkerProcess, code: int) -> None:
        self.seen.pop(worker.pid, None)

    def tick(self, supervisor: Supervisor, now: float) -> None:
        if not supervisor.booted or supervisor.stopping_since is not None:
            return
        counted = supervisor.counted()
        serving = [w for w in counted if w.phase is Phase.SERVING]
        idle = self._idle(serving, now)  # (idle since, worker), longest idle first
        starting = len(counted) - len(serving)
        waiting = (self.queue() or 0) if starting == 0 else 0  # (what a worker starting takes anyway)
        if self.ondemand:
            wanted = max(waiting, 1 if serving and not idle and not starting else 0)
        else:
            wanted = max(waiting, self.min_spare - len(idle) - starting)
        if wanted > 0:
            self._grow(supervisor, wanted, len(idle))
            return
        self.rate = 1
        self.at_most = False
        excess = len(idle) if self.ondemand else len(idle) - self.max_spare
        for since, worker in idle[:max(0, excess)]:
            if now - since < self.idle_timeout:
                break
            if any(other.replaces is worker for other in supervisor.workers.values()):
                continue  # its successor takes its place already
            if not supervisor.retire(worker):
                break
            log.info("worker %d idle for %.0f s: retiring it (%d workers)", worker.pid, now - since,
                     supervisor.count)

    def _grow(self, supervisor: Supervisor, wanted: int, idle: int) -> None:
        """Fork up to *wanted* workers, at the spawn rate; count it when ``--max-workers`` run."""
        if supervisor.count >= self.most:
            self.board.count_max_children_reached()
            if not self.at_most:
                log.warning("%d workers, --max-workers, run and more are wanted; consider raising it", self.most)
            self.at_most = True
            return
        self.at_most = False
        added = supervisor.add_workers(min(wanted, self.rate))
        log.info("%d idle, %d more wanted: starting %d (%d workers)", idle, wanted, added, supervisor.count)
        self.rate = min(MAX_SPAWN_RATE, self.rate * 2) if added < wanted else 1

    def _idle(self, serving: list[WorkerProcess], now: float) -> list[tuple[float, WorkerProcess]]:
        """The serving workers with nothing in flight and, for each, since when it was idle.
        A worker not on the board (no slot left) counts as busy: it is never retired."""
        activity = self.activity([w.pid for w in serving])
        idle = []
        for worker in serving:
            found = activity.get(worker.pid)
            if found is None:
                continue
            in_flight, served = found
            seen = self.seen.get(worker.pid)
            if seen is None:
                seen = self.seen[worker.pid] = Seen(served, now)
            if in_flight or served != seen.served:
                seen.served, seen.active = served, now
            if not in_flight:
                idle.append((seen.active, worker))
        idle.sort(key=lambda item: item[0])
        return idle

    def _board_activity(self, pids: Sequence[int]) -> dict[int, tuple[int, int]]:
        wanted = set(pids)
        _, views = self.board.read()
        return {view.pid: (view.in_flight, view.served) for view in views
                if view.pid in wanted and view.state != "free"}
