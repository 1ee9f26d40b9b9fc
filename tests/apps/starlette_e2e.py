"""A Starlette app for the end-to-end tests: ``fcgibridge tests.apps.starlette_e2e:app``."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "Hello from Starlette"}


async def hello(request: Request) -> Response:
    return PlainTextResponse(request.state.greeting)


async def echo(request: Request) -> Response:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.stream():
        digest.update(chunk)
        length += len(chunk)
    return JSONResponse({"length": length, "sha256": digest.hexdigest()})


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"], "q": request.query_params.get("q"),
                         "root_path": request.scope["root_path"], "url": str(request.url)})


async def stream(request: Request) -> Response:
    count = int(request.query_params.get("n", "10"))

    async def lines() -> AsyncIterator[bytes]:
        for i in range(count):
            yield f"line {i}\n".encode()

    return StreamingResponse(lines(), media_type="text/plain", headers={"X-Accel-Buffering": "no"})


app = Starlette(lifespan=lifespan, routes=[
    Route("/hello", hello),
    Route("/echo", echo, methods=["POST"]),
    Route("/items/{id:int}", item),
    Route("/stream", stream),
])
