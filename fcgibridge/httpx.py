"""httpx transports that send each request to a FastCGI application (PHP-FPM, another
fcgibridge, …) instead of over HTTP: test or call a FastCGI app with httpx, no web
server in between.

    >>> transport = FastCGITransport("unix:/run/php/php8.2-fpm.sock", root="/var/www/html")
    >>> client = httpx.Client(transport=transport, base_url="http://app.local")
    >>> client.get("/index.php?x=1").text

The CGI variables are built as nginx's ``fastcgi_params`` would, by the proxy's
:class:`~fcgibridge.cgi_params.ParamsMapper` (same options: ``root`` is the proxy's
``document_root``). Bodies are streamed both ways; connections are kept alive and
pooled by the package's client (:mod:`fcgibridge.client`), and the asyncio transport
multiplexes when the server can. What the application wrote to FCGI_STDERR is in
``response.extensions["fastcgi_stderr"]``. The client's errors are raised as httpx's
(:func:`httpx_error`), each with the original as ``__cause__``.

Needs httpx: ``pip install 'fcgibridge[httpx]'``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from typing import IO, Any, Generic, TypeVar

import httpx

from .cgi_params import ParamsMapper, aspool, spool
from .client import (
    AsyncFastCGIClient,
    AsyncStreamingResponse,
    ConnectError,
    FastCGIClient,
    FastCGIError,
    RequestRefused,
    RequestTimeout,
    StreamingResponse,
    Timeout,
)

#: The extension that holds what the application wrote to FCGI_STDERR (bytes).
STDERR = "fastcgi_stderr"


def httpx_error(exc: FastCGIError, request: httpx.Request | None = None) -> httpx.TransportError:
    """The httpx exception for a client error: a connection that could not be made is
    :class:`httpx.ConnectError`; a timeout :class:`httpx.ConnectTimeout`,
    :class:`httpx.WriteTimeout` or :class:`httpx.ReadTimeout` by what it waited for (a
    whole request over its ``total`` is a read timeout); a refusal (FCGI_OVERLOADED and
    the other END_REQUEST statuses), a closed connection and broken protocol are
    :class:`httpx.RemoteProtocolError`. The message is the client's, which names the
    address."""
    message = str(exc)
    kind: type[httpx.TransportError]
    if isinstance(exc, ConnectError):
        kind = httpx.ConnectError
    elif isinstance(exc, RequestTimeout):
        kind = {"connect": httpx.ConnectTimeout, "send": httpx.WriteTimeout}.get(exc.waiting_for, httpx.ReadTimeout)
    else:
        kind = httpx.RemoteProtocolError
        if isinstance(exc, RequestRefused):
            message += " (the FastCGI application did not run the request)"
    return kind(message, request=request)


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """Client errors raised inside the block come out as httpx's (:func:`httpx_error`)."""
    try:
        yield
    except FastCGIError as exc:
        raise httpx_error(exc, request) from exc


def _params(mapper: ParamsMapper, request: httpx.Request) -> dict[str, str]:
    """The CGI variables of an httpx request: the URL gives the path, the query, the
    server's name and port and HTTPS; the headers (Host among them) become HTTP_*."""
    url = request.url
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
    if "host" not in request.headers:
        headers.append(("Host", url.netloc.decode("ascii")))
    return mapper.build(method=request.method, mount="", path=url.path or "/", query=url.query.decode("ascii"),
                        headers=headers, remote=None, server=("127.0.0.1", url.port),
                        https=url.scheme == "https", request_uri=url.raw_path.decode("ascii"))


def _timeout(request: httpx.Request, default: Timeout) -> Timeout:
    """httpx's connect and read timeouts of this request when it has them (an
    ``httpx.Client`` always gives them), else the transport's; the transport's total."""
    given = request.extensions.get("timeout")
    if not given:
        return default
    return Timeout(given.get("connect", default.connect), given.get("read", default.read), default.total)


def _response(head: StreamingResponse | AsyncStreamingResponse, stream: _SyncBody | _AsyncBody,
              request: httpx.Request) -> httpx.Response:
    """The httpx response for a streamed FastCGI response whose head arrived."""
    response = httpx.Response(
        head.status, request=request, stream=stream,
        headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in head.headers],
        extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason.encode("latin-1"),
                    STDERR: head.stderr})
    stream.extensions = response.extensions  # httpx copied the dict: the stream keeps STDERR current
    return response


H = TypeVar("H", StreamingResponse, AsyncStreamingResponse)
S = TypeVar("S", AbstractContextManager[StreamingResponse], AbstractAsyncContextManager[AsyncStreamingResponse])


class _Body(Generic[S, H]):
    """What both response streams hold: the client's open stream and its response,
    the request (for the errors), the spooled request body to close at the end, and
    the response's extensions, where :data:`STDERR` is kept current."""

    def __init__(self, stream: S, head: H, request: httpx.Request, spooled: IO[bytes] | None) -> None:
        self._stream: S | None = stream
        self._head: H = head
        self._request = request
        self._spooled = spooled
        self.extensions: dict[str, Any] = {}

    def _note_stderr(self) -> None:
        self.extensions[STDERR] = self._head.stderr

    def _take_stream(self) -> S | None:
        """The client's stream to close (None once it was), the spooled body closed."""
        stream, self._stream = self._stream, None
        if stream is not None and self._spooled is not None:
            self._spooled.close()
        return stream


