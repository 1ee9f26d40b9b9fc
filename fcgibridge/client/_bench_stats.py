"""What ``fcgibridge bench`` counts, how the counts of several processes are merged, and
how they are reported.

Latencies go into a :class:`Histogram` of buckets about 0.1 % wide instead of a list of
samples: memory stays bounded however long a run is, and the histograms of several
processes merge by adding their counts, so the percentiles of a merged run are those of
all its requests (percentiles are never averaged).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Why a request failed; every failed request counts under exactly one of these.
#: ``connect``: no connection (refused, no such socket, the connect timed out);
#: ``closed``: the server closed or reset the connection before END_REQUEST;
#: ``timeout``: no END_REQUEST within ``--timeout``; ``protocol``: bytes that are not
#: FastCGI, or a response that is not CGI; ``overloaded``, ``cant_mpx_conn``,
#: ``unknown_role``: END_REQUEST with that protocol status instead of REQUEST_COMPLETE;
#: ``status``: a response status other than 2xx and 3xx (each status is counted in
#: ``statuses``); ``app_status``: a 2xx/3xx response whose END_REQUEST has a nonzero
#: appStatus.
ERROR_KINDS = ("connect", "closed", "timeout", "protocol", "overloaded", "cant_mpx_conn", "unknown_role",
               "status", "app_status")

#: Bits of precision per power of two: a bucket is at most 1/1024 of its value wide.
_SUB_BITS = 10
_HALF = 1 << (_SUB_BITS - 1)


def bucket_of(micros: int) -> int:
    """The histogram bucket of a latency in whole microseconds (exact below 1024 µs)."""
    shift = micros.bit_length() - _SUB_BITS
    if shift <= 0:
        return micros
    return (shift << (_SUB_BITS - 1)) + (micros >> shift)


def bucket_range(index: int) -> tuple[int, int]:
    """The lowest latency of a bucket and its width, in microseconds."""
    if index < 2 * _HALF:
        return index, 1
    shift = index // _HALF - 1
    return (index - shift * _HALF) << shift, 1 << shift


class Histogram:
    """Latencies in microseconds: counts per bucket, with the exact count, sum and maximum."""

    __slots__ = ("count", "counts", "maximum", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.maximum = 0

    def add(self, micros: int) -> None:
        index = bucket_of(micros)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total += micros
        if micros > self.maximum:
            self.maximum = micros

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, fraction: float) -> float:
        """The latency (µs) that ``fraction`` of the requests took at most: the
        nearest-rank value, as the middle of its bucket (never above the maximum)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, width = bucket_range(index)
                return min(low + (width - 1) / 2, float(self.maximum))
        return float(self.maximum)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass
class Tally:
    """The counts of one measured run, or of several merged."""

    #: Requests that ended, well or not (those still in flight when a ``-d`` run ended
    #: are not counted).
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    body_bytes: int = 0
    total_bytes: int = 0
    latency: Histogram = field(default_factory=Histogram)
    #: Seconds from the start of the measurement to its end.
    duration: float = 0.0
    #: What went wrong the first time, for some error kinds (for a person, not in the JSON).
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: Tally) -> None:
        """Add the counts of a run made at the same time (another process)."""
        self.requests += other.requests
        self.errors.update(other.errors)
        self.statuses.update(other.statuses)
        self.body_bytes += other.body_bytes
        self.total_bytes += other.total_bytes
        self.latency.merge(other.latency)
        self.duration = max(self.duration, other.duration)
        for kind, note in other.notes.items():
            self.notes.setdefault(kind, note)


@dataclass(frozen=True)
class RunShape:
    """How the load was made, as the report states it."""

    concurrency: int
    processes: int
    keep_alive: bool
    multiplex: int


def report(tally: Tally, shape: RunShape) -> dict[str, Any]:
    """The JSON object of ``--json``: these keys, and no others."""
    latency = tally.latency
    return {
        "requests": tally.requests,
        "duration": round(tally.duration, 6),
        "requests_per_second": round(tally.requests / tally.duration, 3) if tally.duration > 0 else 0.0,
        "latency_ms": {
            "p50": _ms(latency.percentile(0.50)),
            "p90": _ms(latency.percentile(0.90)),
            "p99": _ms(latency.percentile(0.99)),
            "max": _ms(latency.maximum),
            "mean": _ms(latency.mean),
        },
        "errors": {kind: tally.errors.get(kind, 0) for kind in ERROR_KINDS},
        "statuses": {str(status): count for status, count in sorted(tally.statuses.items())},
        "bytes": {"body": tally.body_bytes, "total": tally.total_bytes},
        "concurrency": shape.concurrency,
        "processes": shape.processes,
        "keep_alive": shape.keep_alive,
        "multiplex": shape.multiplex,
    }


def _ms(micros: float) -> float:
    return round(micros / 1000, 3)


def summary(tally: Tally, shape: RunShape, target: str) -> str:
    """The report for a person: a few aligned lines."""
    data = report(tally, shape)
    latency = data["latency_ms"]
    connections = "new connection per request" if not shape.keep_alive else "keep-alive"
    if shape.multiplex > 1:
        connections += f", {shape.multiplex} requests multiplexed per connection"
    errors = "; ".join(_error(kind, count, tally.notes.get(kind)) for kind, count in data["errors"].items()
                       if count) or "none"
    latencies = "  ".join(f"{name} {latency[name]:.3f}" for name in ("p50", "p90", "p99", "max", "mean"))
    statuses = ", ".join(f"{status}: {count}" for status, count in data["statuses"].items()) or "none"
    lines = [
        f"{target}: {shape.concurrency} connections ({connections}), "
        f"{shape.processes} process{'es' if shape.processes > 1 else ''}",
        f"  requests      {data['requests']} in {data['duration']:.2f} s, {data['requests_per_second']:.1f} req/s",
        f"  latency (ms)  {latencies if tally.latency.count else 'no answers'}",
        f"  statuses      {statuses}",
        f"  errors        {errors}",
        f"  received      {_size(tally.body_bytes)} of bodies, {_size(tally.total_bytes)} in all",
    ]
    return "\n".join(lines)


def _error(kind: str, count: int, note: str | None) -> str:
    return f"{kind} {count}" + (f" (first: {note})" if note else "")


def _size(count: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
