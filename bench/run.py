"""By-hand FastCGI server benchmark: wrk -> nginx (1 worker) -> FastCGI backend on a unix socket.

Runs every selected backend one after the other in one invocation, each behind its own fresh nginx
(``fastcgi_keep_conn on`` with an ``upstream { keepalive 32; }`` pool), loads ``GET /hello`` (13-byte
``Hello, World!``) with wrk, and prints a markdown table of requests/s, errors and ratios.

    python bench/run.py                              # every backend, 10 s each
    python bench/run.py --duration 3 --only flup --only fcgisgi-asgi

See bench/README.md. Not a pytest test: it needs nginx and wrk and takes a while.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
EXPECTED_BODY = b"Hello, World!"
URL_PATH = "/hello"
HOST = "127.0.0.1"
PACKAGES = ("fcgibridge", "flup", "fcgisgi", "uvloop", "asgiref")

#: WSGI rows are compared with this backend, ASGI rows with the other.
REFERENCE = {"WSGI": "flup", "ASGI": "fcgisgi-asgi"}
#: (backend, reference, minimum ratio) the project aims for, same worker count.
TARGETS = (
    ("fcgibridge-wsgi", "flup", 2.0),
    ("fcgibridge-wsgi-sync", "flup", 2.0),
    ("fcgibridge-asgi", "fcgisgi-asgi", 1.0),
)


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Backend:
    name: str
    interface: str  # "WSGI" or "ASGI"
    description: str
    argv: Callable[[argparse.Namespace, Path], list[str]]
    is_fcgibridge: bool = False


def fcgibridge_base(args: argparse.Namespace) -> list[str]:
    """How to start the fcgibridge CLI: --fcgibridge-cmd, the console script, else ``python -m fcgibridge``."""
    if args.fcgibridge_cmd:
        return shlex.split(args.fcgibridge_cmd)
    script = Path(sys.executable).with_name("fcgibridge")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "fcgibridge"]


def fcgibridge_argv(interface: str, app: str, *extra: str) -> Callable[[argparse.Namespace, Path], list[str]]:
    def build(args: argparse.Namespace, sock: Path) -> list[str]:
        argv = [*fcgibridge_base(args), app, "-b", f"unix:{sock}", "-w", str(args.workers), "--interface", interface]
        argv += extra
        if args.fcgibridge_threads is not None:
            argv += ["--threads", str(args.fcgibridge_threads)]
        return argv + list(args.fcgibridge_arg)

    return build


def baseline_argv(server: str) -> Callable[[argparse.Namespace, Path], list[str]]:
    def build(args: argparse.Namespace, sock: Path) -> list[str]:
        argv = [sys.executable, str(BENCH_DIR / "baselines.py"), server, "--bind", str(sock)]
        argv += ["--workers", str(args.workers)]
        if server.startswith("fcgisgi"):
            argv += ["--loop", args.fcgisgi_loop]
        return argv

    return build


BACKENDS = (
    Backend("fcgibridge-wsgi", "WSGI", "fcgibridge --interface wsgi", fcgibridge_argv("wsgi", "apps:wsgi_app"), True),
    Backend("fcgibridge-wsgi-sync", "WSGI", "fcgibridge --interface wsgi --sync",
            fcgibridge_argv("wsgi", "apps:wsgi_app", "--sync"), True),
    Backend("flup", "WSGI", "flup.server.fcgi.WSGIServer (threaded)", baseline_argv("flup")),
    Backend("fcgisgi-wsgi", "WSGI", "fcgisgi.run_wsgi_server", baseline_argv("fcgisgi-wsgi")),
    Backend("fcgibridge-asgi", "ASGI", "fcgibridge --interface asgi3", fcgibridge_argv("asgi3", "apps:asgi_app"), True),
    Backend("fcgisgi-asgi", "ASGI", "fcgisgi.run_asgi_server", baseline_argv("fcgisgi-asgi")),
)
BACKEND_NAMES = tuple(b.name for b in BACKENDS)


def select_backends(only: list[str]) -> list[Backend]:
    """``--only`` takes a backend name or a family prefix (``fcgisgi`` = both fcgisgi rows)."""
    if not only:
        return list(BACKENDS)
    wanted = set()
    for item in only:
        matches = {b.name for b in BACKENDS if b.name == item or b.name.startswith(item + "-")}
        if not matches:
            raise SystemExit(f"--only {item!r}: unknown backend; choose from {', '.join(BACKEND_NAMES)}")
        wanted |= matches
    return [b for b in BACKENDS if b.name in wanted]


# --------------------------------------------------------------------------- processes


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Processes:
    """Every process the harness starts, each in its own session so it (and its children) stop by id."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log_path: Path, *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd, env=env, start_new_session=True)
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGTERM the process group led by ``proc.pid``, then SIGKILL it after ``timeout``."""
        self._signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} did not stop after SIGTERM; sending SIGKILL")
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()
        # Children (pre-forked workers) may outlive their parent by a moment.
        self._signal_group(proc, signal.SIGKILL)
        if proc in self._running:
            self._running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._running)):
            self.stop(proc)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # start_new_session=True made proc.pid the id of its own process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def wait_until(probe: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with status {proc.returncode} before it was ready")
        if probe():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")


def unix_accepts(path: Path) -> Callable[[], bool]:
    def probe() -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(str(path))
            except OSError:
                return False
            return True

    return probe


def tcp_accepts(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return True
        except OSError:
            return False

    return probe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- nginx


NGINX = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"


def nginx_conf(work: Path, sock: Path, port: int, nginx_build: str) -> str:
    temp_paths = ["client_body", "proxy", "fastcgi"]
    temp_paths += [m for m in ("uwsgi", "scgi") if f"--without-http_{m}_module" not in nginx_build]
    temp = "\n".join(f"    {m}_temp_path {work / ('nginx-' + m)};" for m in temp_paths)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""\
# Written by bench/run.py for one backend run.
daemon off;
master_process on;
worker_processes 1;
{user}pid {work / "nginx.pid"};
error_log {work / "nginx-error.log"} warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
{temp}

    upstream fcgi_backend {{
        server unix:{sock};
        keepalive 32;
    }}

    server {{
        listen {HOST}:{port};
        server_name localhost;

        location / {{
            fastcgi_pass fcgi_backend;
            fastcgi_keep_conn on;

            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE   nginx/$nginx_version;
            fastcgi_param SERVER_PROTOCOL   $server_protocol;
            fastcgi_param REQUEST_SCHEME    $scheme;
            fastcgi_param REQUEST_METHOD    $request_method;
            fastcgi_param REQUEST_URI       $request_uri;
            fastcgi_param QUERY_STRING      $query_string;
            fastcgi_param CONTENT_TYPE      $content_type;
            fastcgi_param CONTENT_LENGTH    $content_length;
            fastcgi_param SCRIPT_NAME       "";
            fastcgi_param PATH_INFO         $uri;
            fastcgi_param DOCUMENT_URI      $document_uri;
            fastcgi_param DOCUMENT_ROOT     $document_root;
            fastcgi_param REMOTE_ADDR       $remote_addr;
            fastcgi_param REMOTE_PORT       $remote_port;
            fastcgi_param SERVER_ADDR       $server_addr;
            fastcgi_param SERVER_PORT       $server_port;
            fastcgi_param SERVER_NAME       $server_name;
        }}
    }}
}}
"""


