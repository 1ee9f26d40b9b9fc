"""CPU time of a process tree, read from /proc.

A process's CPU time here is utime + stime + cutime + cstime of ``/proc/PID/stat``: its own
(all its threads) plus that of its children it has waited for, so a worker that exits and is
reaped inside a measured window is still counted (by its parent). A tree is a process and
all its descendants by parent pid, found by reading every ``/proc/*/stat`` once.
"""

from __future__ import annotations

import os
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
