"""Measurements and what the report computes from them: medians, spread, flags, CPU per request."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Measurement:
    """One measured window: one backend, one test, one round."""

    backend: str
    test: str
    round: int
    requests: int
    duration_s: float
    requests_per_second: float
    latency_ms: dict[str, float]
    connections: int
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    nginx_errors: list[str] = field(default_factory=list)
    backend_cpu_s: float | None = None
    nginx_cpu_s: float | None = None
    load_cpu_s: float | None = None  # the load generator (wrk, fcgibridge bench)
    machine_cpu_s: float | None = None  # every CPU of the machine, busy time over the window
    command: list[str] = field(default_factory=list)
    raw: str = ""
    #: False where the client's latency leaves out connecting (fcgibridge bench --no-keep-alive),
    #: so Little's law undercounts what is in flight and the stall check would cry wolf.
    stall_checked: bool = True

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values()) + len(self.nginx_errors)

    @property
    def stalled(self) -> bool:
        return self.stall_checked and stalled(self.requests_per_second, self.latency_ms.get("mean"), self.connections)

    @property
    def other_cpu_share(self) -> float | None:
        """Cores' worth of CPU that processes outside this measurement used during its window."""
        parts = [self.machine_cpu_s, self.load_cpu_s]
        if any(part is None for part in parts) or not self.duration_s:
            return None
        ours = (self.backend_cpu_s or 0.0) + (self.nginx_cpu_s or 0.0) + (self.load_cpu_s or 0.0)
        return max(0.0, ((self.machine_cpu_s or 0.0) - ours) / self.duration_s)

    def cpu_us_per_request(self, seconds: float | None) -> float | None:
        if seconds is None or not self.requests:
            return None
        return seconds / self.requests * 1e6

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stalled"] = self.stalled
        data["backend_cpu_us_per_request"] = self.cpu_us_per_request(self.backend_cpu_s)
        data["nginx_cpu_us_per_request"] = self.cpu_us_per_request(self.nginx_cpu_s)
        data["other_cpu_cores"] = self.other_cpu_share
        return data


def stalled(requests_per_second: float, mean_latency_ms: float | None, connections: int) -> bool:
    """Little's law: requests/s x mean latency is how many requests were in flight on average.

    With every connection busy it is about ``connections``; below half of them, connections sat
    idle waiting (a stall: a lost response, a timeout, a backend that stopped accepting).
    """
    if mean_latency_ms is None:
        return True
    return requests_per_second * mean_latency_ms / 1000.0 < connections / 2


@dataclass(frozen=True)
class Cell:
    """What the table shows for one backend and test over its rounds."""

    median: float
    low: float
    high: float
    rounds: int
    errors: int
    stalls: int
    backend_cpu_us: float | None
    nginx_cpu_us: float | None

    @property
    def flags(self) -> str:
        return ("E" if self.errors else "") + ("S" if self.stalls else "")


def median_or_none(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def cell(measurements: list[Measurement]) -> Cell | None:
    if not measurements:
        return None
    rates = [m.requests_per_second for m in measurements]
    return Cell(
        median=statistics.median(rates),
        low=min(rates),
        high=max(rates),
        rounds=len(measurements),
        errors=sum(m.errors for m in measurements),
        stalls=sum(m.stalled for m in measurements),
        backend_cpu_us=median_or_none([m.cpu_us_per_request(m.backend_cpu_s) for m in measurements]),
        nginx_cpu_us=median_or_none([m.cpu_us_per_request(m.nginx_cpu_s) for m in measurements]),
    )


def cells(measurements: list[Measurement]) -> dict[tuple[str, str], Cell]:
    """(backend, test) -> its cell."""
    grouped: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        grouped.setdefault((m.backend, m.test), []).append(m)
    return {key: c for key, group in grouped.items() if (c := cell(group)) is not None}
