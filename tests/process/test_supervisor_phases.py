"""The supervisor's worker phases (Rules 1-8 of fcgibridge.process.supervisor) and the scaler's
decisions (fcgibridge.process.scaling), without forking: fake workers whose status pipes and
exits the test drives; signals are recorded, not sent; the scoreboard's figures are given."""

from __future__ import annotations

import dataclasses
import logging
import os
import selectors
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from fcgibridge.config import Config
from fcgibridge.process import supervisor as sup
from fcgibridge.process.contract import RETIRE_SIGNAL, ExitCode, Report
from fcgibridge.process.scaling import Scaler
from fcgibridge.process.scoreboard import Scoreboard
from fcgibridge.process.supervisor import Phase, Supervisor, WorkerProcess


class Harness:
    """A supervisor whose workers are pipes: ``say`` writes status bytes, ``exit`` reaps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int = 1) -> None:
        self.signals: list[tuple[int, int]] = []
        self.codes: dict[int, int] = {}
        self.writers: dict[int, int] = {}
        self.fds: list[int] = []
        self.next_pid = 1000
        self.sup = Supervisor(count, lambda report: 0, graceful_timeout=30.0)
        monkeypatch.setattr(self.sup, "_spawn", self.spawn)
        monkeypatch.setattr(sup, "_kill", lambda pid, signum: self.signals.append((pid, signum)))
        monkeypatch.setattr(sup, "_wait_code", lambda pid: self.codes.get(pid, 0))

    def spawn(self, replaces: WorkerProcess | None = None) -> WorkerProcess:
        self.next_pid += 1
        status_r, status_w = os.pipe()
        exit_r, exit_w = os.pipe()
        os.set_blocking(status_r, False)
        self.fds += [status_w, exit_w]  # the supervisor's ends it closes itself as it reaps
        worker = WorkerProcess(self.next_pid, exit_r, status_r, replaces)
        self.sup.workers[worker.pid] = worker
        self.sup.selector.register(worker.pidfd, selectors.EVENT_READ, ("exit", worker))
        self.sup.selector.register(worker.status_fd, selectors.EVENT_READ, ("status", worker))
        self.writers[worker.pid] = status_w
        return worker

    def say(self, worker: WorkerProcess, *reports: Report, read: bool = True) -> None:
        os.write(self.writers[worker.pid], b"".join(reports))
        if read:
            self.sup._status(worker)

    def exit(self, worker: WorkerProcess, code: int = 0) -> None:
        self.codes[worker.pid] = code
        self.sup._reap(worker)

    def ready(self) -> WorkerProcess:
        """The first worker, booted as ``Supervisor.run`` boots it."""
        worker = self.spawn()
        self.say(worker, Report.READY)
        self.sup.booted = True
        return worker

    def close(self) -> None:
        for worker in self.sup.workers.values():
            os.close(worker.pidfd)
            if worker.status_fd >= 0:
                os.close(worker.status_fd)
        self.sup.selector.close()
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    h = Harness(monkeypatch)
    yield h
    h.close()


def test_the_contract_bytes_are_single_distinct_bytes() -> None:
    assert all(len(report) == 1 for report in Report)
    assert len({bytes(report) for report in Report}) == len(Report)
    assert RETIRE_SIGNAL == signal.SIGUSR2
    assert int(ExitCode.BOOT_FAILED) == 3


def test_a_replacement_retires_its_predecessor_once_ready(harness: Harness) -> None:
    old = harness.ready()
    harness.say(old, Report.REPLACE_ME)
    (new,) = [w for w in harness.sup.workers.values() if w is not old]
    assert (new.phase, new.replaces) == (Phase.REPLACING, old)
    assert harness.sup.counted() == [old]  # the replacement stands in; it does not count yet
    harness.say(old, Report.REPLACE_ME)  # one successor at most (Rule 1)
    assert len(harness.sup.workers) == 2
    harness.say(new, Report.READY)
    assert (new.phase, new.replaces, old.phase) == (Phase.SERVING, None, Phase.RETIRING)
    assert harness.signals == [(old.pid, RETIRE_SIGNAL)]
    assert old.kill_at is not None
    assert harness.sup.counted() == [new]
    harness.say(old, Report.STOPPING)
    assert old.phase is Phase.RETIRING  # Rule 3: it stays retiring
    harness.exit(old)
    assert list(harness.sup.workers.values()) == [new]  # retired: not replaced


def test_a_replacement_that_does_not_start_leaves_its_predecessor_serving(harness: Harness,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    old = harness.ready()
    harness.say(old, Report.REPLACE_ME)
    (new,) = [w for w in harness.sup.workers.values() if w is not old]
    harness.exit(new, 2)
    assert f"the reloaded app does not start; worker {old.pid} keeps serving" in caplog.text
    assert list(harness.sup.workers.values()) == [old] and old.phase is Phase.SERVING
    harness.say(old, Report.REPLACE_ME)  # it may ask again
    assert len(harness.sup.workers) == 2


def test_a_successor_whose_predecessor_died_makes_up_the_count_alone(harness: Harness) -> None:
    """Rule 6: the predecessor dies while its successor starts; the successor stands for
    the count from then on, so no second worker is forked for the same place."""
    old = harness.ready()
    harness.say(old, Report.REPLACE_ME)
    (new,) = [w for w in harness.sup.workers.values() if w is not old]
    harness.exit(old, 137)
    assert list(harness.sup.workers.values()) == [new]
    assert (new.phase, new.replaces) == (Phase.STARTING, None)
    harness.say(new, Report.READY)
    assert harness.sup.counted() == [new] and harness.sup.count == 1


def test_one_fewer_retires_a_successor_on_the_way_too(harness: Harness) -> None:
    """TTOU while a reload's successors start: the worker it retires takes its successor
    with it, or that one would count once ready (two workers for a count of one)."""
    harness.sup.count = 2
    first = harness.ready()
    second = harness.spawn()
    harness.say(second, Report.READY)
    harness.say(first, Report.REPLACE_ME)
    harness.say(second, Report.REPLACE_ME)
    successors = {w.replaces: w for w in harness.sup.workers.values() if w.replaces is not None}
    harness.sup.handle_sigttou()
    assert second.phase is Phase.RETIRING and successors[second].phase is Phase.RETIRING
    for worker in successors.values():
        harness.say(worker, Report.READY)
    assert harness.sup.counted() == [successors[first]] and harness.sup.count == 1


def test_a_worker_retired_before_it_was_ready_is_told_again(harness: Harness) -> None:
    harness.sup.count = 2
    first = harness.ready()
    second = harness.spawn()
    harness.sup.handle_sigttou()
    assert second.phase is Phase.RETIRING and harness.signals == [(second.pid, RETIRE_SIGNAL)]
    harness.say(second, Report.READY)
    assert second.phase is Phase.RETIRING
    assert harness.signals == [(second.pid, RETIRE_SIGNAL)] * 2
    assert harness.sup.counted() == [first]


def test_a_veto_ends_the_stop_and_the_deadlines_of_the_workers_asked(harness: Harness) -> None:
    harness.sup.count = 3
    vetoing, stopping, retiring = harness.ready(), harness.spawn(), harness.spawn()
    harness.say(stopping, Report.READY)
    harness.say(retiring, Report.READY)
    harness.sup._retire(retiring)
    harness.sup.stop("SIGTERM", ask=True)
    harness.say(stopping, Report.STOPPING)
    harness.say(vetoing, Report.VETO)
    assert harness.sup.stopping_since is None
    assert vetoing.phase is Phase.SERVING and vetoing.kill_at is None
    assert stopping.phase is Phase.STOPPING and stopping.kill_at is not None
    assert retiring.kill_at is not None
    harness.exit(stopping)  # it stopped while the server serves on: made up again
    assert stopping.pid not in harness.sup.workers and len(harness.sup.counted()) == 3


def test_reports_unread_at_the_exit_count(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fcgibridge.supervisor")
    harness.ready()
    late = harness.spawn()
    harness.say(late, Report.READY, Report.STOPPING, read=False)
    harness.exit(late)
    assert f"worker {late.pid} stopped (exit code 0); starting a new one" in caplog.text


def test_a_worker_that_exits_before_any_was_ready_stops_the_server(harness: Harness) -> None:
    first = harness.spawn()
    harness.exit(first, 0)
    assert harness.sup.exit_code == ExitCode.BOOT_FAILED
    assert harness.sup.stopping_since is not None


def test_quick_deaths_stop_the_server(harness: Harness) -> None:
    harness.ready()
    for _ in range(sup.MAX_QUICK_DEATHS):
        (worker,) = harness.sup.workers.values()
        harness.exit(worker, 1)
    assert harness.sup.exit_code == ExitCode.BOOT_FAILED


def test_deaths_after_a_first_request_are_no_crash_loop(harness: Harness) -> None:
    """Rule 7: a worker a request kills (it said Q) is replaced however soon it died; the
    unread Q of a worker that died at once counts too."""
    harness.ready()
    for n in range(2 * sup.MAX_QUICK_DEATHS):
        (worker,) = harness.sup.workers.values()
        harness.say(worker, Report.READY, Report.FIRST_REQUEST, read=n % 2 == 0)
        harness.exit(worker, 137)
    assert harness.sup.stopping_since is None and harness.sup.quick_deaths == 0
    assert len(harness.sup.workers) == 1


def test_ttin_and_ttou_keep_the_count_within_its_bounds(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fcgibridge.supervisor")
    harness.sup.least, harness.sup.most = 0, 2
    first = harness.ready()
    harness.sup.handle_sigttin()
    harness.sup.handle_sigttin()  # past --max-workers
    assert harness.sup.count == 2 and len(harness.sup.workers) == 2
    assert "SIGTTIN ignored: 2 workers is the most" in caplog.text
    harness.sup.handle_sigttou()
    harness.sup.handle_sigttou()  # ondemand: down to none
    harness.sup.handle_sigttou()
    assert harness.sup.count == 0 and "SIGTTOU ignored: 0 workers is the least" in caplog.text
    assert all(w.phase is Phase.RETIRING for w in harness.sup.workers.values()) and first.phase is Phase.RETIRING


def test_retire_and_add_workers_move_the_count_within_its_bounds(harness: Harness) -> None:
    harness.sup.least, harness.sup.most = 1, 3
    first = harness.ready()
    assert harness.sup.add_workers(5) == 2 and len(harness.sup.counted()) == 3
    assert harness.sup.add_workers(1) == 0
    others = [w for w in harness.sup.workers.values() if w is not first]
    assert not harness.sup.retire(others[0])  # not serving yet
    for worker in others:
        harness.say(worker, Report.READY)
    assert harness.sup.retire(others[0]) and harness.sup.retire(others[1])
    assert not harness.sup.retire(first)  # the least
    assert harness.sup.count == 1 and harness.sup.counted() == [first]
    harness.exit(others[0])
    assert len(harness.sup.workers) == 2  # retired: not made up again


def test_a_connection_waiting_with_no_worker_starts_one(harness: Harness) -> None:
    """Rule 8: the listeners are watched only while no worker is starting or serving."""
    readable, writable = os.pipe()
    harness.fds += [readable, writable]
    harness.sup.least, harness.sup.watched = 0, [readable]
    first = harness.ready()
    harness.sup._watch()
    assert readable not in harness.sup.selector.get_map()
    harness.sup.handle_sigttou()
    harness.sup._watch()
    assert readable in harness.sup.selector.get_map()  # the one worker retires: nobody accepts
    os.write(writable, b"x")  # a connection waits
    harness.sup._step()
    (new,) = [w for w in harness.sup.workers.values() if w is not first]
    assert harness.sup.count == 1 and new.phase is Phase.STARTING
    harness.sup._watch()
    assert readable not in harness.sup.selector.get_map()


class Board(Scoreboard):
    """A scoreboard that only counts "max children reached"."""

    def __init__(self) -> None:
        super().__init__(1)


def scaler(harness: Harness, activity: dict[int, tuple[int, int]], **options: Any) -> Scaler:
    """A scaler on the harness's supervisor; *activity*: pid -> (in flight, served), as the board would say."""
    config = dataclasses.replace(Config(app="test"), **options)
    scaling = Scaler(config, Board(), queue=lambda: None)
    scaling.activity = lambda pids: {pid: activity[pid] for pid in pids if pid in activity}
    scaling.starting(harness.sup)
    return scaling


