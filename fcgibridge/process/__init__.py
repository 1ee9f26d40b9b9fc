"""Process management: bind the listeners, fork and supervise the workers, own the signals,
the scoreboard, the status page, the access log, the time limits and the reloads.

Each worker runs one event loop serving the listeners with :mod:`fcgibridge.server`.
"""

from __future__ import annotations

from .run import run

__all__ = ["run"]
