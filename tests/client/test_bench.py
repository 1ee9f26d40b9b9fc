"""``fcgibridge bench`` against a real fcgibridge, a real PHP-FPM, and a canned responder
that counts connections and requests (and can close, stay silent or send garbage).

The canned responder is also how the bench's own ceiling is measured (docs/client.md):
``python -m pytest tests/client/test_bench.py -m slow -s`` runs it in a process of its
own and prints what one and two bench processes drive against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from phpfpm import PhpFpm, php_fpm
from support import ROOT, free_port, serve, wait_for_port

from fcgibridge.cli import bench_parser, main
from fcgibridge.client import _bench
from fcgibridge.client._bench_stats import ERROR_KINDS, Histogram, Tally, bucket_of, bucket_range
from fcgibridge.protocol import RecordType, encode_pairs, pack_record
from fcgibridge.protocol.records import pack_end_request

# ------------------------------------------------------------------ a canned responder

_HEADER = struct.Struct("!BBHHBx")
HELLO = b"Hello, World!"
_ANSWER = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n" + HELLO


@dataclass
class Counts:
    """What the canned responder saw."""

    connections: int = 0
    answered: int = 0
    #: The most requests that arrived whole in one read of one connection (so were in
    #: flight together).
    most_at_once: int = 0
    keep_conn: set[bool] = field(default_factory=set)


class Canned(asyncio.Protocol):
    """Answers every request (at its empty STDIN) with one pre-encoded 200 response.

    ``mode``: ``ok``; ``close`` (closes the connection instead of answering); ``silent``
    (never answers); ``garbage`` (answers bytes that are not FastCGI); ``open`` (keeps
    the connection open even without FCGI_KEEP_CONN).
    """

    def __init__(self, counts: Counts, mode: str, multiplex: bool) -> None:
        self.counts = counts
        self.mode = mode
        self.multiplex = multiplex
        self.buffer = b""
        self.keep: dict[int, bool] = {}
        self.answers: dict[int, bytes] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.counts.connections += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        pos, out, close = 0, [], False
        while len(buffer) - pos >= 8:
            _, rtype, request_id, length, padding = _HEADER.unpack_from(buffer, pos)
            stop = pos + 8 + length + padding
            if stop > len(buffer):
                break
            if rtype == RecordType.BEGIN_REQUEST:
                self.keep[request_id] = bool(buffer[pos + 10] & 1)
                self.counts.keep_conn.add(self.keep[request_id])
            elif rtype == RecordType.STDIN and length == 0:
                out.append(self.answer(request_id))
                close = close or not self.keep.pop(request_id)
            elif rtype == RecordType.GET_VALUES:
                values = {"FCGI_MPXS_CONNS": "1" if self.multiplex else "0", "FCGI_MAX_REQS": "100"}
                out.append(pack_record(RecordType.GET_VALUES_RESULT, 0, encode_pairs(values)))
            pos = stop
        self.buffer = buffer[pos:]
        self.counts.most_at_once = max(self.counts.most_at_once, len(out))
        if self.mode == "close" and out:
            self.transport.close()
            return
        if self.mode != "silent" and out:
            self.transport.write(b"".join(out))
            self.counts.answered += len(out)
        if close and self.mode != "open":
            self.transport.close()

    def answer(self, request_id: int) -> bytes:
        if self.mode == "garbage":
            return b"HTTP/1.1 200 OK\r\n\r\n"
        data = self.answers.get(request_id)
        if data is None:
            data = (pack_record(RecordType.STDOUT, request_id, _ANSWER) + pack_record(RecordType.STDOUT, request_id)
                    + pack_end_request(request_id))
            self.answers[request_id] = data
        return data


async def _serve_canned(path: str, counts: Counts, mode: str, multiplex: bool, started: threading.Event,
                        stop: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: Canned(counts, mode, multiplex), path)
    started.set()
    async with server:
        await (stop.wait() if stop is not None else asyncio.Future())


@contextlib.contextmanager
def canned(tmp_path: Path, mode: str = "ok", *, multiplex: bool = False) -> Iterator[tuple[str, Counts]]:
    """The canned responder on a unix socket, in a thread: ``(address, counts)``."""
    path = str(tmp_path / f"canned-{mode}.sock")
    counts = Counts()
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(_serve_canned(path, counts, mode, multiplex, started, stop),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"unix:{path}", counts
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


# ---------------------------------------------------------------------- running bench


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """``fcgibridge bench ARGS --json`` in this process: (exit status, report)."""
    capsys.readouterr()
    status = main(["bench", *args, "--json"])
    out = capsys.readouterr().out
    return status, json.loads(out)


def bench_command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m fcgibridge bench ARGS`` in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fcgibridge", "bench", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def no_errors(report: dict[str, Any]) -> bool:
    return not any(report["errors"].values())


# ------------------------------------------------------------- a real fcgibridge server


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("the test asked for it")
    status = {"/missing": "404 Not Found", "/fail": "500 Internal Server Error", "/moved": "302 Found"}.get(
        path, "200 OK")
    body = environ["wsgi.input"].read() or HELLO
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(wsgi_app, threads=4) as running:
        yield running.address


def test_counts_every_request(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, server, "/hello", "-n", "200", "-c", "4")
    assert status == 0
    assert report["requests"] == 200 and report["statuses"] == {"200": 200} and no_errors(report)
    assert report["bytes"]["body"] == 200 * len(HELLO)
    assert report["bytes"]["total"] > report["bytes"]["body"]
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p90"] <= report["latency_ms"]["p99"] \
        <= report["latency_ms"]["max"]
    assert report["requests_per_second"] == pytest.approx(200 / report["duration"], rel=0.01)


def test_the_json_report_has_exactly_its_keys(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, report = bench(capsys, server, "-n", "20", "-c", "2")
    assert list(report) == ["requests", "duration", "requests_per_second", "latency_ms", "errors", "statuses",
                            "bytes", "concurrency", "processes", "keep_alive", "multiplex"]
    assert isinstance(report["requests"], int) and isinstance(report["duration"], float)
    assert isinstance(report["requests_per_second"], float)
    assert sorted(report["latency_ms"]) == ["max", "mean", "p50", "p90", "p99"]
    assert all(isinstance(value, float) for value in report["latency_ms"].values())
    assert list(report["errors"]) == list(ERROR_KINDS)
    assert sorted(report["bytes"]) == ["body", "total"]
    assert (report["concurrency"], report["processes"], report["keep_alive"], report["multiplex"]) == (2, 1, True, 1)


@pytest.mark.parametrize(("path", "status"), [("/missing", "404"), ("/fail", "500"), ("/raise", "500")])
def test_statuses_outside_2xx_and_3xx_are_errors(server: str, capsys: pytest.CaptureFixture[str], path: str,
                                                 status: str) -> None:
    exit_status, report = bench(capsys, server, path, "-n", "30", "-c", "3")
    assert exit_status == 1
    assert report["statuses"] == {status: 30}
    assert report["errors"]["status"] == 30 and sum(report["errors"].values()) == 30


def test_a_redirect_is_no_error(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench(capsys, server, "/moved", "-n", "10")[1]["statuses"] == {"302": 10}


def test_a_body_is_sent_with_every_request(server: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "body.bin").write_bytes(b"x" * 100_000)
    status, report = bench(capsys, server, "--data-binary", f"@{tmp_path / 'body.bin'}", "-n", "20", "-c", "2")
    assert status == 0 and report["bytes"]["body"] == 20 * 100_000
    status, report = bench(capsys, server, "--data", "a=1", "-X", "PUT", "-H", "X-Test: 1", "-n", "5")
    assert status == 0 and report["bytes"]["body"] == 5 * 3


def test_duration(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, server, "-d", "1", "-c", "2")
    assert status == 0 and no_errors(report)
    assert report["duration"] == pytest.approx(1.0, abs=0.25)
    assert report["requests"] == report["statuses"]["200"] > 10


def test_multiplexing_on_a_server_that_offers_it(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, server, "-n", "200", "-c", "2", "--multiplex", "4")
    assert status == 0 and report["requests"] == 200 and report["statuses"] == {"200": 200}
    assert report["multiplex"] == 4


def test_multiplexed_requests_are_in_flight_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path, multiplex=True) as (address, counts):
        status, report = bench(capsys, address, "-n", "400", "-c", "2", "--multiplex", "8")
    assert status == 0 and report["requests"] == 400
    assert counts.connections == 1 + 2  # the GET_VALUES question, then the load
    assert counts.most_at_once == 8 and counts.answered == 400 + 1


# ------------------------------------------------------------------- connections


def test_keep_alive_reuses_one_connection_per_slot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path) as (address, counts):
        status, report = bench(capsys, address, "-n", "100", "-c", "5")
    assert status == 0 and report["requests"] == 100 and report["keep_alive"] is True
    assert (counts.connections, counts.answered, counts.keep_conn) == (5, 100, {True})


def test_no_keep_alive_opens_a_connection_per_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path) as (address, counts):
        status, report = bench(capsys, address, "-n", "60", "-c", "3", "--no-keep-alive")
    assert status == 0 and report["requests"] == 60 and report["keep_alive"] is False
    assert (counts.connections, counts.answered, counts.keep_conn) == (60, 60, {False})


def test_no_keep_alive_against_a_server_that_keeps_the_connection(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path, "open") as (address, counts):
        status, report = bench(capsys, address, "-n", "4", "-c", "2", "--no-keep-alive")
    assert status == 0 and report["requests"] == 4  # after a second's wait for the server to close
    assert counts.connections == 4


def test_warmup_is_not_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path) as (address, counts):
        status, report = bench(capsys, address, "-n", "50", "-c", "2", "--warmup", "0.3")
    assert status == 0 and report["requests"] == 50 == report["statuses"]["200"]
    assert counts.answered > 50


def test_warmup_with_fewer_requests_than_connections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path) as (address, _):
        status, report = bench(capsys, address, "-n", "3", "-c", "8", "--warmup", "0.2")
    assert status == 0 and report["requests"] == 3 == report["statuses"]["200"]


def test_a_host_name_is_looked_up(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    port = server.rpartition(":")[2]
    status, report = bench(capsys, f"localhost:{port}", "-n", "20", "-c", "2", "--no-keep-alive")
    assert status == 0 and report["requests"] == 20
    assert main(["bench", "no-such-host.invalid:9000", "-n", "1"]) == 1
    assert capsys.readouterr().err.startswith(
        "fcgibridge: error: no-such-host.invalid:9000: cannot look up the host: ")


def test_two_processes_merge_their_counts(tmp_path: Path) -> None:
    with canned(tmp_path) as (address, counts):
        result = bench_command(address, "-n", "400", "-c", "4", "-P", "2", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["requests"] == 400 == counts.answered == report["statuses"]["200"]
        assert report["bytes"]["body"] == 400 * len(HELLO) and counts.connections == 4
        assert (report["processes"], report["concurrency"]) == (2, 4)

        result = bench_command(address, "-d", "1", "-c", "4", "-P", "2", "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["duration"] == pytest.approx(1.0, abs=0.25)
        assert 400 < report["requests"] == report["statuses"]["200"] <= counts.answered - 400


def test_a_process_that_dies_without_its_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bench, "_child", lambda plan, sender, progress: os._exit(3))
    plan = _bench.Plan("unix:/nowhere", socket.AF_UNIX, "/nowhere", (b"",), 2, 2, None, 0.0, True, 1.0)
    with pytest.raises(_bench.ProcessFailed, match=r"ended without a report \(exit status 3\)"):
        _bench.run_in_processes(_bench.split(plan, 2), None)


# ------------------------------------------------------------------------- errors


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    status, report = bench(capsys, address, "-n", "20", "-c", "2")
    assert status == 1
    assert report["requests"] == 20 and report["errors"]["connect"] == 20 and report["statuses"] == {}
    assert main(["bench", address, "-n", "3"]) == 1
    assert "connect 3 (first: cannot connect: Connection refused)" in capsys.readouterr().out


def test_no_such_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, f"unix:{tmp_path / 'none.sock'}", "-n", "5")
    assert status == 1 and report["errors"]["connect"] == 5


def test_a_server_that_closes_the_connection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path, "close") as (address, counts):
        status, report = bench(capsys, address, "-n", "20", "-c", "2")
    assert status == 1 and report["errors"]["closed"] == 20 and report["requests"] == 20
    assert counts.connections == 20


def test_a_server_that_does_not_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path, "silent") as (address, _):
        status, report = bench(capsys, address, "-n", "3", "-c", "3", "--timeout", "0.3")
    assert status == 1 and report["errors"]["timeout"] == 3 and report["requests"] == 3


def test_no_request_ends_within_the_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path, "silent") as (address, _):
        assert main(["bench", address, "-d", "0.3", "-c", "2", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["requests"] == 0
    assert captured.err.startswith(f"fcgibridge: error: no request to {address} ended in 0.3")


def test_a_server_that_does_not_speak_fastcgi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path, "garbage") as (address, _):
        status, report = bench(capsys, address, "-n", "4", "-c", "2")
    assert status == 1 and report["errors"]["protocol"] == 4


def test_multiplex_against_a_server_that_does_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path) as (address, counts):
        assert main(["bench", address, "-n", "5", "--multiplex", "4"]) == 2
    assert capsys.readouterr().err == (
        f"fcgibridge: error: bench: {address} does not multiplex requests on a connection "
        "(it answered FCGI_MPXS_CONNS=0); drop --multiplex\n")
    assert counts.answered == 1  # the question, no load


# ------------------------------------------------------------------------ PHP-FPM


@pytest.fixture(scope="module")
def fpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhpFpm]:
    with php_fpm(tmp_path_factory.mktemp("fpm"), children=3) as running:
        yield running


def test_php_fpm(fpm: PhpFpm, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, fpm.unix, "/status.php", "--root", str(fpm.root), "-n", "200", "-c", "3")
    assert status == 0 and report["requests"] == 200 and report["statuses"] == {"200": 200}
    assert report["bytes"]["body"] == 200 * len(b"status")


def test_php_fpm_statuses(fpm: PhpFpm, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, fpm.tcp, "/status.php?code=404", "--root", str(fpm.root), "-n", "30", "-c", "2")
    assert status == 1 and report["statuses"] == {"404": 30} and report["errors"]["status"] == 30
    status, report = bench(capsys, fpm.tcp, "/nothing.php", "--root", str(fpm.root), "-n", "10", "-c", "2")
    assert status == 1 and report["statuses"] == {"404": 10}  # "Primary script unknown"


def test_php_fpm_post_without_keep_alive(fpm: PhpFpm, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = bench(capsys, fpm.tcp, "/info.php", "--script-filename", fpm.script("info.php"),
                           "--data", "name=Ada", "--param", "HTTPS=on", "-n", "30", "-c", "3", "--no-keep-alive")
    assert status == 0 and report["statuses"] == {"200": 30} and report["keep_alive"] is False


def test_php_fpm_does_not_multiplex(fpm: PhpFpm, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", fpm.unix, "--root", str(fpm.root), "-n", "5", "--multiplex", "2"]) == 2
    assert "does not multiplex requests on a connection (it answered FCGI_MPXS_CONNS=0)" in capsys.readouterr().err


# -------------------------------------------------------------------- the command


def test_the_summary_for_a_person(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", server, "/fail", "-n", "10", "-c", "2"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{server} /fail: 2 connections (keep-alive), 1 process\n")
    assert re.search(r"^  requests      10 in [0-9.]+ s, [0-9.]+ req/s$", out, re.M)
    assert re.search(r"^  latency \(ms\)  p50 [0-9.]+  p90 [0-9.]+  p99 [0-9.]+  max [0-9.]+  mean [0-9.]+$", out,
                     re.M)
    assert "  statuses      500: 10\n" in out and "  errors        status 10\n" in out


def test_progress_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with canned(tmp_path) as (address, _):
        main(["bench", address, "-d", "1.3", "-c", "2", "--progress", "--json"])
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert 1 <= len(lines) <= 2, err  # about once a second
        for line in lines:
            assert re.fullmatch(r"fcgibridge bench: +[12]\.[0-9] s  [0-9]+ requests  [0-9]+ req/s  0 errors", line), err
        main(["bench", address, "-d", "1.3", "-c", "2", "--json"])
        assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "bench: the following arguments are required: ADDR (see fcgibridge bench --help)"),
        (["a:1", "-d", "2", "-n", "5"], "bench: argument -n/--requests: not allowed with argument -d/--duration"),
        (["a:1", "-n", "0"], "bench: argument -n/--requests: must be a whole number of at least 1, got '0'"),
        (["a:1", "-c", "x"], "bench: argument -c/--concurrency: must be a whole number of at least 1, got 'x'"),
        (["a:1", "-d", "0"], "bench: argument -d/--duration: must be more than 0 seconds, got '0'"),
        (["a:1", "--warmup", "-1"], "bench: argument --warmup: must be 0 seconds or more, got '-1'"),
        (["a:1", "--multiplex", "1"], "bench: --multiplex must be at least 2"),
        (["a:1", "--multiplex", "2", "--no-keep-alive"], "bench: --multiplex needs kept-alive connections"),
        (["a:1", "-c", "2", "-P", "3"], "bench: -c 2 gives fewer connections than -P 3 processes"),
        (["a:1", "-n", "2", "-P", "3", "-c", "3"], "bench: -n 2 is fewer requests than -P 3 processes"),
        (["a:1", "-H", "Accept"], "bench: header 'Accept' must look like 'Name: value'"),
        (["a:1", "--param", "X"], "bench: --param 'X' must look like NAME=VALUE"),
        (["a:1", "--data", "@/nonexistent"], "bench: --data @/nonexistent: /nonexistent is not a readable file"),
        (["9000"], "bad FastCGI address '9000' has no port; write 127.0.0.1:9000"),
        (["a:1", "-i"], "bench: unrecognized arguments: -i"),
    ],
)
def test_mistakes(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fcgibridge: error: {message}"), err
    assert err.count("\n") == 1


def test_help_says_that_d_is_the_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: fcgibridge bench ")
    assert "-d is the duration here: the request body is given with --data or --data-binary only" in out


def test_the_docs_list_every_option() -> None:
    page = (ROOT / "docs" / "client.md").read_text()
    section = page[page.index("## fcgibridge bench"):]
    section = section[: section.find("\n## ", 1)]
    flags = {flag for action in bench_parser()._actions for flag in action.option_strings} - {"-h", "--help"}
    assert {flag for flag in flags if f"`{flag}" not in section} == set()


# ------------------------------------------------------------ percentiles and merging


def test_histogram_buckets_are_exact_below_a_millisecond_and_tight_above() -> None:
    assert [bucket_of(v) for v in (0, 1, 1023)] == [0, 1, 1023]
    for micros in [1024, 1025, 2047, 2048, 99_999, 10**6, 3 * 10**9, *random.Random(1).sample(range(10**8), 200)]:
        low, width = bucket_range(bucket_of(micros))
        assert low <= micros < low + width and width <= max(1, low / 512)
    indexes = [bucket_of(v) for v in range(0, 70_000)]
    assert indexes == sorted(indexes) and set(range(indexes[-1] + 1)) == set(indexes)  # no gaps, in order


def test_percentiles_are_nearest_rank() -> None:
    histogram = Histogram()
    for micros in range(1, 101):
        histogram.add(micros)
    assert [histogram.percentile(p) for p in (0.5, 0.9, 0.99, 1.0)] == [50, 90, 99, 100]
    assert (histogram.maximum, histogram.mean, histogram.count) == (100, 50.5, 100)
    assert Histogram().percentile(0.5) == 0.0


def test_merged_percentiles_are_those_of_all_samples() -> None:
    rng = random.Random(7)
    fast = [rng.randint(100, 300) for _ in range(9000)]  # one process: fast answers
    slow = [rng.randint(5000, 90_000) for _ in range(1000)]  # another: slow ones
    together, first, second = Histogram(), Histogram(), Histogram()
    for micros in fast:
        first.add(micros)
        together.add(micros)
    for micros in slow:
        second.add(micros)
        together.add(micros)
    first.merge(second)
    everything = sorted(fast + slow)
    for fraction in (0.5, 0.9, 0.95, 0.99):
        exact = everything[math.ceil(fraction * len(everything)) - 1]
        assert first.percentile(fraction) == together.percentile(fraction) == pytest.approx(exact, rel=0.002)
    # averaging the two processes' p99 would say about 45 ms; the truth is the slow tail's p90
    assert first.percentile(0.99) == pytest.approx(sorted(slow)[899], rel=0.002)
    assert (first.count, first.maximum, first.total) == (10_000, max(slow), sum(fast) + sum(slow))


def test_tallies_add_up() -> None:
    one, two = Tally(requests=10, body_bytes=5, total_bytes=50, duration=1.0), Tally(requests=7, duration=1.2)
    one.errors["closed"], two.errors["closed"], two.errors["timeout"] = 1, 2, 3
    one.statuses[200], two.statuses[200], two.statuses[404] = 9, 2, 2
    two.notes["timeout"] = "no END_REQUEST within 1 s"
    one.merge(two)
    assert (one.requests, one.body_bytes, one.total_bytes, one.duration) == (17, 5, 50, 1.2)
    assert one.errors == {"closed": 3, "timeout": 3} and one.statuses == {200: 11, 404: 2}
    assert one.failed == 6 and one.notes == {"timeout": "no END_REQUEST within 1 s"}


# ------------------------------------------------------------------ its own ceiling


def _canned_process(path: str, ready: Any) -> None:
    import uvloop

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = threading.Event()
    ready_thread = threading.Thread(target=lambda: (started.wait(), ready.set()), daemon=True)
    ready_thread.start()
    uvloop.run(_serve_canned(path, Counts(), "ok", True, started))


def _bench_with_cpu(*args: str) -> tuple[dict[str, Any], float]:
    """``fcgibridge bench ARGS --json`` in a process of its own: (report, CPU seconds it used,
    with its -P processes: wait4 counts the children it reaped)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "fcgibridge", "bench", *args, "--json"], stdout=out,
                                env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        out.seek(0)
        report = json.loads(out.read())
    return report, usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_own_ceiling(tmp_path: Path) -> None:
    """Not a check, a measurement: what the bench drives against the canned responder
    (running in a process of its own, on uvloop), and the CPU time it spends per request.
    Run with ``-m slow -s``."""
    path = str(tmp_path / "ceiling.sock")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    responder = context.Process(target=_canned_process, args=(path, ready), daemon=True)
    responder.start()
    try:
        assert ready.wait(10)
        wait_for_port(f"unix:{path}")
        for extra in ([], ["-P", "2"], ["--multiplex", "8", "-c", "4"]):
            command = [f"unix:{path}", "-d", "5", *extra]
            report, cpu = _bench_with_cpu(*command)
            print(f"\nfcgibridge bench unix:SOCK {' '.join(command[1:])}: {report['requests_per_second']:.0f} req/s, "
                  f"p50 {report['latency_ms']['p50']} ms, p99 {report['latency_ms']['p99']} ms; "
                  f"{cpu * 1e6 / report['requests']:.1f} µs of CPU per request")
    finally:
        responder.terminate()
        responder.join(5)
