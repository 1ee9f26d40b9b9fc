"""fcgibridge: a FastCGI server, client and protocol core for Python."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AcceptApp", "__version__"]

if TYPE_CHECKING:
    from .accept import AcceptApp


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``import fcgibridge.protocol`` loads the protocol core only.
    if name == "AcceptApp":
        from .accept import AcceptApp

        return AcceptApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
