"""The listen queues through sock_diag netlink and the /proc fallback, the scoreboard's
histogram and peaks, the preferred slot, and when a request's cost is measured."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import ServerThread, listening_socket, machine_has, wait_until

from fcgibridge.client import FastCGIClient
from fcgibridge.config import Config
from fcgibridge.importer import Interface, LoadedApp
from fcgibridge.process import sockdiag, status
from fcgibridge.process.runtime import Runtime
from fcgibridge.process.scoreboard import BUCKETS, Scoreboard, Totals
from fcgibridge.process.status import ScoreboardSampler
from fcgibridge.process.supervisor import WorkerProcess
from fcgibridge.process.worker import Worker


def netlink_works() -> bool:
    try:
        sockdiag.unix_queues()
        sockdiag.tcp_queues()
    except OSError:
        return False
    return True


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


@contextlib.contextmanager
def waiting(listener: socket.socket, count: int) -> Iterator[list[socket.socket]]:
    """*count* connections to *listener*, none accepted."""
    clients = [socket.socket(listener.family) for _ in range(count)]
    try:
        for client in clients:
            client.connect(listener.getsockname())
        yield clients
    finally:
        for client in clients:
            client.close()


def test_sock_diag_tells_the_queue_of_unix_and_tcp_listeners(tmp_path: Path) -> None:
    machine_has(netlink_works(), "sock_diag netlink")
    with socket.socket(socket.AF_UNIX) as unix, socket.socket() as tcp, socket.socket() as other:
        unix.bind(str(tmp_path / "q.sock"))
        unix.listen(7)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(9)
        other.bind(("127.0.0.1", 0))
        other.listen(5)
        with waiting(unix, 3), waiting(tcp, 2), waiting(other, 4):
            queues = sockdiag.listen_queues([inode(unix), inode(tcp)])
            assert queues == {inode(unix): sockdiag.Queue(3, 7), inode(tcp): sockdiag.Queue(2, 9)}
            # Summed over the given listeners, the backlog the kernel uses; other sockets left out.
            assert status.listen_queue_state([inode(unix), inode(tcp)]) == (5, 9)
            assert status.listen_queue([inode(other)]) == 4


def test_without_netlink_tcp_comes_from_proc_and_unix_is_unknown(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    def refused(request: bytes) -> list[bytes]:
        raise PermissionError(13, "netlink forbidden")

    monkeypatch.setattr(sockdiag, "_dump", refused)
    with socket.socket(socket.AF_UNIX) as unix, socket.socket() as tcp:
        unix.bind(str(tmp_path / "q.sock"))
        unix.listen(7)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(9)
        with waiting(unix, 1), waiting(tcp, 2):
            assert sockdiag.listen_queues([inode(unix), inode(tcp)]) == {inode(tcp): sockdiag.Queue(2, None)}
            assert status.listen_queue_state([inode(unix), inode(tcp)]) == (2, None)
            assert status.listen_queue([inode(unix)]) is None


def test_the_listeners_the_master_names_are_the_ones_measured(tmp_path: Path) -> None:
    machine_has(netlink_works(), "sock_diag netlink")
    with socket.socket() as served, socket.socket() as status_socket:
        for sock in (served, status_socket):
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
        with waiting(served, 1), waiting(status_socket, 3):
            assert status.listen_queue() == 4  # every listening socket of this process
            try:
                ScoreboardSampler(Scoreboard(2), [served])
                assert status.listen_queue() == 1
            finally:
                status.watch_listeners([])


def fork_and_serve(board: Scoreboard, durations: list[float]) -> None:
    """A process claims a slot, serves requests of these *durations*, and exits."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            slot = board.claim()
            assert slot is not None
            for duration in durations:
                slot.request_started("GET", "/x", saturated=False)
                slot.request_done(duration, slow=False)
            code = 0
        finally:
            os._exit(code)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0


