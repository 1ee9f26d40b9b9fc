"""``--reload`` (development): a graceful reload whenever a watched file changes.

The ``watchfiles`` library (the ``reload`` extra) watches the ``--reload-dir``
directories (default: the current one) with the operating system's notifications. A
change to a Python file, or to a file whose name matches a ``--reload-include`` glob,
makes a thread of the supervisor send the supervisor SIGHUP: the same graceful reload
an operator asks for. ``--reload-exclude`` globs win over both, and watchfiles' own
ignores (``.git``, ``__pycache__``, ``.venv``, editor swap files) hold too.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import UserError

log = logging.getLogger("fcgibridge.supervisor")


class ReloadFilter:
    """Which changed paths reload: ``*.py`` and the include globs, minus the exclude globs."""

    def __init__(self, roots: Sequence[Path], include: Sequence[str], exclude: Sequence[str],
                 base: Any) -> None:
        self.roots = [str(root) for root in roots]
        self.include = ("*.py", *include)
        self.exclude = tuple(exclude)
        self.base = base  # watchfiles' DefaultFilter: its ignored directories and names

    def __call__(self, change: Any, path: str) -> bool:
        if not self.base(change, path):
            return False
        name = os.path.basename(path)
        if self.exclude and any(fnmatch.fnmatch(item, glob) for item in self._names(path) for glob in self.exclude):
            return False
        return any(fnmatch.fnmatch(name, glob) for glob in self.include)

    def _names(self, path: str) -> list[str]:
        """What an exclude glob is matched against: the path's parts, and the path below its root."""
        names = [part for part in path.split(os.sep) if part]
        below = self.below_root(path)
        if below is not None:
            names.append(below)
        return names

    def below_root(self, path: str) -> str | None:
        """*path* relative to the watched directory holding it; None if none does."""
        for root in self.roots:
            if path.startswith(root + os.sep):
                return os.path.relpath(path, root)
        return None


def reload_roots(config: Config) -> list[Path]:
    """The directories --reload watches: the --reload-dir ones, else the current one."""
    return [Path(d) for d in config.reload_dir] or [Path.cwd()]


def check_reload(roots: Sequence[Path]) -> None:
    """What --reload needs before it can watch *roots*: watchfiles, and each directory
    there (a :class:`UserError` otherwise; ``--check-config`` asks too)."""
    if importlib.util.find_spec("watchfiles") is None:
        raise UserError("--reload needs the watchfiles package: pip install 'fcgibridge[reload]'")
    for root in roots:
        if not root.is_dir():
            raise UserError(f"--reload-dir {root}: no such directory")


class Reloader:
    def __init__(self, roots: Sequence[Path], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        check_reload(roots)
        import watchfiles

        self.roots = [root.resolve() for root in roots]
        self.filter = ReloadFilter(self.roots, include, exclude, watchfiles.DefaultFilter())
        self.stop_event = threading.Event()
        self._watchfiles = watchfiles
        self.thread = threading.Thread(target=self._run, name="fcgibridge-reloader", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        for changes in self._watchfiles.watch(*self.roots, watch_filter=self.filter,
                                              stop_event=self.stop_event, raise_interrupt=False):
            names = sorted({self.filter.below_root(path) or path for _, path in changes})
            log.info("--reload: %s changed; reloading", ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
            os.kill(os.getpid(), signal.SIGHUP)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