class _SyncBody(_Body[AbstractContextManager[StreamingResponse], StreamingResponse], httpx.SyncByteStream):
    """A response body as it arrives; closing it ends the FastCGI request (the
    connection goes back to the pool, or is aborted when the body was not read)."""

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors(self._request):
            for chunk in self._head.iter_bytes():
                self._note_stderr()
                yield chunk
        self._note_stderr()

    def close(self) -> None:
        stream = self._take_stream()
        if stream is not None:
            stream.__exit__(None, None, None)
            self._note_stderr()


class _AsyncBody(_Body[AbstractAsyncContextManager[AsyncStreamingResponse], AsyncStreamingResponse],
                 httpx.AsyncByteStream):
    """The asyncio :class:`_SyncBody`."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._head.aiter_bytes():
                self._note_stderr()
                yield chunk
        self._note_stderr()

    async def aclose(self) -> None:
        stream = self._take_stream()
        if stream is not None:
            await stream.__aexit__(None, None, None)
            self._note_stderr()


def _known_length(request: httpx.Request) -> bool:
    return "content-length" in request.headers


def _spooled_body(spooled: IO[bytes], length: int, request: httpx.Request,
                  params: dict[str, str]) -> tuple[Any, IO[bytes] | None]:
    """A spooled body with its CONTENT_LENGTH; an empty one nobody announced is no body
    (a GET sends no CONTENT_LENGTH, as nginx)."""
    if length or "transfer-encoding" in request.headers:
        params["CONTENT_LENGTH"] = str(length)
        return spooled, spooled
    spooled.close()
    return b"", None


class FastCGITransport(httpx.BaseTransport):
    """An httpx transport to the FastCGI application at ``address`` (``HOST:PORT``,
    ``unix:PATH``), for ``httpx.Client(transport=...)``.

    ``root`` is the document root, where the application finds its scripts (the
    client's name; the proxy calls it ``document_root``): ``/index.php`` runs
    ``root/index.php``. ``script_filename`` fixes the script (relative to ``root``, or
    absolute) for a front-controller app, the path then in PATH_INFO; otherwise the path
    is split by ``split_path_info`` (default: after ``.php``) into SCRIPT_NAME and
    PATH_INFO, and a path ending in ``/`` gets ``index``. ``params`` are added to (and
    override) every request's CGI variables. ``timeout`` (one number, or a
    :class:`~fcgibridge.client.Timeout`) is for requests that carry no httpx timeout;
    httpx's (``httpx.Client(timeout=)``, per call) sets connect and read, and the
    ``total`` of a ``Timeout`` given here bounds every request. Up to ``pool_size``
    connections are kept alive; :meth:`close` (``client.close()``) closes them.
    """

    def __init__(self, address: str, *, root: str | None = None, script_filename: str | None = None,
                 split_path_info: str | None = None, index: str = "index.php",
                 params: Mapping[str, str] | None = None, timeout: float | Timeout | None = 30.0,
                 pool_size: int = 16) -> None:
        self.mapper = ParamsMapper(root, script_filename, split_path_info, index, params, root_option="root")
        self.timeout = Timeout.of(timeout)
        self.client = FastCGIClient(address, timeout=self.timeout, keep_alive=True, pool_size=pool_size)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        params = _params(self.mapper, request)
        body: Any = request.stream
        spooled = None
        if not _known_length(request):
            assert isinstance(request.stream, httpx.SyncByteStream), "a sync client gives a sync stream"
            body, spooled = _spooled_body(*spool(request.stream), request, params)
        stream = self.client.stream(request.method, params["REQUEST_URI"], params=params, body=body,
                                    timeout=_timeout(request, self.timeout))
        try:
            with _httpx_errors(request):
                head = stream.__enter__()
        except BaseException:
            if spooled is not None:
                spooled.close()
            raise
        return _response(head, _SyncBody(stream, head, request, spooled), request)

    def close(self) -> None:
        """Close the pooled connections."""
        self.client.close()


class AsyncFastCGITransport(httpx.AsyncBaseTransport):
    """The asyncio :class:`FastCGITransport`, for ``httpx.AsyncClient(transport=...)``;
    the same options, and ``multiplex``: None asks the server whether it multiplexes
    (fcgibridge does, PHP-FPM does not) and then runs concurrent requests over one
    connection; True or False decide without asking. :meth:`aclose` closes the
    connections."""

    def __init__(self, address: str, *, root: str | None = None, script_filename: str | None = None,
                 split_path_info: str | None = None, index: str = "index.php",
                 params: Mapping[str, str] | None = None, timeout: float | Timeout | None = 30.0,
                 pool_size: int = 16, multiplex: bool | None = None) -> None:
        self.mapper = ParamsMapper(root, script_filename, split_path_info, index, params, root_option="root")
        self.timeout = Timeout.of(timeout)
        self.client = AsyncFastCGIClient(address, multiplex=multiplex, timeout=self.timeout, keep_alive=True,
                                         pool_size=pool_size)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        params = _params(self.mapper, request)
        body: Any = request.stream
        spooled = None
        if not _known_length(request):
            assert isinstance(request.stream, httpx.AsyncByteStream), "an async client gives an async stream"
            body, spooled = _spooled_body(*await aspool(request.stream), request, params)
        stream = self.client.stream(request.method, params["REQUEST_URI"], params=params, body=body,
                                    timeout=_timeout(request, self.timeout))
        try:
            with _httpx_errors(request):
                head = await stream.__aenter__()
        except BaseException:
            if spooled is not None:
                spooled.close()
            raise
        return _response(head, _AsyncBody(stream, head, request, spooled), request)

    async def aclose(self) -> None:
        """Close the pooled connections (and the multiplexed one)."""
        await self.client.aclose()


__all__ = ["STDERR", "AsyncFastCGITransport", "FastCGITransport", "httpx_error"]