def serving(harness: Harness) -> list[WorkerProcess]:
    """Every new worker says it is ready."""
    for worker in harness.sup.workers.values():
        if worker.phase is Phase.STARTING:
            harness.say(worker, Report.READY)
    return harness.sup.counted()


def test_dynamic_forks_at_a_doubling_rate_until_max_workers_then_counts_max_children(harness: Harness) -> None:
    activity: dict[int, tuple[int, int]] = {}
    scaling = scaler(harness, activity, pm="dynamic", max_workers=8, min_spare_workers=8, max_spare_workers=8)
    assert (harness.sup.count, harness.sup.least, harness.sup.most) == (1, 1, 8)
    harness.ready()
    added = []
    for second in range(5):
        for worker in serving(harness):
            activity[worker.pid] = (1, 0)  # all busy
        before = harness.sup.count
        scaling.tick(harness.sup, float(second))
        added.append(harness.sup.count - before)
    assert added == [1, 2, 4, 0, 0]  # 1 + 7 is the most: then each tick counts
    assert harness.sup.count == 8 and scaling.board.max_children_reached == 2
    for worker in serving(harness):
        activity[worker.pid] = (0, 1)  # all idle: nothing wanted
    scaling.tick(harness.sup, 6.0)
    assert scaling.board.max_children_reached == 2 and scaling.rate == 1


