"""What an app does around serving, as the worker sees it: one shape for the ASGI lifespan
and the accept-style ``start``/``restart``/``stop`` hooks, so the worker special-cases no
app flavour."""

from __future__ import annotations

from typing import Protocol


class Lifecycle(Protocol):
    """The app's part in a worker's life. Every method runs on the worker's event loop."""

    #: SIGHUP makes :meth:`restart` reload the app in place (else HUP asks for a new worker).
    restarts: bool
    #: SIGTERM asks :meth:`stop` first, which may veto the stop.
    asks_to_stop: bool

    async def startup(self) -> int:
        """Before serving; a non-zero exit code ends the worker with it."""

    async def restart(self) -> None:
        """SIGHUP, between requests (only called when :attr:`restarts`)."""

    async def stop(self) -> bool:
        """SIGTERM (only called when :attr:`asks_to_stop`): False vetoes the stop."""

    async def shutdown(self) -> None:
        """After the last request of a stopping worker."""


class NoLifecycle:
    """An app with nothing to do around serving (a plain WSGI app)."""

    restarts = False
    asks_to_stop = False

    async def startup(self) -> int:
        return 0

    async def restart(self) -> None:
        return None

    async def stop(self) -> bool:
        return True

    async def shutdown(self) -> None:
        return None
