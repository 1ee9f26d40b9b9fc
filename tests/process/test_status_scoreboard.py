"""The scoreboard across real forked processes: slots, locks, and totals that survive."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from fcgibridge.process.scoreboard import Scoreboard


def in_child(board: Scoreboard, served: int) -> int:
    """Fork a process that claims a slot, serves ``served`` requests and exits; its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            slot = board.claim()
            assert slot is not None
            slot.connection_accepted()
            for _ in range(served):
                slot.request_started("GET", "/x", saturated=False)
                slot.request_done(0.01, slow=served == 3)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def test_a_dead_process_frees_its_slot_and_its_figures_move_to_the_totals() -> None:
    board = Scoreboard(2)
    first = in_child(board, 3)
    totals, slots = board.read()
    assert (totals.accepted, totals.served, totals.slow) == (1, 3, 3)
    assert [(s.pid, s.served, s.alive) for s in slots] == [(first, 3, False)]

    second = in_child(board, 2)  # takes the free slot 0 again
    totals, slots = board.read()
    assert (totals.accepted, totals.served, totals.slow) == (2, 5, 3)
    assert [(s.index, s.pid, s.served) for s in slots] == [(0, second, 2)]


def test_live_holders_keep_their_slots_and_a_full_board_says_so() -> None:
    board = Scoreboard(2)
    mine = board.claim()
    assert mine is not None and mine.index == 0
    child = os.fork()
    if child == 0:
        code = 1
        try:
            other = board.claim()  # slot 0 is locked by the parent
            code = 0 if other is not None and other.index == 1 and board.claim() is None else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    mine.request_started("POST", "/upload", saturated=True)
    view = board.read_slot(0)
    assert (view.pid, view.state, view.in_flight, view.method, view.uri, view.saturated) == (
        os.getpid(), "busy", 1, "POST", "/upload", 1)
    assert view.alive



def test_a_worker_past_the_scoreboards_slots_serves_and_says_it_is_not_seen(tmp_path: Path) -> None:
    """-w 1 under a supervisor: 16 slots. TTIN 16 times makes 17 workers; the 17th finds
    every slot taken, serves unseen and logs it (before, it was left out silently, and
    --timeout's hard kill could not see it)."""
    from support import children_of, free_port, process_log, run_fcgibridge, wait_until

    from fcgibridge.client import FastCGIClient

    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("tests.apps.pm_app:app", "-b", address, "-w", "1", "--status-bind",
                        f"unix:{tmp_path / 'status.sock'}", address=address) as proc:
        for _ in range(16):
            proc.send_signal(signal.SIGTTIN)
            time.sleep(0.05)
        wait_until(lambda: len(children_of(proc.pid)) == 17, 30, "17 workers")
        wait_until(lambda: "slots are all taken" in process_log(proc), 15, "the warning")
        report = json.loads(FastCGIClient(f"unix:{tmp_path / 'status.sock'}").request("GET", "/?json").body)
        assert report["total_workers"] == 16
        assert process_log(proc).count("slots are all taken") == 1


def test_totals_never_go_backwards_while_slots_are_reused() -> None:
    """A process recycles a one-slot board's worker 300 times (each serves a request and
    exits; the next takes the slot and moves its figures into the totals) while this one
    reads the totals without pause: requests served never go down (they did whenever a
    read fell between the move and the slot being emptied: counted twice, then once)."""
    board = Scoreboard(1)
    recycler = os.fork()
    if recycler == 0:
        code = 1
        try:
            for _ in range(300):
                in_child(board, 1)
            code = 0
        finally:
            os._exit(code)
    last = backwards = 0
    while True:
        done = os.waitpid(recycler, os.WNOHANG)[0]
        totals, _ = board.read()
        backwards += totals.served < last
        last = totals.served
        if done:
            break
    assert (backwards, last) == (0, 300)
