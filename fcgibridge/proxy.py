"""Mount a FastCGI application (say a PHP app under PHP-FPM) inside a Python web app.

:class:`FastCGIProxy` is an ASGI app and :class:`WSGIFastCGIProxy` a WSGI app; each
forwards every HTTP request to one FastCGI backend with the package's client, the
request body and the response body streamed both ways. Which script runs is decided as
nginx does: a fixed front controller (``script_filename="index.php"``), or the path
split at the script (``split_path_info``, nginx's ``fastcgi_split_path_info``).
A backend that cannot be reached or breaks the protocol answers 502, one that is too
slow 504; each logs one line on the ``fcgibridge.proxy`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from .cgi_params import HOP_BY_HOP, PHP_SPLIT, ParamsMapper, aspool, spool
from .client import AsyncFastCGIClient, FastCGIClient, FastCGIError, RequestTimeout, StreamingResponse, Timeout

log = logging.getLogger("fcgibridge.proxy")

def _error_status(exc: FastCGIError) -> int:
    return 504 if isinstance(exc, RequestTimeout) else 502


def _response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]


class FastCGIProxy:
    """An ASGI app forwarding each HTTP request to the FastCGI server at ``address``.

    ``document_root`` is where the backend finds scripts; ``script_filename`` fixes the
    script (relative to the root, or absolute) for a front-controller app; otherwise
    the path is split by ``split_path_info`` (default: at ``.php``) and a path ending in
    ``/`` gets ``index``. ``params`` are added to (and override) every request's CGI
    variables. Connections are kept alive and pooled; ``timeout`` is as for the client.
    """

    def __init__(self, address: str, *, document_root: str | None = None, script_filename: str | None = None,
                 split_path_info: str | None = None, index: str = "index.php",
                 params: Mapping[str, str] | None = None, timeout: float | Timeout | None = 30.0,
                 pool_size: int = 16) -> None:
        self.mapper = ParamsMapper(document_root, script_filename, split_path_info, index, params)
        self.client = AsyncFastCGIClient(address, timeout=timeout, keep_alive=True, pool_size=pool_size)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"FastCGIProxy serves HTTP, not {scope['type']}")
        mount = scope.get("root_path", "")
        path = scope["path"]
        if mount and path.startswith(mount):  # Starlette keeps the full path in a Mount
            path = path[len(mount):]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        query = scope.get("query_string", b"").decode("latin-1")
        params = self.mapper.build(
            method=scope["method"], mount=mount, path=path or "/", query=query, headers=headers,
            remote=scope.get("client"), server=scope.get("server"), https=scope.get("scheme") == "https")
        body: Any = self._body(receive)
        names = {name.lower() for name, _ in headers}
        if "content-length" not in names and "transfer-encoding" in names:
            body, length = await aspool(self._body(receive))
            params["CONTENT_LENGTH"] = str(length)
        try:
            await self._forward(scope, params, body, send)
        finally:
            if not hasattr(body, "__aiter__"):
                body.close()

    async def _forward(self, scope: dict[str, Any], params: dict[str, str], body: Any, send: Any) -> None:
        started = False
        try:
            async with self.client.stream(scope["method"], params["REQUEST_URI"], params=params,
                                          body=body) as response:
                await send({"type": "http.response.start", "status": response.status,
                            "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                        for k, v in _response_headers(response.headers)]})
                started = True
                async for chunk in response.aiter_bytes():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if response.stderr:
                    log.warning("%s %s: backend stderr: %s", scope["method"], params["REQUEST_URI"],
                                response.stderr.decode("utf-8", "replace").strip())
            await send({"type": "http.response.body", "body": b""})
        except FastCGIError as exc:
            status = _error_status(exc)
            log.error("%s %s -> %d: %s", scope["method"], params["REQUEST_URI"], status, exc)
            if started:
                return  # too late for an error page: the response ends short
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body",
                        "body": b"Gateway Timeout\n" if status == 504 else b"Bad Gateway\n"})

    @staticmethod
    async def _body(receive: Any) -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body"):
                return

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Close the pooled backend connections."""
        await self.client.aclose()


