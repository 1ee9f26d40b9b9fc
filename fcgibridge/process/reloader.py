"""``--reload`` (development): a graceful reload whenever a Python file changes.

The ``watchfiles`` library (the ``reload`` extra) watches the current directory with
the operating system's notifications; on a change a thread of the supervisor sends the
supervisor SIGHUP, the same graceful reload an operator asks for.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("fcgibridge.supervisor")


class Reloader:
    def __init__(self, root: Path) -> None:
        try:
            import watchfiles
        except ImportError:
            raise UserError("--reload needs the watchfiles package: pip install 'fcgibridge[reload]'") from None
        self.root = root
        self.stop_event = threading.Event()
        self._watchfiles = watchfiles
        self.thread = threading.Thread(target=self._run, name="fcgibridge-reloader", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        watchfiles = self._watchfiles
        for changes in watchfiles.watch(self.root, watch_filter=watchfiles.PythonFilter(),
                                        stop_event=self.stop_event, raise_interrupt=False):
            names = sorted({os.path.relpath(path, self.root) for _, path in changes})
            log.info("--reload: %s changed; reloading", ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
            os.kill(os.getpid(), signal.SIGHUP)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
