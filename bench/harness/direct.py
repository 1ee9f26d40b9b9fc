"""``--direct``: no nginx. ``fcgibridge bench`` drives each FastCGI server over its unix socket,
wrk drives each HTTP server (uvicorn, gunicorn) on 127.0.0.1; the number that matters is the
server's own CPU per request, read from /proc as in the main mode.

``fcgibridge bench ADDR PATH -c N -d S --json`` prints one JSON object: ``requests``,
``duration``, ``requests_per_second``, ``latency_ms`` (``p50``, ``p90``, ``p99``, ``max``,
``mean``), ``errors``, ``statuses``, ``bytes``, ``concurrency`` (connections across all its
processes), ``processes``, ``keep_alive``, ``multiplex``. The echo's body goes with
``--data @FILE``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from harness import cpu, loads, wrk
from harness.backends import PHP_DIR, Backend, Launch
from harness.loads import Load
from harness.nginx import Upstream
from harness.procs import HOST, Processes, free_port, log, run_bounded, tail
from harness.proxied import start_backend
from harness.report import Run
from harness.settings import Settings
from harness.stats import Measurement

BENCH_KEYS = ("requests", "duration", "requests_per_second", "latency_ms", "errors", "statuses", "concurrency")


def setup_words(settings: Settings) -> str:
    return (f"no nginx: FastCGI servers driven by `fcgibridge bench -c {settings.connections} "
            f"-P {settings.direct_processes}` on their unix socket, HTTP servers by wrk -t{settings.threads} "
            f"-c{settings.connections} on 127.0.0.1; {settings.warmup} s warm-up + {settings.duration} s measured "
            f"per test; {settings.rounds} round(s), interleaved")


def parse_bench(text: str) -> dict[str, Any]:
    """The one JSON object ``fcgibridge bench --json`` prints (the last line that is one)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            break
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"fcgibridge bench --json: not an object: {text[:300]!r}")
    if missing := [key for key in BENCH_KEYS if key not in data]:
        raise ValueError(f"fcgibridge bench --json: no {missing} in {text[:300]!r}")
    return data


def from_bench(backend: str, test: str, round_no: int, data: dict[str, Any], command: list[str],
               raw: str) -> Measurement:
    """A measurement from the JSON. Its ``errors`` count each failed request once, by kind; ``status``
    (an answer other than 2xx or 3xx, as wrk's "Non-2xx or 3xx") is the non-2xx count, the rest are
    connection and protocol errors."""
    latency = {key: float(value) for key, value in data["latency_ms"].items()}
    errors = {str(kind): int(count) for kind, count in data["errors"].items()}
    return Measurement(backend=backend, test=test, round=round_no, requests=int(data["requests"]),
                       duration_s=float(data["duration"]), requests_per_second=float(data["requests_per_second"]),
                       latency_ms=latency, connections=int(data["concurrency"]), non_2xx=errors.pop("status", 0),
                       socket_errors=errors,
                       command=command, raw=raw, stall_checked=bool(data.get("keep_alive", True)))