def nginx_argv(conf: Path, work: Path, *extra: str) -> list[str]:
    return [NGINX, "-p", f"{work}/", "-c", str(conf), "-e", str(work / "nginx-error.log"), *extra]


def nginx_errors(path: Path) -> int:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if re.search(r"\[(error|crit|alert|emerg)\]", line))


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests_per_sec: float | None = None
    requests: int | None = None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    p50: str = ""
    p99: str = ""
    raw: str = ""


def parse_wrk(output: str) -> WrkResult:
    result = WrkResult(raw=output)
    if m := re.search(r"Requests/sec:\s*([\d.]+)", output):
        result.requests_per_sec = float(m.group(1))
    if m := re.search(r"(\d+) requests in", output):
        result.requests = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output):
        result.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        result.socket_errors = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups(),
                                                           strict=True)}
    if m := re.search(r"^\s*50%\s+(\S+)", output, re.M):
        result.p50 = m.group(1)
    if m := re.search(r"^\s*99%\s+(\S+)", output, re.M):
        result.p99 = m.group(1)
    return result


def run_wrk(args: argparse.Namespace, port: int, seconds: int) -> WrkResult:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency",
            "--timeout", "5s", f"http://{HOST}:{port}{URL_PATH}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_wrk(proc.stdout)


