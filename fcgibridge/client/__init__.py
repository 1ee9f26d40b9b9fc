"""FastCGI clients: talk to PHP-FPM, another fcgibridge, or any FastCGI application.

:class:`FastCGIClient` blocks, :class:`AsyncFastCGIClient` is for asyncio; both have the
same surface and drive the same protocol state (:mod:`fcgibridge.client._base`), only
their I/O differs. ``fcgibridge request`` is :func:`main_request`, ``fcgibridge bench``
:func:`main_bench`.

    >>> client = FastCGIClient("unix:/run/php/php8.2-fpm.sock", root="/var/www/html")
    >>> response = client.request("GET", "/index.php?page=1")
    >>> response.status, response.headers.get("content-type"), response.body
"""

from typing import Any

from ._async import AsyncFastCGIClient, AsyncStreamingResponse
from ._base import (
    CantMultiplex,
    ConnectError,
    ConnectionClosed,
    FastCGIError,
    Headers,
    Overloaded,
    ProtocolFailure,
    RequestRefused,
    RequestTimeout,
    Response,
    Timeout,
    UnknownRole,
    build_params,
    parse_address,
)
from ._cli import main_request
from ._sync import FastCGIClient, StreamingResponse


def main_bench(args: Any) -> int:
    """``fcgibridge bench`` (:mod:`fcgibridge.client._bench`, imported only when it runs:
    multiprocessing and the rest are no cost to the clients)."""
    from ._bench import main_bench as run

    return run(args)


__all__ = [
    "AsyncFastCGIClient",
    "AsyncStreamingResponse",
    "CantMultiplex",
    "ConnectError",
    "ConnectionClosed",
    "FastCGIClient",
    "FastCGIError",
    "Headers",
    "Overloaded",
    "ProtocolFailure",
    "RequestRefused",
    "RequestTimeout",
    "Response",
    "StreamingResponse",
    "Timeout",
    "UnknownRole",
    "build_params",
    "main_bench",
    "main_request",
    "parse_address",
]
