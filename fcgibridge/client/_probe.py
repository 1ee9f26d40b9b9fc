"""``fcgibridge probe``: a health check of PHP-FPM pools and fcgibridge servers, over FastCGI.

For a container's HEALTHCHECK or a Kubernetes exec probe, where no web server stands in
front of the pool. Without thresholds it asks the ping path (PHP-FPM's ``ping.path``,
fcgibridge's ``--ping-path``) and wants a 200 with the ping response (``pong`` on both);
with thresholds (``--max``, ``--min``) or ``--status`` it reads the status page as JSON
(``pm.status_path``, ``--status-path`` or ``--status-bind``), tells PHP-FPM's from
fcgibridge's by their keys, and compares the figures under one set of names
(:data:`METRICS`).

Each address is asked on its own connection, all of them at once; ``unix:`` globs are
expanded first. Exit status 0 when every address is healthy, 1 when any is not (or a
glob matched no socket); the command line's usage errors are its 2.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ._base import FastCGIError, Response, Timeout
from ._sync import FastCGIClient

__all__ = ["METRICS", "Metric", "ProbeOptions", "Result", "Threshold", "expand", "is_glob", "line", "main_probe",
           "probe", "probe_all", "read_status", "threshold"]

#: A status or ping answer larger than this is not a status page: the probe stops reading.
MAX_ANSWER = 4 * 1024 * 1024

#: Addresses asked at the same time, at most.
MAX_PARALLEL = 32


# ------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    """One figure of the status page, by its probe name and its key in each format's JSON
    ("" where that format has no such figure)."""

    name: str
    php_fpm: str
    fcgibridge: str
    meaning: str

    def key(self, fmt: str) -> str:
        """Its key in the JSON of ``fmt`` (:data:`PHP_FPM` or :data:`FCGIBRIDGE`)."""
        return self.php_fpm if fmt == PHP_FPM else self.fcgibridge


#: The two status page formats, as results name them.
PHP_FPM = "PHP-FPM"
FCGIBRIDGE = "fcgibridge"

METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("listen-queue", "listen queue", "listen_queue", "connections waiting to be accepted"),
    Metric("max-listen-queue", "max listen queue", "max_listen_queue", "the longest listen queue since the start"),
    Metric("listen-queue-len", "listen queue len", "listen_queue_len", "the size of the listen queue"),
    Metric("active-processes", "active processes", "active_workers",
           "processes serving a request (the status request's own included)"),
    Metric("idle-processes", "idle processes", "idle_workers", "processes waiting for a request"),
    Metric("total-processes", "total processes", "total_workers", "processes of the pool"),
    Metric("max-active-processes", "max active processes", "max_active_workers",
           "the most processes busy at once since the start"),
    Metric("max-children-reached", "max children reached", "max_children_reached",
           "times the process manager wanted a process past its maximum"),
    Metric("slow-requests", "slow requests", "slow_requests", "requests slower than the slow log's timeout"),
    Metric("accepted-conn", "accepted conn", "accepted_conn", "connections accepted since the start"),
    Metric("start-since", "start since", "start_since", "seconds since the start"),
    Metric("in-flight-requests", "", "in_flight_requests", "requests being served (fcgibridge only)"),
    Metric("refused-requests", "", "refused_requests", "requests answered 503 past --limit-concurrency "
                                                       "(fcgibridge only)"),
)}

#: Other names a threshold may use: short ones, and fcgibridge's own words.
ALIASES = {
    "active": "active-processes",
    "idle": "idle-processes",
    "total": "total-processes",
    "active-workers": "active-processes",
    "idle-workers": "idle-processes",
    "total-workers": "total-processes",
    "max-active-workers": "max-active-processes",
}

#: The keys that tell the two status pages apart.
_PHP_FPM_KEYS = frozenset({"pool", "process manager", "active processes"})
_FCGIBRIDGE_KEYS = frozenset({"process_manager", "active_workers", "workers"})


def metric_name(text: str) -> str:
    """The probe name of a metric written ``listen-queue``, ``listen_queue``, ``Listen Queue``
    or by an alias; a :class:`UserError` naming the known ones when it is none of them."""
    name = "-".join(text.strip().lower().replace("_", " ").replace("-", " ").split())
    name = ALIASES.get(name, name)
    if name not in METRICS:
        known = ", ".join(METRICS)
        raise UserError(f"probe: unknown metric {text!r}; the metrics are {known} "
                        f"(also {', '.join(ALIASES)})")
    return name


@dataclass(frozen=True)
class Threshold:
    """``--max NAME=N`` (``upper``: healthy while the value is at most N) or ``--min NAME=N``
    (healthy while it is at least N)."""

    metric: str
    bound: int
    upper: bool

    def broken(self, metrics: dict[str, int | None], fmt: str) -> str | None:
        """Why the figures break this threshold, or None when they keep it."""
        value = metrics.get(self.metric)
        if value is None:
            return f"{self.metric} not reported by {fmt}"
        if self.upper and value > self.bound:
            return f"{self.metric}={value} > {self.bound}"
        if not self.upper and value < self.bound:
            return f"{self.metric}={value} < {self.bound}"
        return None


def threshold(text: str, *, upper: bool) -> Threshold:
    """A ``NAME=N`` argument of ``--max`` (``upper``) or ``--min``; a :class:`UserError` when malformed."""
    flag = "--max" if upper else "--min"
    name, equals, number = text.partition("=")
    if not equals or not name.strip():
        raise UserError(f"probe: {flag} {text!r} must look like NAME=N, such as {flag} listen-queue=10")
    if not number.strip().isdigit():
        raise UserError(f"probe: {flag} {text!r}: the bound must be a whole number of 0 or more")
    return Threshold(metric_name(name), int(number), upper)


def read_status(page: object) -> tuple[str, dict[str, int | None]]:
    """The format of a status page decoded from JSON (:data:`PHP_FPM` or :data:`FCGIBRIDGE`)
    and its figures under the probe's names (None: the page has the key but no number).
    A :class:`ValueError` when it is neither format."""
    if not isinstance(page, dict):
        raise ValueError("the status page is not a JSON object")
    keys = set(page)
    if keys >= _PHP_FPM_KEYS:
        fmt = PHP_FPM
    elif keys >= _FCGIBRIDGE_KEYS:
        fmt = FCGIBRIDGE
    else:
        shown = ", ".join(sorted(map(str, keys))[:6]) or "none"
        raise ValueError(f"not a PHP-FPM or fcgibridge status page (its keys: {shown})")
    figures: dict[str, int | None] = {}
    for metric in METRICS.values():
        key = metric.key(fmt)
        if key and key in page:
            value = page[key]
            figures[metric.name] = value if isinstance(value, int) and not isinstance(value, bool) else None
    return fmt, figures


# ------------------------------------------------------------------------ addresses


def is_glob(address: str) -> bool:
    """Whether ``address`` is a ``unix:`` glob (``*``, ``?`` or ``[`` in it), expanded by :func:`expand`."""
    return address.startswith("unix:") and any(char in address for char in "*?[")


def _glob_path(address: str) -> str:
    path = address.removeprefix("unix:")
    return path[2:] if path.startswith("//") else path  # unix:///run/x.sock is /run/x.sock


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def expand(addresses: Iterable[str]) -> list[str | Result]:
    """The addresses to ask, in order, each once: a ``unix:`` glob becomes the sockets it
    matches (sorted), or a failed :class:`Result` saying it matched none."""
    out: list[str | Result] = []
    seen: set[str] = set()
    for address in addresses:
        if not is_glob(address):
            found = [address]
        else:
            pattern = _glob_path(address)
            found = [f"unix:{path}" for path in sorted(glob.glob(pattern)) if _is_socket(path)]
            if not found:
                out.append(Result(address, False, "glob", f"no unix socket matches {pattern}"))
                continue
        for one in found:
            if one not in seen:
                seen.add(one)
                out.append(one)
    return out


# ---------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class ProbeOptions:
    """What to ask each address: the ping path (None: no ping), the answer it should give,
    the status path (None: no status page), the thresholds, and the time allowed to
    connect and for the whole check of one address."""

    ping_path: str | None = "/ping"
    ping_response: str = "pong"
    status_path: str | None = None
    thresholds: tuple[Threshold, ...] = ()
    connect_timeout: float = 1.0
    timeout: float = 3.0

    @property
    def check(self) -> str:
        """What is checked: ``ping``, ``status`` or ``ping+status``."""
        return "+".join(name for name, path in (("ping", self.ping_path), ("status", self.status_path)) if path)


@dataclass
class Result:
    """How one address answered: healthy or not, why not, the figures read, the time taken."""

    address: str
    ok: bool
    check: str
    reason: str = ""
    format: str | None = None
    metrics: dict[str, int | None] = field(default_factory=dict)
    elapsed: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"address": self.address, "ok": self.ok, "check": self.check, "reason": self.reason or None,
                "format": self.format, "metrics": self.metrics or None, "elapsed": round(self.elapsed, 6)}


class _Unhealthy(Exception):
    """One check failed; the message is the reason shown."""


def probe(address: str, options: ProbeOptions) -> Result:
    """Check one address: its ping, then its status page, as ``options`` say."""
    result = Result(address, False, options.check)
    started = time.monotonic()
    try:
        with FastCGIClient(address) as client:
            if options.ping_path:
                _check_ping(client, options, started)
            if options.status_path:
                _check_status(client, options, started, result)
        result.ok = True
    except _Unhealthy as exc:
        result.reason = str(exc)
    except (FastCGIError, OSError, ValueError) as exc:
        result.reason = str(exc).removeprefix(f"{address}: ")
    result.elapsed = time.monotonic() - started
    return result


def _get(client: FastCGIClient, path: str, options: ProbeOptions, started: float) -> Response:
    """GET ``path`` with SCRIPT_NAME and SCRIPT_FILENAME set to its path (PHP-FPM matches
    ``ping.path`` and ``pm.status_path`` on SCRIPT_NAME), within what is left of the time."""
    left = round(options.timeout - (time.monotonic() - started), 3)  # shown in a timeout's message
    if left <= 0:
        raise _Unhealthy(f"the check did not finish within {options.timeout} s")
    timeout = Timeout(min(options.connect_timeout, left), left, left)
    script = path.partition("?")[0]
    with client.stream("GET", path, script_filename=script, timeout=timeout) as response:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER:
                raise _Unhealthy(f"{script} answered more than {MAX_ANSWER // (1024 * 1024)} MiB")
    return Response(response.status, response.reason, response.headers, bytes(body))


def _check_ping(client: FastCGIClient, options: ProbeOptions, started: float) -> None:
    assert options.ping_path is not None
    response = _get(client, options.ping_path, options, started)
    if response.status != 200:
        raise _Unhealthy(f"ping {options.ping_path} answered {response.status} {response.reason}".rstrip())
    answer = response.text.strip()
    if answer != options.ping_response.strip():
        raise _Unhealthy(f"ping {options.ping_path} answered {answer[:60]!r}, not {options.ping_response!r}")


def _check_status(client: FastCGIClient, options: ProbeOptions, started: float, result: Result) -> None:
    assert options.status_path is not None
    path = options.status_path + ("&json" if "?" in options.status_path else "?json")
    response = _get(client, path, options, started)
    if response.status != 200:
        raise _Unhealthy(f"status {path} answered {response.status} {response.reason}".rstrip())
    try:
        page = json.loads(response.body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past what Python parses
        raise _Unhealthy(f"status {path}: its answer is not JSON") from None
    try:
        result.format, result.metrics = read_status(page)
    except ValueError as exc:
        raise _Unhealthy(f"status {path}: {exc}") from None
    broken = [why for why in (t.broken(result.metrics, result.format) for t in options.thresholds) if why]
    if broken:
        raise _Unhealthy(", ".join(broken))


def probe_all(addresses: Sequence[str], options: ProbeOptions) -> list[Result]:
    """Every address (globs expanded) checked, at the same time, in the order given."""
    targets = expand(addresses)
    asked = [target for target in targets if isinstance(target, str)]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(asked)))) as pool:
        answers = dict(zip(asked, pool.map(lambda one: probe(one, options), asked), strict=True))
    return [answers[target] if isinstance(target, str) else target for target in targets]


# ---------------------------------------------------------------------- reporting


#: The figures a healthy status line shows when no threshold names any.
_SHOWN = ("listen-queue", "active-processes", "idle-processes", "total-processes")


def line(result: Result, options: ProbeOptions) -> str:
    """``ok ADDR ping 1.2 ms`` / ``ok ADDR status 2.0 ms listen-queue=0 ...`` / ``FAIL ADDR reason``."""
    if not result.ok:
        return f"FAIL {result.address} {result.reason}"
    text = f"ok {result.address} {result.check} {result.elapsed * 1000:.1f} ms"
    if result.format is not None:
        names = dict.fromkeys(t.metric for t in options.thresholds) or dict.fromkeys(_SHOWN)
        figures = " ".join(f"{name}={'-' if result.metrics.get(name) is None else result.metrics[name]}"
                           for name in names if name in result.metrics)
        text += f" {result.format}" + (f" {figures}" if figures else "")
    return text


def main_probe(args: Any) -> int:
    """Run ``fcgibridge probe`` with the namespace of :func:`fcgibridge.cli.probe_parser`:
    a line per address (or with ``--json`` one JSON object) on stdout; 0 when all are
    healthy, 1 otherwise."""
    thresholds = tuple([threshold(text, upper=True) for text in args.max]
                       + [threshold(text, upper=False) for text in args.min])
    wants_status = bool(thresholds) or args.status is not None
    options = ProbeOptions(
        ping_path=args.ping or (None if wants_status else "/ping"),  # a status check pings only when told
        ping_response=args.ping_response,
        status_path=(args.status or "/status") if wants_status else None,
        thresholds=thresholds,
        connect_timeout=args.connect_timeout,
        timeout=args.timeout,
    )
    results = probe_all(args.addr, options)
    healthy = bool(results) and all(result.ok for result in results)
    if args.json:
        json.dump({"ok": healthy, "results": [result.as_json() for result in results]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        for result in results:
            print(line(result, options))
    sys.stdout.flush()
    return 0 if healthy else 1
