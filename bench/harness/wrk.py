"""Running wrk and reading its report."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.procs import run_bounded

SOCKET_ERRORS = ("connect", "read", "write", "timeout")
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkReport:
    requests: int = 0
    duration_s: float = 0.0
    requests_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # mean, max, p50, p75, p90, p99
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)


def to_ms(text: str) -> float:
    """A wrk time such as ``350.12us``, ``1.20ms``, ``2.00s`` or ``1.00m`` in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse(output: str) -> WrkReport:
    """wrk's text report (run with ``--latency``). Raises ValueError when it has no result."""
    report = WrkReport()
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.M)
    if not rate or not total:
        raise ValueError(f"no result in wrk output:\n{output}")
    report.requests_per_second = float(rate.group(1))
    report.requests = int(total.group(1))
    report.duration_s = to_ms(total.group(2)) / 1000.0
    if latency := re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.M):
        report.latency_ms["mean"] = to_ms(latency.group(1))
        report.latency_ms["max"] = to_ms(latency.group(3))
    for percent, value in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)", output, re.M):
        report.latency_ms[f"p{percent}"] = to_ms(value)
    if non_2xx := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output):
        report.non_2xx = int(non_2xx.group(1))
    if errors := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        report.socket_errors = {kind: int(count) for kind, count in zip(SOCKET_ERRORS, errors.groups(), strict=True)}
    return report


def argv(url: str, *, threads: int, connections: int, seconds: int, script: Path | None) -> list[str]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script is not None:
        command += ["-s", str(script)]
    return [*command, url]


def run(command: list[str], seconds: int) -> tuple[WrkReport, str]:
    """Run wrk (bounded by its own -d, and a hard timeout past it); its report and raw output."""
    proc = run_bounded(command, seconds + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return parse(proc.stdout), proc.stdout
