"""The Markdown report and the JSON file of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends import Backend
from harness.loads import Load
from harness.nginx import Upstream
from harness.stats import Cell, Measurement, cells
from harness.targets import verdict_lines


@dataclass
class Run:
    """Everything one invocation produced."""

    command: str  # as typed (bash bench/run ...)
    python_command: str  # what ran (python bench/run.py ...)
    started: str
    mode: str  # "nginx" or "direct"
    setup: str  # how load was applied, in words
    machine: dict[str, str]
    versions: dict[str, str]
    backends: list[Backend]
    loads: list[Load]
    measurements: list[Measurement] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # backend -> why it has no numbers
    skipped: dict[str, str] = field(default_factory=dict)  # "backend/test" -> why it was not run
    note: str = ""
    finished: str = ""
    interrupted: bool = False


def rate_text(c: Cell) -> str:
    spread = f" ({c.low:,.0f}-{c.high:,.0f})" if c.rounds > 1 else ""
    flags = f" **{c.flags}**" if c.flags else ""
    return f"{c.median:,.0f}{spread}{flags}"


def cpu_text(c: Cell, *, with_nginx: bool) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    return f"{number(c.backend_cpu_us)} + {number(c.nginx_cpu_us)}" if with_nginx else number(c.backend_cpu_us)


def table(run: Run) -> list[str]:
    with_nginx = run.mode == "nginx"
    cpu_head = "CPU µs/req (backend + nginx)" if with_nginx else "server CPU µs/req"
    head = ["backend"]
    for load in run.loads:
        head += [f"{load.title} req/s", cpu_head]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    by_cell = cells(run.measurements)
    for backend in run.backends:
        name = f"**{backend.name}**" if backend.is_fcgibridge else backend.name
        row = [name]
        for load in run.loads:
            c = by_cell.get((backend.name, load.name))
            why = run.failures.get(backend.name) or run.skipped.get(f"{backend.name}/{load.name}")
            row += [rate_text(c), cpu_text(c, with_nginx=with_nginx)] if c else ["failed" if why else "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def header(run: Run) -> list[str]:
    machine = run.machine
    versions = ", ".join(f"{name} {version}" for name, version in run.versions.items())
    lines = [f"Command: `{run.command}`", ""]
    if run.note:
        lines += [f"**{run.note}**", ""]
    return [
        *lines,
        f"- ran: `{run.python_command}`; started {run.started}, finished {run.finished or '?'}",
        f"- machine: {machine['cpu']}, {machine['cores']} cores; {machine['system']}",
        f"- versions: {versions}",
        f"- load: {run.setup}",
        *filter(None, [other_load(run)]),
    ]


def reached_by(run: Run, backend: Backend) -> str:
    if run.mode == "nginx":
        return backend.upstream.value
    if backend.speaks_http:
        return "wrk on 127.0.0.1"
    fresh = " --no-keep-alive" if backend.upstream is Upstream.FASTCGI_CLOSE else ""
    return f"fcgibridge bench{fresh} on its unix socket"


def rows(run: Run) -> list[str]:
    """What each row is, and how the load reaches it."""
    return [f"- `{b.name}`: {b.summary}; {reached_by(run, b)}" for b in run.backends]


def legend(run: Run) -> list[str]:
    lines = ["req/s: median over the rounds (min-max in brackets). "
             "**E**: a round had errors (non-2xx, socket errors or nginx error-log lines); "
             "**S**: a round stalled (req/s x mean latency below half the connections). "
             "CPU µs/req: CPU time (user + system) of the whole process tree over the measured window, "
             "divided by the requests served; median over the rounds."]
    if run.mode == "direct":
        lines.append("Direct mode: FastCGI rows are driven by `fcgibridge bench`, HTTP rows by wrk; their req/s "
                     "are not comparable with each other (different clients), their server CPU per request is.")
    return lines


def other_load(run: Run) -> str:
    """How busy the rest of the machine was while we measured: a run to redo when this is high."""
    shares = [(share, m) for m in run.measurements if (share := m.other_cpu_share) is not None]
    if not shares:
        return ""
    values = sorted(share for share, _ in shares)
    top, worst = max(shares, key=lambda pair: pair[0])
    return (f"- other load: processes outside the measured ones (and the kernel's own threads) used a median of "
            f"{values[len(values) // 2]:.2f} cores during the measured windows, at most {top:.2f} "
            f"({worst.backend} / {worst.test} / round {worst.round})")


def flagged(run: Run) -> list[str]:
    lines = []
    for m in run.measurements:
        problems = []
        if m.non_2xx:
            problems.append(f"{m.non_2xx} non-2xx")
        problems += [f"{count} {kind} errors" for kind, count in m.socket_errors.items() if count]
        if m.nginx_errors:
            problems.append(f"{len(m.nginx_errors)} nginx error-log lines, first: `{m.nginx_errors[0][:160]}`")
        if m.stalled:
            mean = m.latency_ms.get("mean", 0.0)
            problems.append(f"stalled: {m.requests_per_second:,.0f} req/s x {mean:.2f} ms = "
                            f"{m.requests_per_second * mean / 1000:.1f} in flight of {m.connections}")
        if problems:
            lines.append(f"- {m.backend} / {m.test} / round {m.round}: " + "; ".join(problems))
    return lines


def markdown(run: Run, *, title: str = "fcgibridge benchmark") -> str:
    by_cell = cells(run.measurements)
    lines = [f"# {title}", "", *header(run), "", *table(run), "", *legend(run), "", "Rows:", "", *rows(run)]
    if run.mode == "nginx" and (targets := verdict_lines(by_cell)):
        lines += ["", "Targets (from the medians above):", "", *targets]
    if problems := flagged(run):
        lines += ["", "Flagged measurements:", "", *problems]
    notes = [f"- {name}: {why}" for name, why in {**run.failures, **run.skipped}.items()]
    if notes:
        lines += ["", "Not measured:", "", *notes]
    if run.interrupted:
        lines += ["", "INTERRUPTED: the run stopped early; rows miss rounds or were not run."]
    return "\n".join(lines) + "\n"


def as_json(run: Run) -> dict[str, Any]:
    return {
        "command": run.command,
        "python_command": run.python_command,
        "started": run.started,
        "finished": run.finished,
        "mode": run.mode,
        "setup": run.setup,
        "note": run.note,
        "machine": run.machine,
        "versions": run.versions,
        "backends": {b.name: {"interface": b.interface, "summary": b.summary, "upstream": b.upstream.value}
                     for b in run.backends},
        "tests": {load.name: {"title": load.title, "method": load.method, "path": load.path,
                              "body_bytes": load.body_size, "wrk_script": load.lua_script()} for load in run.loads},
        "failures": run.failures,
        "skipped": run.skipped,
        "interrupted": run.interrupted,
        "targets": verdict_lines(cells(run.measurements)) if run.mode == "nginx" else [],
        "measurements": [m.as_json() for m in run.measurements],
    }


def write_json(run: Run, path: Path) -> None:
    path.write_text(json.dumps(as_json(run), indent=1) + "\n")
