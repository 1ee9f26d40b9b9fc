"""CPU time of a process tree, read from /proc.

A process's CPU time here is utime + stime + cutime + cstime of ``/proc/PID/stat``: its own
(all its threads) plus that of its children it has waited for, so a worker that exits and is
reaped inside a measured window is still counted (by its parent). A tree is a process and
all its descendants by parent pid, found by reading every ``/proc/*/stat`` once.

To tell how busy the rest of the machine was, the whole machine's busy time comes from
``/proc/stat`` and wrk's (a child of the harness) from ``getrusage(RUSAGE_CHILDREN)``.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime


def parse_stat(text: str) -> ProcStat:
    """One ``/proc/PID/stat`` line. The command name is in parentheses and may hold spaces."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # fields[0] is the state (field 3 of proc(5)); ppid is field 4, utime..cstime are 14..17.
    ppid = int(fields[1])
    ticks = sum(int(value) for value in fields[11:15])
    return ProcStat(pid, ppid, ticks)


def read_all(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's stat now; processes that exit while being read are left out."""
    stats = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        stats[stat.pid] = stat
    return stats


def tree_ticks(root: int, stats: dict[int, ProcStat]) -> int:
    """CPU ticks of ``root`` and all its descendants in ``stats`` (0 when root is gone)."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    total = 0
    todo = [root] if root in stats else []
    while todo:
        pid = todo.pop()
        total += stats[pid].ticks
        todo.extend(children.get(pid, []))
    return total


def cpu_seconds(roots: list[int]) -> list[float]:
    """CPU seconds used so far by each root's tree, from one reading of /proc."""
    stats = read_all()
    return [tree_ticks(root, stats) / TICKS_PER_SECOND for root in roots]


def parse_machine_stat(text: str) -> tuple[int, int]:
    """(busy, total) ticks of all CPUs from the ``cpu`` line of /proc/stat (idle and iowait are not busy)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(value) for value in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    raise ValueError("no cpu line in /proc/stat")


def machine_busy_seconds(proc: Path = PROC) -> float:
    """CPU seconds all processes on the machine (and the kernel) have used since boot."""
    busy, _ = parse_machine_stat((proc / "stat").read_text())
    return busy / TICKS_PER_SECOND


def children_seconds() -> float:
    """CPU seconds of this process's children that have been waited for (wrk, once it exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Window:
    """The CPU used while the ``with`` block runs: by each root's tree, by the whole machine, and by
    this process's children that exited and were waited for inside it (the load generator)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.trees: list[float] = []
        self.machine = 0.0
        self.load = 0.0

    def __enter__(self) -> Window:
        self._trees, self._machine, self._load = cpu_seconds(self.roots), machine_busy_seconds(), children_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        trees = cpu_seconds(self.roots)
        self.trees = [end - start for start, end in zip(self._trees, trees, strict=True)]
        self.machine = machine_busy_seconds() - self._machine
        self.load = children_seconds() - self._load
