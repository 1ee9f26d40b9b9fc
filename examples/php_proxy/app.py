"""A Starlette app with a PHP application mounted at /php, through PHP-FPM.

Python answers ``/``; everything under ``/php`` goes to ``php/index.php`` (a front
controller) over FastCGI, request and response bodies streamed. Run it with::

    PHP_FPM=unix:/run/php/php8.2-fpm.sock uvicorn --factory examples.php_proxy.app:create_app

Environment: ``PHP_FPM`` (the FastCGI address, default ``127.0.0.1:9000``), ``PHP_ROOT``
(the PHP document root, default the ``php`` folder next to this file), ``PHP_TIMEOUT``
(seconds for connecting and each read, default 30).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from fcgibridge.proxy import FastCGIProxy

PHP_ROOT = Path(__file__).resolve().parent / "php"


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello from Starlette; the PHP app lives under /php/\n")


def create_app() -> Starlette:
    php = FastCGIProxy(
        os.environ.get("PHP_FPM", "127.0.0.1:9000"),
        document_root=os.environ.get("PHP_ROOT", str(PHP_ROOT)),
        script_filename="index.php",
        timeout=float(os.environ.get("PHP_TIMEOUT", "30")),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await php.aclose()  # the kept-alive PHP-FPM connections

    return Starlette(routes=[Route("/", home), Mount("/php", app=php)], lifespan=lifespan)