def test_the_histogram_adds_up_slots_and_survives_their_reuse() -> None:
    board = Scoreboard(1)
    fork_and_serve(board, [0.001, 0.005, 0.3, 100.0])
    fork_and_serve(board, [0.007, 0.3])  # takes the slot again: the first one's figures move to the header
    totals, (view,) = board.read()
    assert view.durations[BUCKETS.index(0.01)] == 1 and sum(view.durations) == 2
    expected = [0] * (len(BUCKETS) + 1)
    for bucket in (0, 0, BUCKETS.index(0.5), len(BUCKETS), BUCKETS.index(0.01), BUCKETS.index(0.5)):
        expected[bucket] += 1  # 5 ms is in the 5 ms bucket (le: less than or equal)
    assert list(totals.durations) == expected
    assert totals.duration_sum == pytest.approx(100.613)
    report = status.histogram(totals.durations, totals.duration_sum)
    assert report["buckets"]["0.005"] == 2 and report["buckets"]["0.5"] == 5 and report["buckets"]["60.0"] == 5
    assert report["buckets"]["+Inf"] == report["count"] == totals.served == 6


def test_peaks_only_rise() -> None:
    board = Scoreboard(2)
    board.note_peaks(3, None)
    board.note_peaks(1, 7)
    board.note_peaks(2, 4)
    totals, _ = board.read()
    assert (totals.max_active_workers, totals.max_listen_queue) == (3, 7)


def test_the_most_busy_at_once_is_counted_as_workers_become_busy_and_a_dead_one_is_released() -> None:
    board = Scoreboard(4)
    first, second = board.claim(), board.claim()
    assert first is not None and second is not None
    first.request_started("GET", "/a", saturated=False)
    first.request_started("GET", "/b", saturated=False)  # the same worker: still one busy
    assert board.busy_workers() == 1 and board.read()[0].max_active_workers == 1
    second.request_started("GET", "/c", saturated=False)
    for slot in (first, first, second):
        slot.request_done(0.01, slow=False)
    assert board.busy_workers() == 0 and board.read()[0].max_active_workers == 2  # no sampling needed

    pid = os.fork()
    if pid == 0:  # a worker that dies in the middle of a request
        slot = board.claim()
        if slot is not None:
            slot.request_started("GET", "/crash", saturated=False)
        os._exit(0 if slot is not None else 1)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert board.busy_workers() == 1
    ScoreboardSampler(board).exited(None, WorkerProcess(pid, -1, -1), 137)  # type: ignore[arg-type]
    assert board.busy_workers() == 0


def test_a_new_worker_takes_the_slot_of_its_number() -> None:
    board = Scoreboard(4)
    sampler = ScoreboardSampler(board)
    sampler.child_started(WorkerProcess(os.getpid(), -1, -1, number=3))
    slot = board.claim()
    assert slot is not None and slot.index == 2 and board.read_slot(2).number == 3
    assert board.claim() is not None and board.read_slot(0).pid == os.getpid()  # then the first free one


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.mark.parametrize(("options", "measured"), [
    ({}, False),  # a scoreboard without a status page (dynamic workers, --timeout): nobody sees the cost
    ({"status_path": "/status"}, True),
    ({"status_bind": "127.0.0.1:1"}, True),
])
def test_a_request_s_cpu_and_memory_are_measured_only_with_a_status_page(options: dict[str, Any],
                                                                        measured: bool) -> None:
    config = replace(Config(app="test"), **options)
    board = Scoreboard(1)
    server = ServerThread(hello, "wsgi", listening_socket(), config)
    server.worker = Worker(LoadedApp(hello, Interface("wsgi"), "test"), [server.sock], Runtime(config, None, board))
    server.start()
    try:
        assert FastCGIClient(server.address).request("GET", "/").body == b"hello"
        wait_until(lambda: board.read_slot(0).served == 1, 5, "the request booked")
    finally:
        server.stop()
    view = board.read_slot(0)
    assert view.served == 1
    assert (sum(view.durations) == 1) is measured  # the histogram too
    assert (view.last_memory > 0) is measured


