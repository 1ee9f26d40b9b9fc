"""The project's target ratios, in one place, and their verdicts from a run's medians."""

from __future__ import annotations

from dataclasses import dataclass

from harness.stats import Cell

UVICORN = ("uvicorn-1", "uvicorn-2")
UWSGI = ("uwsgi-1", "uwsgi-2")


@dataclass(frozen=True)
class Target:
    test: str
    row: str  # the fcgibridge row
    peers: tuple[str, ...]  # compared with the best median of these
    factor: float
    words: str  # the target as the report states it

    def verdict(self, cells: dict[tuple[str, str], Cell]) -> str:
        """``MET`` / ``NOT MET`` with the ratio, or why it cannot be judged."""
        mine = cells.get((self.row, self.test))
        theirs = [c for peer in self.peers if (c := cells.get((peer, self.test))) is not None]
        if mine is None or len(theirs) < len(self.peers):
            return "n/a (not all rows measured)"
        best = max(theirs, key=lambda c: c.median)
        ratio = mine.median / best.median
        text = f"{ratio:.2f}x -> {'MET' if ratio >= self.factor else 'NOT MET'}"
        if mine.flags or any(c.flags for c in theirs):
            text += " (a run had errors or stalled)"
        return text


TARGETS = (
    Target("hello", "fcgibridge-asgi-2", UVICORN, 1.0,
           "ASGI /hello, 2 workers >= 1.0x the better of uvicorn 1 and 2 workers"),
    Target("hello", "fcgibridge-asgi-2", ("fcgisgi-asgi",), 1.5, "ASGI /hello, 2 workers >= 1.5x fcgisgi ASGI"),
    Target("hello", "fcgibridge-wsgi-2", UWSGI, 1.0,
           "WSGI default mode /hello, 2 workers >= 1.0x the better of uWSGI 1 and 2 processes"),
    Target("hello", "fcgibridge-wsgi-sync-2", UWSGI, 1.2,
           "WSGI --sync (fastest mode) /hello, 2 workers >= 1.2x the better of uWSGI 1 and 2 processes"),
    Target("64k", "fcgibridge-asgi-2", UVICORN, 1.0, "ASGI 64 KiB response, 2 workers >= the better uvicorn"),
    Target("echo", "fcgibridge-asgi-2", UVICORN, 1.0, "ASGI 64 KiB echo, 2 workers >= the better uvicorn"),
    Target("64k", "fcgibridge-wsgi-2", UWSGI, 1.0, "WSGI 64 KiB response, 2 workers >= the better uWSGI"),
    Target("echo", "fcgibridge-wsgi-2", UWSGI, 1.0, "WSGI 64 KiB echo, 2 workers >= the better uWSGI"),
)


def verdict_lines(cells: dict[tuple[str, str], Cell]) -> list[str]:
    """One line per target whose rows were selected at all."""
    return [f"- {target.words}: {target.verdict(cells)}" for target in TARGETS
            if any((row, target.test) in cells for row in (target.row, *target.peers))]
