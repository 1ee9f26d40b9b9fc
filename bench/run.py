"""fcgibridge against its peers: wrk -> nginx -> each backend, three tests, interleaved rounds.

    bash bench/run                                  # install what is missing, then this script
    python bench/run.py                             # every row and test, 2 rounds of 4 s
    python bench/run.py --duration 1 --rounds 1 --only uvicorn --only fcgibridge-asgi --tests hello
    python bench/run.py --direct                    # no nginx: each server driven directly
    python bench/run.py --docs                      # also --direct for /hello; rewrite docs/benchmarks.*

Writes report.md, results.json and chart.png to --output (default bench/results/<UTC time>/).
See bench/README.md. Not a pytest test: it needs nginx, wrk and php-fpm and takes minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from harness import backends, chart, direct, docs, loads, machine, nginx, proxied
from harness.backends import BENCH_DIR, Backend
from harness.loads import Load
from harness.procs import Processes, log
from harness.report import Run, markdown, write_json
from harness.settings import Settings


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--duration", type=positive_int, default=4, help="measured seconds per test (default 4)")
    add("--warmup", type=non_negative_int, default=1, help="discarded seconds of load before each (default 1)")
    add("--rounds", type=positive_int, default=2, help="rounds, interleaved A B C .. A B C (default 2)")
    add("--threads", type=positive_int, default=1, help="wrk threads (default 1)")
    add("--connections", type=positive_int, default=32, help="wrk connections (default 32)")
    add("--only", action="append", default=[], metavar="ROW",
        help="run only this row, or rows starting ROW- (repeatable): " + ", ".join(backends.BACKEND_NAMES))
    add("--tests", action="append", default=[], metavar="TEST",
        help="run only these tests (repeatable or comma-separated): " + ", ".join(loads.LOAD_NAMES))
    add("--direct", action="store_true", help="no nginx: fcgibridge bench drives FastCGI servers, wrk HTTP ones")
    add("--direct-processes", type=positive_int, default=1, metavar="N",
        help="load processes of fcgibridge bench in --direct mode (its -P; default 1)")
    add("--output", type=Path, default=None, metavar="DIR",
        help="where report.md, results.json and chart.png go (default bench/results/<UTC time>/)")
    add("--docs", action="store_true", help="also write the tables into docs/benchmarks.md and the chart to "
        "docs/benchmarks.png; without --direct, the rows then run once more without nginx (/hello) for the "
        "page's second table")
    add("--note", default="", help="a line the report (and docs page) shows under the command, e.g. "
        "'provisional run'")
    add("--fcgibridge-cmd", default="", metavar="CMD", help="how to start fcgibridge (default: the fcgibridge "
        "script beside this Python, else python -m fcgibridge)")
    add("--start-timeout", type=float, default=30.0, help="seconds a backend or nginx may take to accept "
        "(default 30)")
    add("--keep-workdir", action="store_true", help="keep the temporary directory with configs and logs")
    add("--list", action="store_true", help="list the rows and tests, and exit")
    args = parser.parse_args(argv)
    args.tests = [name for item in args.tests for name in item.split(",") if name]
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(duration=args.duration, warmup=args.warmup, rounds=args.rounds, threads=args.threads,
                    connections=args.connections, start_timeout=args.start_timeout,
                    fcgibridge=backends.fcgibridge_command(args.fcgibridge_cmd), direct=args.direct,
                    direct_processes=args.direct_processes)


def print_list() -> None:
    for backend in backends.BACKENDS:
        print(f"{backend.name:24} {backend.interface:5} {backend.summary}")
    for load in loads.LOADS:
        print(f"test {load.name:19} {load.title}")


def missing_tools(selected: list[Backend]) -> list[str]:
    tools = ["wrk", nginx.NGINX]
    if any(b.php for b in selected):
        tools.append(backends.php_fpm_binary())
    return [tool for tool in tools if shutil.which(tool) is None]


def run_through_nginx(run: Run, settings: Settings, procs: Processes, work: Path) -> None:
    """Every round runs every row once (A B C .. A B C), so a slow patch of the machine hits all alike."""
    build = nginx.build_info()
    for round_no in range(1, settings.rounds + 1):
        for backend in run.backends:
            if backend.name in run.failures:
                continue
            try:
                run.measurements += proxied.run_round(backend, round_no, run.loads, settings, work, procs, build)
            except RuntimeError as exc:
                run.failures[backend.name] = f"failed in round {round_no}: {exc}"
                log(f"{backend.name}: {run.failures[backend.name]}")
            time.sleep(0.5)  # let the last run's sockets and processes go


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def default_output() -> Path:
    return BENCH_DIR / "results" / time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())


def write_outputs(run: Run, output: Path, *, to_docs: bool) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.md").write_text(markdown(run))
    write_json(run, output / "results.json")
    chart.write(run, output / "chart.png")
    log(f"wrote {output}/report.md, results.json, chart.png")
    if to_docs:
        docs.update(run, output / "chart.png")
        log(f"wrote {docs.PAGE} and {docs.CHART}")


def measure(run: Run, settings: Settings, *, keep_workdir: bool) -> None:
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="fcgibridge-bench-"))
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)
    try:
        log(f"work dir {work}")
        if settings.direct:
            direct.run(run, settings, procs, work)
        else:
            run_through_nginx(run, settings, procs, work)
    except KeyboardInterrupt:
        run.interrupted = True
        log("interrupted; stopping everything this run started")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if keep_workdir:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def command_line() -> str:
    """The command as typed: ``bash bench/run ARGS`` (it says so in FCGIBRIDGE_BENCH_VIA), else this one."""
    via = os.environ.get("FCGIBRIDGE_BENCH_VIA")
    return f"{via} {shlex.join(sys.argv[1:])}".rstrip() if via else shlex.join(sys.orig_argv)


def one_run(args: argparse.Namespace, settings: Settings, selected: list[Backend], chosen: list[Load],
            output: Path) -> Run:
    """Measure, write report.md, results.json and chart.png to ``output`` (and the docs with --docs), print."""
    run = Run(command=command_line(), python_command=shlex.join(sys.orig_argv), started=utc_now(),
              mode="direct" if settings.direct else "nginx",
              setup=direct.setup_words(settings) if settings.direct else settings.load_words(),
              machine=machine.machine(), versions=machine.versions(settings.fcgibridge), backends=selected,
              loads=chosen, note=args.note)
    measure(run, settings, keep_workdir=args.keep_workdir)
    run.finished = utc_now()
    write_outputs(run, output, to_docs=args.docs and not run.interrupted)
    print(markdown(run), end="")
    return run


#: The docs page's second table (``--docs`` without ``--direct``): the servers' own cost per /hello.
DOCS_DIRECT_TESTS = ["hello"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print_list()
        return 0
    selected = backends.select(args.only)
    chosen: list[Load] = loads.select_loads(args.tests)
    if missing := missing_tools(selected):
        raise SystemExit(f"not installed: {', '.join(missing)} (bash bench/run installs them)")
    settings = settings_from(args)
    output = args.output or default_output()
    runs = [one_run(args, settings, selected, chosen, output)]
    if args.docs and not args.direct and not runs[0].interrupted:
        log("--docs: now the same rows without nginx (--direct), for the page's second table")
        runs.append(one_run(args, dataclasses.replace(settings, direct=True), selected,
                            loads.select_loads(DOCS_DIRECT_TESTS), output / "direct"))
    if any(run.interrupted for run in runs):
        return 130
    flagged = any(m.errors or m.stalled for run in runs for m in run.measurements)
    return 1 if any(run.failures for run in runs) or flagged else 0


if __name__ == "__main__":
    sys.exit(main())