def bench_help(settings: Settings) -> str:
    """``fcgibridge bench --help``, or '' when the command does not exist (yet)."""
    try:
        proc = subprocess.run([*settings.fcgibridge, "bench", "--help"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    usage = proc.stdout
    return usage if proc.returncode == 0 and "--json" in usage else ""


def script_options(backend: Backend, load: Load, usage: str) -> list[str]:
    """What PHP-FPM needs to find the script: SCRIPT_FILENAME, as nginx sends it in the main mode."""
    if not backend.php:
        return []
    script = PHP_DIR / f"{load.path.lstrip('/')}.php"
    if "--script-filename" in usage:
        return ["--script-filename", str(script)]
    return ["--param", f"SCRIPT_FILENAME={script}"]


def body_options(load: Load, body: Path | None) -> list[str]:
    if body is None:
        return []
    return ["-X", load.method, "-H", "Content-Type: application/octet-stream", "--data", f"@{body}"]


def body_file(load: Load, directory: Path, content: bytes | None = None) -> Path | None:
    """The request body of ``load`` in a file (the 64 KiB pattern, or ``content``); None for a GET."""
    if not load.body_size:
        return None
    path = directory / f"{load.name}-{'check' if content is not None else 'load'}.body"
    path.write_bytes(content if content is not None else loads.BIG_BODY[:load.body_size])
    return path


def fastcgi_check(backend: Backend, load: Load, launch: Launch, settings: Settings, usage: str) -> None:
    """One request with ``fcgibridge request`` (a random body for the echo); its body must be right."""
    sent = os.urandom(load.body_size) if load.body_size else None
    body = body_file(load, launch.work, sent)
    argv = [*settings.fcgibridge, "request", f"unix:{launch.sock}", load.path, *body_options(load, body),
            *script_options(backend, load, usage)]
    proc = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    status = 200 if proc.returncode == 0 else 500
    if problem := loads.answer_problem(load, status, proc.stdout, sent):
        raise RuntimeError(f"{' '.join(argv)}: {problem} {proc.stderr[-300:]!r}")


def fastcgi_measure(backend: Backend, load: Load, round_no: int, launch: Launch, server: int,
                    settings: Settings, usage: str) -> Measurement:
    def command(seconds: int) -> list[str]:
        argv = [*settings.fcgibridge, "bench", f"unix:{launch.sock}", load.path, "-c", str(settings.connections),
                "-d", str(seconds), "-P", str(settings.direct_processes), "--json"]
        if backend.upstream is Upstream.FASTCGI_CLOSE:
            argv.append("--no-keep-alive")  # as nginx talks to it: one connection per request
        return argv + body_options(load, body) + script_options(backend, load, usage)

    body = body_file(load, launch.work)

    if settings.warmup:
        run_bounded(command(settings.warmup), settings.warmup + 60)
    argv = command(settings.duration)
    with cpu.Window([server]) as used:
        proc = run_bounded(argv, settings.duration + 60)
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    measurement = from_bench(backend.name, load.name, round_no, parse_bench(proc.stdout), argv, proc.stdout)
    measurement.backend_cpu_s = used.trees[0]
    measurement.load_cpu_s = used.load
    measurement.machine_cpu_s = used.machine
    return measurement


def http_measure(backend: Backend, load: Load, round_no: int, port: int, server: int, work: Path,
                 settings: Settings) -> Measurement:
    url = f"http://{HOST}:{port}{load.path}"

    script = loads.write_script(load, work)

    def command(seconds: int) -> list[str]:
        return wrk.argv(url, threads=settings.threads, connections=settings.connections, seconds=seconds,
                        script=script)

    if settings.warmup:
        wrk.run(command(settings.warmup), settings.warmup)
    argv = command(settings.duration)
    with cpu.Window([server]) as used:
        report, raw = wrk.run(argv, settings.duration)
    return Measurement(backend=backend.name, test=load.name, round=round_no, requests=report.requests,
                       duration_s=report.duration_s, requests_per_second=report.requests_per_second,
                       latency_ms=report.latency_ms, connections=settings.connections, non_2xx=report.non_2xx,
                       socket_errors=report.socket_errors, backend_cpu_s=used.trees[0], load_cpu_s=used.load,
                       machine_cpu_s=used.machine, command=argv, raw=raw)


def run_round(backend: Backend, round_no: int, selected: list[Load], settings: Settings, work: Path,
              procs: Processes, usage: str) -> list[Measurement]:
    directory = work / f"{backend.name}-{round_no}"
    directory.mkdir()
    port = free_port() if backend.speaks_http else None
    launch = Launch(directory, directory / "backend.sock", port=port, fcgibridge=settings.fcgibridge)
    server = None
    try:
        server = start_backend(backend, launch, procs, settings)
        assert server is not None
        results = []
        for load in selected:
            if port is not None:
                loads.check(load, port)
                results.append(http_measure(backend, load, round_no, port, server.pid, directory, settings))
            else:
                fastcgi_check(backend, load, launch, settings, usage)
                results.append(fastcgi_measure(backend, load, round_no, launch, server.pid, settings, usage))
            log(f"{backend.name} round {round_no}: {load.name} {results[-1].requests_per_second:,.0f} req/s")
        return results
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        if text := tail(directory / "backend.log"):
            log(f"--- tail of {directory / 'backend.log'}:\n{text}")
        raise RuntimeError(str(exc)) from exc
    finally:
        if server is not None:
            procs.stop(server)


def run(result: Run, settings: Settings, procs: Processes, work: Path) -> None:
    usage = bench_help(settings)
    for backend in result.backends:
        if backend.argv is None:
            result.skipped[backend.name] = "not in --direct mode: nginx by itself has no server behind it"
    result.backends = [backend for backend in result.backends if backend.argv is not None]
    for backend in result.backends:
        if not backend.speaks_http and not usage:
            result.failures[backend.name] = "`fcgibridge bench` is not available in this fcgibridge yet"
    for round_no in range(1, settings.rounds + 1):
        for backend in result.backends:
            if backend.name in result.failures:
                continue
            try:
                result.measurements += run_round(backend, round_no, result.loads, settings, work, procs, usage)
            except RuntimeError as exc:
                result.failures[backend.name] = f"failed in round {round_no}: {exc}"
                log(f"{backend.name}: {result.failures[backend.name]}")
