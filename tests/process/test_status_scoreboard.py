"""The scoreboard across real forked processes: slots, locks, and totals that survive."""

from __future__ import annotations

import os

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

