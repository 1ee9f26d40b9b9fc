"""fcgibridge: a FastCGI server, client and protocol core for Python."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AcceptApp", "__version__", "build"]

if TYPE_CHECKING:
    from .accept import AcceptApp


def build() -> str:
    """``"compiled"`` when the protocol core and the serving path run compiled (mypyc,
    see setup.py), ``"pure Python"`` when they run from their source."""
    from .protocol import records

    return "pure Python" if records.__file__.endswith(".py") else "compiled"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``import fcgibridge.protocol`` loads the protocol core only.
    if name == "AcceptApp":
        from .accept import AcceptApp

        return AcceptApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