def test_the_report_shows_the_board_s_header_and_both_metric_formats_parse() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

    board = Scoreboard(4)
    first, second = board.claim(), board.claim()  # this process stands for two workers
    assert first is not None and second is not None
    for slot, duration in ((first, 0.02), (second, 3.0), (second, 0.004)):
        slot.request_started("GET", "/x", saturated=False)
        slot.request_done(duration, slow=False)
    second.request_started("POST", "/busy", saturated=False)
    second.request_usage(0.5, 50 << 20)
    board.count_max_children_reached()
    board.count_max_children_reached()
    board.note_peaks(2, 5)
    totals, slots = board.read()
    config = replace(Config(app="x"), status_path="/status")
    report = status.status_report(config, totals, slots, 1, 128)
    assert (report["listen_queue"], report["listen_queue_len"], report["max_listen_queue"]) == (1, 128, 5)
    assert (report["max_children_reached"], report["max_active_workers"], report["active_workers"]) == (2, 2, 1)
    assert report["request_duration_seconds"] == {
        "count": 3, "sum": 3.024,
        "buckets": {"0.005": 1, "0.01": 1, "0.025": 2, "0.05": 2, "0.1": 2, "0.25": 2, "0.5": 2, "1.0": 2,
                    "2.5": 2, "5.0": 3, "10.0": 3, "30.0": 3, "60.0": 3, "+Inf": 3}}
    busy = report["workers"][1]
    assert (busy["slot"], busy["state"], busy["request_uri"]) == (2, "busy", "/busy")
    assert (busy["last_request_cpu_time"], busy["last_request_memory"]) == (0.5, 50 << 20)
    assert busy["last_request_cpu"] == pytest.approx(100 * 0.5 / 0.004)  # of its last request's duration
    assert status.status_report(config, totals, slots, None)["max_listen_queue"] == 5  # seen before
    assert status.status_report(config, Totals(0, 0, 0, 0, 0), [], None)["max_listen_queue"] is None  # never known

    body, ctype = status.render_status(report, "prometheus")
    assert ctype == status.PROMETHEUS_TYPE
    values = {(s.name, tuple(s.labels.items())): s.value for f in parse_prometheus(body.decode()) for s in f.samples}
    assert values[("fcgibridge_max_children_reached_total", ())] == 2
    assert values[("fcgibridge_request_duration_seconds_bucket", (("le", "2.5"),))] == 2
    assert values[("fcgibridge_worker_last_request_memory_bytes", (("worker", "2"),))] == 50 << 20
    assert values[("fcgibridge_listen_queue_len", ())] == 128

    body, ctype = status.render_status(report, "openmetrics")
    assert ctype == status.OPENMETRICS_TYPE
    families = {f.name: f for f in parse_openmetrics(body.decode())}
    assert families["fcgibridge_max_children_reached"].type == "counter"
    assert families["fcgibridge_worker_rss_bytes"].unit == "bytes"
    assert [s.value for s in families["fcgibridge_worker_in_flight"].samples] == [0, 1]


def test_full_listen_queues_of_unix_and_tcp(tmp_path: Path) -> None:
    """Listeners with a backlog of 2 and ten connections tried, none accepted: the kernel
    queues backlog + 1 (a unix connect past that fails with EAGAIN, a TCP one stays a SYN
    retried), and sock_diag and /proc tell that many waiting, with the backlog."""
    machine_has(netlink_works(), "sock_diag netlink")
    clients: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX) as unix, socket.socket() as tcp:
        unix.bind(str(tmp_path / "full.sock"))
        unix.listen(2)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(2)
        try:
            refused = 0
            for _ in range(10):
                clients.append(socket.socket(socket.AF_UNIX))
                clients[-1].setblocking(False)
                try:
                    clients[-1].connect(str(tmp_path / "full.sock"))
                except BlockingIOError:
                    refused += 1
                clients.append(socket.socket())
                clients[-1].setblocking(False)
                clients[-1].connect_ex(tcp.getsockname())
            assert refused == 7
            wanted = {inode(unix): sockdiag.Queue(3, 2), inode(tcp): sockdiag.Queue(3, 2)}
            wait_until(lambda: sockdiag.listen_queues(list(wanted)) == wanted, 5, "both queues full")
            assert sockdiag.proc_tcp_queues()[inode(tcp)] == sockdiag.Queue(3, None)
            assert status.listen_queue_state(list(wanted)) == (6, 2)
        finally:
            for client in clients:
                client.close()
