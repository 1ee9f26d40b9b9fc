"""Exceptions of the protocol core.

Each says whose fault it is, as h11 does: :class:`LocalProtocolError` means our own
caller misused the API; :class:`RemoteProtocolError` means the peer sent bytes that are
not FastCGI. Both carry the HTTP status a front end would answer with.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`fcgibridge.protocol`."""

    http_status: int = 502

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        if http_status is not None:
            self.http_status = http_status


class LocalProtocolError(ProtocolError):
    """Our side tried something FastCGI does not allow (a bug in the caller)."""

    http_status = 500


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection cannot be trusted any more."""

    http_status = 502
