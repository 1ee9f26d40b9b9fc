"""The pure parts of the benchmark harness in bench/harness/: reading wrk's report, the stall
check, the target ratios, the CPU accounting from /proc (on a real child process), the
answer checks and the docs block. bench/ is not on the test path, so it is appended to
sys.path here (only ``harness`` is imported from it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Last on the path: bench/ also holds an apps.py, which must not hide the tests' own apps/.
sys.path.append(str(BENCH))

from harness import cpu, direct, docs, loads, targets, wrk  # noqa: E402
from harness.stats import Measurement, cell, cells, stalled  # noqa: E402

WRK_OUTPUT = """\
Running 4s test @ http://127.0.0.1:54349/hello
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.13ms  250.20us  34.15ms   86.70%
    Req/Sec    28.69k     4.27k   36.35k    90.00%
  Latency Distribution
     50%    1.02ms
     75%    1.21ms
     90%    1.50ms
     99%    2.00s
  114776 requests in 4.01s, 17.04MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  28622.44
Transfer/sec:      4.25MB
"""


def measurement(backend: str, test: str, rate: float, *, latency_ms: float = 3.0, round_no: int = 1,
                connections: int = 32, non_2xx: int = 0) -> Measurement:
    return Measurement(backend=backend, test=test, round=round_no, requests=int(rate * 4), duration_s=4.0,
                       requests_per_second=rate, latency_ms={"mean": latency_ms}, connections=connections,
                       non_2xx=non_2xx, backend_cpu_s=rate * 4 * 100e-6, nginx_cpu_s=None)


# --------------------------------------------------------------------------- wrk


def test_wrk_report_is_read_with_units_and_errors() -> None:
    report = wrk.parse(WRK_OUTPUT)
    assert report.requests == 114776
    assert report.duration_s == pytest.approx(4.01)
    assert report.requests_per_second == pytest.approx(28622.44)
    assert report.latency_ms == pytest.approx({"mean": 1.13, "max": 34.15, "p50": 1.02, "p75": 1.21, "p90": 1.5,
                                               "p99": 2000.0})
    assert report.non_2xx == 7
    assert report.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 2}


def test_wrk_report_without_errors_has_none() -> None:
    clean = "\n".join(line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line)
    report = wrk.parse(clean)
    assert report.non_2xx == 0
    assert report.socket_errors == {}


def test_wrk_output_without_a_result_is_an_error() -> None:
    with pytest.raises(ValueError, match="no result"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(("text", "ms"), [("350.12us", 0.35012), ("1.20ms", 1.2), ("2.00s", 2000.0),
                                          ("1.50m", 90_000.0)])
def test_wrk_times_in_milliseconds(text: str, ms: float) -> None:
    assert wrk.to_ms(text) == pytest.approx(ms)


def test_wrk_command_takes_the_script_of_a_post() -> None:
    post = next(load for load in loads.LOADS if load.name == "echo")
    script = post.lua_script()
    assert 'wrk.method = "POST"' in script and "string.rep(\"0123456789abcdef\", 4096)" in script
    argv = wrk.argv("http://127.0.0.1:1/echo", threads=1, connections=32, seconds=4, script=Path("echo.lua"))
    assert argv[:4] == ["wrk", "-t1", "-c32", "-d4s"] and argv[-3:] == ["-s", "echo.lua", "http://127.0.0.1:1/echo"]


# --------------------------------------------------------------------------- stall check and cells


def test_stall_check_is_littles_law_against_half_the_connections() -> None:
    assert not stalled(10_000, 3.2, 32)  # 32 requests in flight: every connection busy
    assert not stalled(10_000, 1.6, 32)  # 16: exactly half
    assert stalled(10_000, 1.5, 32)  # 15: connections sat idle
    assert stalled(10_000, None, 32)  # no latency at all: nothing completed


def test_cell_has_median_spread_flags_and_cpu_per_request() -> None:
    runs = [measurement("a", "hello", rate) for rate in (9000.0, 10_000.0, 12_000.0)]
    runs[0].non_2xx = 2
    runs.append(measurement("a", "hello", 11_000.0, latency_ms=0.1))  # stalled
    c = cell(runs)
    assert c is not None
    assert (c.median, c.low, c.high, c.rounds) == (10_500.0, 9000.0, 12_000.0, 4)
    assert c.flags == "ES"
    assert c.backend_cpu_us == pytest.approx(100.0)
    assert c.nginx_cpu_us is None


# --------------------------------------------------------------------------- targets


def test_target_compares_with_the_better_peer() -> None:
    goal = targets.Target("hello", "fcgibridge-asgi-2", targets.UVICORN, 1.0, "words")
    met = cells([measurement("fcgibridge-asgi-2", "hello", 12_000.0), measurement("uvicorn-1", "hello", 9000.0),
                 measurement("uvicorn-2", "hello", 11_000.0)])
    assert goal.verdict(met) == "1.09x -> MET"
    missed = cells([measurement("fcgibridge-asgi-2", "hello", 10_000.0), measurement("uvicorn-1", "hello", 9000.0),
                    measurement("uvicorn-2", "hello", 11_000.0)])
    assert goal.verdict(missed) == "0.91x -> NOT MET"


def test_target_factor_flags_and_missing_rows() -> None:
    goal = targets.Target("hello", "fcgibridge-asgi-2", ("fcgisgi-asgi",), 1.5, "words")
    measured = cells([measurement("fcgibridge-asgi-2", "hello", 14_000.0),
                      measurement("fcgisgi-asgi", "hello", 10_000.0, non_2xx=1)])
    assert goal.verdict(measured) == "1.40x -> NOT MET (a run had errors or stalled)"
    assert goal.verdict(cells([measurement("fcgibridge-asgi-2", "hello", 1.0)])).startswith("n/a")


def test_every_target_names_rows_and_tests_that_exist() -> None:
    from harness.backends import BACKEND_NAMES

    for goal in targets.TARGETS:
        assert goal.row in BACKEND_NAMES and set(goal.peers) <= set(BACKEND_NAMES)
        assert goal.test in loads.LOAD_NAMES


def test_only_targets_of_measured_tests_are_listed() -> None:
    lines = targets.verdict_lines(cells([measurement("uwsgi-1", "hello", 1.0)]))
    assert lines and all("WSGI" in line and "64 KiB" not in line for line in lines)


# --------------------------------------------------------------------------- CPU from /proc


def test_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    line = "4242 (a (weird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 30 12 5 3 20 0 1 0 1234 0 0"
    stat = cpu.parse_stat(line)
    assert (stat.pid, stat.ppid, stat.ticks) == (4242, 17, 30 + 12 + 5 + 3)


def test_tree_sums_descendants_only() -> None:
    stats = {pid: cpu.ProcStat(pid, ppid, ticks)
             for pid, ppid, ticks in [(1, 0, 1000), (10, 1, 5), (11, 10, 7), (12, 11, 11), (20, 1, 100)]}
    assert cpu.tree_ticks(10, stats) == 5 + 7 + 11
    assert cpu.tree_ticks(99, stats) == 0


def test_cpu_of_a_real_child_and_its_grandchild() -> None:
    """A child that starts a busy grandchild: the child's tree is charged the grandchild's CPU."""
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = ("import subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', {burn!r}])\n"
              "child.wait()\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        before = cpu.cpu_seconds([proc.pid])[0]
        deadline = time.monotonic() + 20
        used = 0.0
        while time.monotonic() < deadline and used < 0.3:
            time.sleep(0.05)
            used = cpu.cpu_seconds([proc.pid])[0] - before
        assert 0.3 <= used < 5.0
    finally:
        proc.kill()
        proc.wait()


def test_machine_busy_time_leaves_out_idle_and_iowait() -> None:
    text = "cpu  100 5 50 1000 20 3 7 2 0 0\ncpu0 50 2 25 500 10 1 3 1 0 0\n"
    assert cpu.parse_machine_stat(text) == (100 + 5 + 50 + 3 + 7 + 2, 1187)


def test_window_reads_trees_machine_and_waited_children() -> None:
    with cpu.Window([]) as window:
        subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    assert window.trees == []
    assert window.load > 0.0 and window.machine >= window.load * 0.5


def test_other_load_is_the_machine_less_what_was_measured() -> None:
    m = measurement("a", "hello", 1000.0)  # backend 0.4 s over 4 s
    m.nginx_cpu_s, m.load_cpu_s, m.machine_cpu_s = 0.6, 1.0, 6.0
    assert m.other_cpu_share == pytest.approx((6.0 - 0.4 - 0.6 - 1.0) / 4.0)
    m.load_cpu_s = None
    assert m.other_cpu_share is None


# --------------------------------------------------------------------------- rows and their nginx


def test_only_takes_a_name_or_the_start_of_names_up_to_a_dash() -> None:
    from harness.backends import select

    assert [b.name for b in select(["fcgibridge-asgi"])] == ["fcgibridge-asgi-1", "fcgibridge-asgi-2"]
    assert [b.name for b in select(["uwsgi-1", "nginx"])] == ["nginx", "uwsgi-1"]
    assert len(select(["fcgibridge-wsgi"])) == 6  # the default mode, --sync and --inline auto, 1 and 2 workers
    with pytest.raises(SystemExit, match="no such row"):
        select(["fcgibridg"])


def test_nginx_reaches_each_kind_of_backend_as_the_readme_says(tmp_path: Path) -> None:
    from harness.nginx import Upstream, config

    sock = tmp_path / "b.sock"
    keep = config(tmp_path, Upstream.FASTCGI, sock, 8080, build="")
    assert "fastcgi_keep_conn on;" in keep and "keepalive 32;" in keep and "SCRIPT_FILENAME" not in keep
    close = config(tmp_path, Upstream.FASTCGI_CLOSE, sock, 8080, build="", script_dir=tmp_path)
    assert "fastcgi_keep_conn off;" in close and "keepalive 32;" not in close
    assert f"fastcgi_param SCRIPT_FILENAME {tmp_path}$uri.php;" in close
    proxy = config(tmp_path, Upstream.HTTP, sock, 8080, build="")
    assert 'proxy_http_version 1.1;' in proxy and 'proxy_set_header Connection "";' in proxy
    static = config(tmp_path, Upstream.STATIC, sock, 8080, build="")
    assert "upstream" not in static and "error_page 405 =200 /64k;" in static
    assert (tmp_path / "64k.bin").read_bytes() == loads.BIG_BODY
    for text in (keep, close, proxy, static):
        assert "worker_processes 1;" in text and "access_log off;" in text and "listen 127.0.0.1:8080;" in text


# --------------------------------------------------------------------------- checks, direct mode, docs


def test_answer_checks() -> None:
    hello, big, echo = loads.LOADS
    assert loads.answer_problem(hello, 200, b"Hello, World!", None) == ""
    assert "status 502" in loads.answer_problem(hello, 502, b"Bad Gateway", None)
    assert loads.answer_problem(big, 200, loads.BIG_BODY, None) == ""
    assert loads.answer_problem(big, 200, b"x" * 65536, None) != ""
    sent = bytes(range(256)) * 256
    assert loads.answer_problem(echo, 200, sent, sent) == ""
    assert loads.answer_problem(echo, 200, loads.BIG_BODY, sent) != ""
    assert loads.answer_problem(echo, 200, loads.BIG_BODY, sent, echoes=False) == ""


def test_direct_mode_reads_the_bench_json() -> None:
    text = ('{"requests": 400, "duration": 4.0, "requests_per_second": 100.0, "latency_ms": {"p50": 1, '
            '"p90": 2, "p99": 3, "max": 4, "mean": 1.5}, "errors": {"connect": 1, "status": 2}, '
            '"statuses": {"200": 398, "502": 2}, "bytes": {"body": 5200, "total": 9000}, "concurrency": 32, '
            '"processes": 1, "keep_alive": true, "multiplex": false}\n')
    m = direct.from_bench("uwsgi-1", "hello", 1, direct.parse_bench("progress...\n" + text), ["fcgibridge"], text)
    assert (m.requests, m.requests_per_second, m.non_2xx, m.connections) == (400, 100.0, 2, 32)
    assert m.socket_errors == {"connect": 1} and m.latency_ms["mean"] == 1.5
    with pytest.raises(ValueError, match="requests_per_second"):
        direct.parse_bench('{"requests": 1}')


def test_no_stall_check_where_the_clients_latency_leaves_out_connecting() -> None:
    data = {"requests": 400, "duration": 4.0, "requests_per_second": 100.0, "latency_ms": {"mean": 1.0},
            "errors": {}, "statuses": {"200": 400}, "concurrency": 32}
    assert direct.from_bench("uwsgi-1", "hello", 1, {**data, "keep_alive": True}, [], "").stalled
    assert not direct.from_bench("uwsgi-1", "hello", 1, {**data, "keep_alive": False}, [], "").stalled


def test_docs_block_is_replaced_between_its_markers() -> None:
    page = "intro\n<!-- bench-run -->\nold\n<!-- /bench-run -->\noutro\n"
    assert docs.replace_block(page, "bench-run", "new table\n") == (
        "intro\n<!-- bench-run -->\nnew table\n<!-- /bench-run -->\noutro\n")
    with pytest.raises(SystemExit):
        docs.replace_block("no markers", "bench-run", "x")