class WSGIFastCGIProxy:
    """The WSGI twin of :class:`FastCGIProxy` (same options), for Flask, Django and co."""

    def __init__(self, address: str, *, document_root: str | None = None, script_filename: str | None = None,
                 split_path_info: str | None = None, index: str = "index.php",
                 params: Mapping[str, str] | None = None, timeout: float | Timeout | None = 30.0,
                 pool_size: int = 16) -> None:
        self.mapper = ParamsMapper(document_root, script_filename, split_path_info, index, params)
        self.client = FastCGIClient(address, timeout=timeout, keep_alive=True, pool_size=pool_size)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        headers = [(key[5:].replace("_", "-").title(), value) for key, value in environ.items()
                   if key.startswith("HTTP_")]
        for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
            if environ.get(key):
                headers.append((name, environ[key]))
        remote = (environ["REMOTE_ADDR"], int(environ.get("REMOTE_PORT") or 0)) if environ.get("REMOTE_ADDR") else None
        server = (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT") or 0) or None)
        params = self.mapper.build(
            method=environ["REQUEST_METHOD"], mount=environ.get("SCRIPT_NAME", ""),
            path=environ.get("PATH_INFO", "") or "/", query=environ.get("QUERY_STRING", ""), headers=headers,
            remote=remote, server=server, https=environ.get("wsgi.url_scheme") == "https")
        params["SERVER_NAME"] = environ.get("SERVER_NAME", params["SERVER_NAME"])
        return forward_wsgi(self.client, environ, start_response, params)

    def close(self) -> None:
        """Close the pooled backend connections."""
        self.client.close()


def forward_wsgi(client: FastCGIClient, environ: dict[str, Any], start_response: Any,
                 params: dict[str, str]) -> Iterable[bytes]:
    """The WSGI request in *environ* sent to *client*'s backend with the CGI variables
    *params* (``REQUEST_METHOD`` and ``REQUEST_URI`` among them), its body streamed from
    ``wsgi.input``; the WSGI response, or a 502/504 page when the backend fails. Shared by
    :class:`WSGIFastCGIProxy` and ``fcgibridge.compat.flup.FCGIApp``, which differ only in
    the variables they send."""
    body: Any = _wsgi_body(environ)
    spooled = None
    if not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
        spooled, length = spool(_wsgi_body(environ))  # closed by _Body
        body = spooled
        params["CONTENT_LENGTH"] = str(length)
    stream = client.stream(params["REQUEST_METHOD"], params["REQUEST_URI"], params=params, body=body)
    try:
        response = stream.__enter__()
    except FastCGIError as exc:
        if spooled is not None:
            spooled.close()
        status = _error_status(exc)
        log.error("%s %s -> %d: %s", params["REQUEST_METHOD"], params["REQUEST_URI"], status, exc)
        start_response("504 Gateway Timeout" if status == 504 else "502 Bad Gateway",
                       [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Gateway Timeout\n" if status == 504 else b"Bad Gateway\n"]
    start_response(f"{response.status} {response.reason}".rstrip(), _response_headers(response.headers))
    return _Body(stream, response, f"{params['REQUEST_METHOD']} {params['REQUEST_URI']}", spooled)


def _wsgi_body(environ: dict[str, Any]) -> Iterator[bytes]:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    left = int(length) if length and length.isdigit() else None
    if left is None and not environ.get("wsgi.input_terminated"):
        return  # no length and no end of input: reading could wait forever
    while left is None or left > 0:
        chunk = stream.read(65536 if left is None else min(65536, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


class _Body:
    """The response body iterator; closing it (the WSGI server does) ends the request."""

    def __init__(self, stream: Any, response: StreamingResponse, request: str, spool: Any) -> None:
        self._stream = stream
        self._response = response
        self._request = request
        self._spool = spool

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes()
        except FastCGIError as exc:
            log.error("%s: the response broke off: %s", self._request, exc)

    def close(self) -> None:
        self._stream.__exit__(None, None, None)
        if self._spool is not None:
            self._spool.close()
        if self._response.stderr:
            log.warning("%s: backend stderr: %s", self._request,
                        self._response.stderr.decode("utf-8", "replace").strip())


__all__ = ["PHP_SPLIT", "FastCGIProxy", "WSGIFastCGIProxy", "forward_wsgi"]