def check_response(port: int) -> None:
    """One request through nginx with http.client: 200, text/plain, body exactly ``Hello, World!``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", URL_PATH)
        resp = conn.getresponse()
        body = resp.read()
        ctype = resp.getheader("Content-Type", "")
    finally:
        conn.close()
    if resp.status != 200 or body != EXPECTED_BODY or not ctype.startswith("text/plain"):
        raise RuntimeError(f"bad response: status={resp.status} content-type={ctype!r} body={body[:80]!r}")


# --------------------------------------------------------------------------- one backend


@dataclass
class Outcome:
    """All measured rounds of one backend."""

    backend: Backend
    runs: list[WrkResult] = field(default_factory=list)
    nginx_errors: int = 0
    problem: str = ""  # why there is no number (not available / failed)

    def _by_rps(self) -> list[WrkResult]:
        return sorted((r for r in self.runs if r.requests_per_sec is not None), key=lambda r: r.requests_per_sec or 0)

    @property
    def rps(self) -> float | None:
        """Median requests/s over the rounds; None when not measured or any round failed."""
        values = [r.requests_per_sec for r in self._by_rps() if r.requests_per_sec is not None]
        return statistics.median(values) if values and not self.problem else None

    @property
    def spread(self) -> str:
        values = [r.requests_per_sec or 0.0 for r in self._by_rps()]
        return f"{values[0]:,.0f}-{values[-1]:,.0f}" if len(values) > 1 else ""

    @property
    def median_run(self) -> WrkResult | None:
        ordered = self._by_rps()
        return ordered[len(ordered) // 2] if ordered else None

    def error_text(self) -> str:
        if not self.runs:
            return "-"
        non_2xx = sum(r.non_2xx for r in self.runs)
        parts = [f"non-2xx {non_2xx}"] if non_2xx else []
        for kind in ("connect", "read", "write", "timeout"):
            if count := sum(r.socket_errors.get(kind, 0) for r in self.runs):
                parts.append(f"{kind} {count}")
        if self.nginx_errors:
            parts.append(f"nginx log {self.nginx_errors}")
        return ", ".join(parts) if parts else "0"

    @property
    def flagged(self) -> bool:
        return self.error_text() not in ("0", "-")


def fcgibridge_unavailable(args: argparse.Namespace, env: dict[str, str]) -> str:
    """Empty when the fcgibridge CLI answers ``--help``, else why not."""
    argv = [*fcgibridge_base(args), "--help"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env, cwd=BENCH_DIR, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{shlex.join(argv)}` failed: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        return f"`{shlex.join(argv)}` exited {proc.returncode}: {last[0]}"
    return ""


def backend_env() -> dict[str, str]:
    # bench/ for `apps:...`; the repo root so a not-yet-installed fcgibridge is importable from source.
    env = dict(os.environ)
    paths = [str(BENCH_DIR), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_backend(outcome: Outcome, round_no: int, args: argparse.Namespace, work: Path, procs: Processes,
                nginx_build: str) -> None:
    """One round of one backend: fresh backend and nginx, warm-up, measure, stop both. Updates ``outcome``."""
    backend = outcome.backend
    env = backend_env()
    if backend.is_fcgibridge and (why := fcgibridge_unavailable(args, env)):
        outcome.problem = f"not available: {why}"
        return

    bdir = work / f"{backend.name}-{round_no}"
    bdir.mkdir()
    sock = bdir / "fcgi.sock"
    port = free_port()
    conf = bdir / "nginx.conf"
    conf.write_text(nginx_conf(bdir, sock, port, nginx_build))
    backend_log = bdir / "backend.log"
    nginx_log = bdir / "nginx-error.log"
    label = backend.name if args.rounds == 1 else f"{backend.name} (round {round_no}/{args.rounds})"

    argv = backend.argv(args, sock)
    log(f"{label}: {shlex.join(argv)}")
    server = procs.start(argv, backend_log, cwd=BENCH_DIR, env=env)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        wait_until(unix_accepts(sock), server, args.start_timeout, f"{backend.name} socket {sock}")
        test = subprocess.run(nginx_argv(conf, bdir, "-t", "-q"), capture_output=True, text=True, check=False)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {test.stderr.strip()}")
        nginx = procs.start(nginx_argv(conf, bdir), bdir / "nginx.out")
        wait_until(tcp_accepts(port), nginx, args.start_timeout, f"nginx on {HOST}:{port}")
        check_response(port)
        if args.warmup > 0:
            log(f"{label}: warm-up {args.warmup} s")
            run_wrk(args, port, args.warmup)
        log(f"{label}: measuring {args.duration} s")
        result = run_wrk(args, port, args.duration)
        if result.requests_per_sec is None:
            raise RuntimeError(f"could not parse wrk output:\n{result.raw}")
        outcome.runs.append(result)
        check_response(port)
    except (RuntimeError, OSError, subprocess.SubprocessError, http.client.HTTPException) as exc:
        outcome.problem = f"failed: {exc}"
        log(f"{label}: {outcome.problem}")
        for path in (backend_log, nginx_log):
            if text := tail(path):
                log(f"--- tail of {path}:\n{text}")
    finally:
        if nginx is not None:
            procs.stop(nginx)
        procs.stop(server)
    outcome.nginx_errors += nginx_errors(nginx_log)
    if outcome.runs and not outcome.problem:
        log(f"{label}: {outcome.runs[-1].requests_per_sec:,.0f} req/s, errors so far: {outcome.error_text()}")


# --------------------------------------------------------------------------- report


def first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    if name == "fcgibridge" and (REPO_ROOT / "fcgibridge" / "__init__.py").exists():
        m = re.search(r'__version__\s*=\s*"([^"]+)"', (REPO_ROOT / "fcgibridge" / "__init__.py").read_text())
        return f"{m.group(1) if m else '?'} (source tree, not installed)"
    return "not installed"


def git_revision() -> str:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown"


def environment_lines(args: argparse.Namespace) -> Iterator[str]:
    yield f"- nginx: {first_line([NGINX, '-v'])} (worker_processes 1, fastcgi_keep_conn on, upstream keepalive 32)"
    yield f"- wrk: {first_line(['wrk', '-v'])}"
    yield f"- python: {platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    yield "- packages: " + ", ".join(f"{p} {package_version(p)}" for p in PACKAGES)
    yield f"- fcgibridge git: {git_revision()}"
    yield f"- host: {platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs"
    yield (f"- load: wrk -t{args.threads} -c{args.connections}, GET http://{HOST}:<port>{URL_PATH}; "
           f"{args.warmup} s warm-up + {args.duration} s measured per backend and round; {args.rounds} round(s), "
           f"interleaved")
    yield f"- backends: {args.workers} worker process(es) each; fcgisgi event loop: {args.fcgisgi_loop}"


def ratio(outcome: Outcome, by_name: dict[str, Outcome]) -> str:
    ref = by_name.get(REFERENCE[outcome.backend.interface])
    if outcome.rps is None or ref is None or not ref.rps:
        return "n/a"
    return f"{outcome.rps / ref.rps:.2f}x"


def render(outcomes: list[Outcome], args: argparse.Namespace, started: str) -> str:
    by_name = {o.backend.name: o for o in outcomes}
    lines = [
        "# fcgibridge FastCGI benchmark",
        "",
        f"Command: `{shlex.join(sys.orig_argv)}`",
        "",
        f"Started {started}.",
        "",
        *environment_lines(args),
        "",
        "| backend | interface | req/s | errors | ratio | p50 / p99 latency |",
        "|---|---|---:|---|---:|---|",
    ]
    for o in sorted(outcomes, key=lambda o: (o.backend.interface != "WSGI", BACKEND_NAMES.index(o.backend.name))):
        ref_name = REFERENCE[o.backend.interface]
        if o.rps is None:
            rps = o.problem.split(":", 1)[0] or "not run"
        else:
            rps = f"{o.rps:,.0f}" + (f" ({o.spread})" if o.spread else "") + (" (!)" if o.flagged else "")
        rat = ratio(o, by_name)
        rat = f"{rat} vs {ref_name}" if rat != "n/a" else rat
        run = o.median_run
        lat = f"{run.p50} / {run.p99}" if run and o.rps is not None else "-"
        lines.append(f"| {o.backend.name} | {o.backend.interface} | {rps} | {o.error_text()} | {rat} | {lat} |")
    lines.append("")
    lines.append("Ratios: WSGI rows vs flup (threaded), ASGI rows vs fcgisgi ASGI. "
                 "(!) = the run had errors; its number is not trustworthy.")
    if args.rounds > 1:
        lines.append(f"req/s is the median of {args.rounds} rounds (min-max in brackets); latency is from the "
                     "median round; errors are summed over the rounds.")

    notes = [f"- {o.backend.name}: {o.problem}" for o in outcomes if o.problem]
    if notes:
        lines += ["", "Not measured:", *notes]

    targets: list[str] = []
    for name, ref_name, minimum in TARGETS:
        mine, base = by_name.get(name), by_name.get(ref_name)
        if mine is None or base is None:
            continue
        if mine.rps is None or not base.rps:
            verdict = "n/a (not measured)"
        else:
            value = mine.rps / base.rps
            verdict = f"{value:.2f}x -> {'MET' if value >= minimum else 'NOT MET'}"
            if mine.flagged or base.flagged:
                verdict += " (run had errors)"
        targets.append(f"- {name} >= {minimum:g}x {ref_name}: {verdict}")
    if targets:
        lines += ["", "Targets (same worker count):", *targets]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=positive_int, default=10, help="whole seconds of measured load per "
                        "backend (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of every backend (default 1)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only this backend (repeatable; a prefix such as 'fcgisgi' selects a family): "
                             f"{', '.join(BACKEND_NAMES)}")
    parser.add_argument("--warmup", type=int, default=2, help="whole seconds of discarded load before measuring "
                        "(default 2; 0 disables)")
    parser.add_argument("--rounds", type=positive_int, default=1, help="measure every backend this many times, "
                        "interleaved, and report the median (default 1)")
    parser.add_argument("--fcgisgi-loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop for fcgisgi (default asyncio, as its README runs it)")
    parser.add_argument("--fcgibridge-cmd", default="", metavar="CMD",
                        help="command that starts fcgibridge (default: the fcgibridge script next to this python, "
                             "else 'python -m fcgibridge')")
    parser.add_argument("--fcgibridge-threads", type=int, default=None, metavar="N",
                        help="pass --threads N to fcgibridge (default: its own default)")
    parser.add_argument("--fcgibridge-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the fcgibridge command line (repeatable)")
    parser.add_argument("--start-timeout", type=positive_float, default=20.0,
                        help="seconds to wait for a backend socket / nginx to accept (default 20)")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown report to this file")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.connections < args.threads:
        parser.error("need 1 <= --threads <= --connections")
    if args.connections > 2000:
        parser.error("--connections above 2000 is not supported by the generated nginx config")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = select_backends(args.only)
    for tool in ("wrk", NGINX):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found")
    nginx_build = subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=False).stderr
    # Explicitly, so that a SIGINT still stops (and cleans up) a run whose shell started it ignoring SIGINT.
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="fcgibench-"))
    outcomes: list[Outcome] = []
    interrupted = False
    try:
        log(f"work dir {work}")
        outcomes = [Outcome(backend) for backend in backends]
        # Rounds interleave the backends, so a slow patch of the machine hits all of them alike.
        for round_no in range(1, args.rounds + 1):
            for outcome in outcomes:
                if outcome.problem:
                    continue
                run_backend(outcome, round_no, args, work, procs, nginx_build)
                time.sleep(1.0)  # let the previous run's sockets and processes go away
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping everything started")
    finally:
        # A second Ctrl-C must not cut the clean-up short; each stop is bounded (SIGTERM, then SIGKILL).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if args.keep_workdir:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report = render(outcomes, args, started)
    if interrupted:
        report += "\nINTERRUPTED: stopped early; rows are missing rounds or were not run.\n"
    print(report, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    if interrupted:
        return 130
    return 1 if any(o.problem.startswith("failed") or o.flagged for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
