"""The main mode: wrk -> a fresh nginx (1 worker) -> the backend, for one backend and one round."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import cpu, loads, nginx, wrk
from harness.backends import BENCH_DIR, PHP_DIR, Backend, Launch, environment
from harness.loads import Load
from harness.procs import HOST, Processes, free_port, log, tail, tcp_accepts, unix_accepts, wait_until
from harness.settings import Settings
from harness.stats import Measurement


def start_backend(backend: Backend, launch: Launch, procs: Processes,
                  settings: Settings) -> subprocess.Popen[bytes] | None:
    if backend.argv is None:
        return None
    argv = backend.argv(launch)
    log(f"{backend.name}: {' '.join(argv)}")
    server = procs.start(argv, launch.work / "backend.log", cwd=BENCH_DIR, env=environment())
    if launch.port is None:
        wait_until(unix_accepts(launch.sock), server, settings.start_timeout, f"{backend.name} on {launch.sock}")
    else:
        wait_until(tcp_accepts(launch.port), server, settings.start_timeout, f"{backend.name} on port {launch.port}")
    return server


def start_nginx(backend: Backend, launch: Launch, procs: Processes, settings: Settings,
                build: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = launch.work / "nginx.conf"
    conf.write_text(nginx.config(launch.work, backend.upstream, launch.sock, port, build=build,
                                 script_dir=PHP_DIR if backend.php else None))
    test = subprocess.run(nginx.argv(conf, launch.work, "-t", "-q"), capture_output=True, text=True, check=False)
    if test.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {test.stderr.strip()}")
    proc = procs.start(nginx.argv(conf, launch.work), launch.work / "nginx.out")
    wait_until(tcp_accepts(port), proc, settings.start_timeout, f"nginx on {HOST}:{port}")
    return proc, port


def measure(backend: Backend, load: Load, round_no: int, port: int, roots: list[int], work: Path,
            settings: Settings) -> Measurement:
    """Warm up, then one measured wrk window with the CPU of backend and nginx read around it."""
    script = loads.write_script(load, work)
    url = f"http://{HOST}:{port}{load.path}"
    if settings.warmup:
        wrk.run(wrk.argv(url, threads=settings.threads, connections=settings.connections,
                         seconds=settings.warmup, script=script), settings.warmup)
    command = wrk.argv(url, threads=settings.threads, connections=settings.connections,
                       seconds=settings.duration, script=script)
    error_log = work / "nginx-error.log"
    offset = nginx.log_size(error_log)
    with cpu.Window(roots) as used:
        report, raw = wrk.run(command, settings.duration)
    return Measurement(
        backend=backend.name, test=load.name, round=round_no, requests=report.requests,
        duration_s=report.duration_s, requests_per_second=report.requests_per_second,
        latency_ms=report.latency_ms, connections=settings.connections, non_2xx=report.non_2xx,
        socket_errors=report.socket_errors, nginx_errors=nginx.error_lines(error_log, offset),
        backend_cpu_s=used.trees[0] if len(roots) == 2 else None, nginx_cpu_s=used.trees[-1],
        load_cpu_s=used.load, machine_cpu_s=used.machine, command=command, raw=raw)


def run_round(backend: Backend, round_no: int, selected: list[Load], settings: Settings, work: Path,
              procs: Processes, build: str) -> list[Measurement]:
    """One round of one backend: fresh backend and nginx, check each test once, measure each, stop both."""
    directory = work / f"{backend.name}-{round_no}"
    directory.mkdir()
    launch = Launch(directory, directory / "backend.sock", fcgibridge=settings.fcgibridge)
    started: list[subprocess.Popen[bytes]] = []
    try:
        server = start_backend(backend, launch, procs, settings)
        started += [server] if server is not None else []
        proxy, port = start_nginx(backend, launch, procs, settings, build)
        started.append(proxy)
        for load in selected:
            loads.check(load, port, echoes=backend.argv is not None)
        roots = [proc.pid for proc in started]
        results = []
        for load in selected:
            log(f"{backend.name} round {round_no}: {load.name}")
            results.append(measure(backend, load, round_no, port, roots, directory, settings))
            log(f"{backend.name} round {round_no}: {load.name} {results[-1].requests_per_second:,.0f} req/s")
        return results
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        for path in (directory / "backend.log", directory / "nginx-error.log"):
            if text := tail(path):
                log(f"--- tail of {path}:\n{text}")
        raise RuntimeError(str(exc)) from exc
    finally:
        for proc in reversed(started):
            procs.stop(proc)