def test_dynamic_retires_idle_workers_past_max_spare_after_the_idle_timeout(harness: Harness) -> None:
    activity: dict[int, tuple[int, int]] = {}
    scaling = scaler(harness, activity, pm="dynamic", workers=6, min_workers=3,
                     min_spare_workers=0, max_spare_workers=1, worker_idle_timeout=10.0)
    assert harness.sup.count == 6
    harness.ready()
    harness.sup._fill()
    workers = serving(harness)
    for worker in workers:
        activity[worker.pid] = (0, 0)
    activity[workers[0].pid] = (1, 0)  # busy: never retired
    scaling.tick(harness.sup, 0.0)
    activity[workers[1].pid] = (0, 3)  # served since: idle from now on
    scaling.tick(harness.sup, 5.0)
    assert harness.sup.count == 6  # not idle long enough yet
    scaling.tick(harness.sup, 10.0)
    # Five idle, one may stay: the four idle longest go, but --min-workers keeps three.
    assert [w.phase for w in workers] == [Phase.SERVING, Phase.SERVING] + [Phase.RETIRING] * 3 + [Phase.SERVING]
    assert harness.sup.count == 3
    scaling.tick(harness.sup, 20.0)
    assert harness.sup.count == 3


def test_ondemand_forks_while_all_are_busy_and_retires_every_idle_one(harness: Harness) -> None:
    activity: dict[int, tuple[int, int]] = {}
    scaling = scaler(harness, activity, pm="ondemand", max_workers=2, worker_idle_timeout=1.0)
    assert (harness.sup.count, harness.sup.least) == (0, 0)
    harness.sup.count = 1  # a connection came (Rule 8)
    first = harness.ready()
    activity[first.pid] = (2, 0)
    scaling.tick(harness.sup, 0.0)
    (second,) = [w for w in harness.sup.workers.values() if w is not first]
    scaling.tick(harness.sup, 1.0)
    assert harness.sup.count == 2  # the second is starting: no more
    serving(harness)
    activity[second.pid] = (0, 0)
    scaling.tick(harness.sup, 2.0)
    assert harness.sup.count == 2 and scaling.board.max_children_reached == 0
    activity[first.pid] = activity[second.pid] = (0, 5)
    scaling.tick(harness.sup, 3.0)
    scaling.tick(harness.sup, 4.5)
    assert harness.sup.count == 0 and {w.phase for w in harness.sup.workers.values()} == {Phase.RETIRING}
