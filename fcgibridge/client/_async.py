"""The asyncio client: streams and one reader task per connection around the shared
:class:`Channel`; several requests share a connection when the server multiplexes.
Everything else is :class:`~fcgibridge.client._base.ClientBase`'s."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Unpack

from ..protocol import FCGI_MPXS_CONNS
from ._base import (
    CHUNK_SIZE,
    DEFAULT_VALUES,
    HIGH_WATER,
    Channel,
    ClientBase,
    ClientOptions,
    ConnectError,
    ConnectionClosed,
    Deadline,
    Exchange,
    FastCGIError,
    RequestOptions,
    RequestSpec,
    Response,
    StreamedHead,
    Timeout,
    Upload,
    connect_error,
    iter_body,
)


async def _writes(upload: Upload) -> AsyncIterator[bytes]:
    """The upload's writes in order; an async iterable body (or data stream) is awaited
    piece by piece."""
    if not hasattr(upload.body, "__aiter__") and not hasattr(upload.data, "__aiter__"):
        for data in upload.writes():
            yield data
        return
    yield upload.first
    if upload.body is not None:
        async for chunk in _pieces(upload.body):
            if (piece := upload.push(chunk)) is None:
                return
            yield piece
        if (last := upload.end()) is None:
            return
        yield last
    if upload.data is not None:
        async for chunk in _pieces(upload.data):
            if (piece := upload.push_data(chunk)) is None:
                return
            yield piece
        if (last := upload.end_data()) is not None:
            yield last


async def _pieces(source: Any) -> AsyncIterator[bytes]:
    """The pieces of a body or data stream: an async iterable as it yields them, anything
    else as :func:`iter_body` cuts it."""
    if hasattr(source, "__aiter__"):
        async for chunk in source:
            yield chunk
        return
    for chunk in iter_body(source):
        yield chunk


class _AsyncConnection:
    """One connection: a reader task feeds the channel and wakes the waiting requests."""

    def __init__(self, address: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.address = address
        self.channel = Channel(address)
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()
        self._waiters: dict[Exchange, asyncio.Event] = {}
        self._drained = asyncio.Event()
        self.values_ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(cls, address: str, family: int, sockaddr: Any, deadline: Deadline) -> _AsyncConnection:
        try:
            async with asyncio.timeout(deadline.next_wait(deadline.timeout.connect, "connect")):
                if family == socket.AF_UNIX:
                    reader, writer = await asyncio.open_unix_connection(sockaddr, limit=CHUNK_SIZE)
                else:
                    reader, writer = await asyncio.open_connection(sockaddr[0], sockaddr[1], family=family,
                                                                   limit=CHUNK_SIZE)
        except TimeoutError:
            raise deadline.error("connect") from None
        except OSError as exc:
            raise connect_error(address, exc) from None
        return cls(address, reader, writer)

    @property
    def alive(self) -> bool:
        return not self.channel.closed and not self._task.done()

    async def _read_loop(self) -> None:
        channel = self.channel
        try:
            while True:
                data = await self.reader.read(CHUNK_SIZE)
                if not data:
                    channel.eof()
                    self._wake(list(channel.exchanges.values()))
                    self.values_ready.set()
                    return
                self._wake(channel.feed(data))
                if channel.values is not None:
                    self.values_ready.set()
                # Backpressure: stop reading while a caller has a lot of body left to take.
                while any(ex.buffered > HIGH_WATER for ex in channel.exchanges.values()):
                    self._drained.clear()
                    await self._drained.wait()
        except OSError as exc:
            channel.fail_all(ConnectionClosed(self.address, f"the connection broke: {exc.strerror or exc}"))
            channel.closed = True
            self._wake(list(channel.exchanges.values()))
            self.values_ready.set()

    def _wake(self, exchanges: Iterable[Exchange]) -> None:
        for exchange in exchanges:
            waiter = self._waiters.get(exchange)
            if waiter is not None:
                waiter.set()

    def track(self, exchange: Exchange) -> None:
        self._waiters[exchange] = asyncio.Event()

    def untrack(self, exchange: Exchange) -> None:
        self._waiters.pop(exchange, None)
        self._drained.set()

    async def wait(self, exchange: Exchange, deadline: Deadline) -> None:
        """Until the reader brought something for ``exchange`` (a read timeout at most)."""
        if exchange.done:
            return
        waiter = self._waiters[exchange]
        waiter.clear()
        self._drained.set()
        try:
            async with asyncio.timeout(deadline.next_wait(deadline.timeout.read)):
                await waiter.wait()
        except TimeoutError:
            raise deadline.error("read") from None

    async def upload(self, upload: Upload, deadline: Deadline) -> None:
        """Send the request's writes in order (as long as the server has not answered)."""
        if upload.body is None and upload.data is None:  # the whole request is in the first write
            await self.send(upload.first, upload.exchange, deadline)
            return
        async for data in _writes(upload):
            await self.send(data, upload.exchange, deadline)

    def pop_body(self, exchange: Exchange) -> bytes:
        data = exchange.pop_body()
        self._drained.set()
        return data

    async def send(self, data: bytes, exchange: Exchange, deadline: Deadline) -> None:
        if exchange.done or not data:
            return
        if self.channel.closed:
            exchange.raise_error()
            raise ConnectionClosed(self.address, "the server closed the connection")
        self.writer.write(data)
        try:
            async with asyncio.timeout(deadline.next_wait(deadline.timeout.read)):
                await self.writer.drain()
        except TimeoutError:
            raise deadline.error("send") from None
        except OSError as exc:
            self.channel.reusable = False
            if not exchange.done:
                raise ConnectionClosed(self.address, f"the connection broke while sending: "
                                                     f"{exc.strerror or exc}") from None

    async def close(self) -> None:
        self.channel.reusable = False
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class AsyncStreamingResponse(StreamedHead):
    """The asyncio :class:`~fcgibridge.client.StreamingResponse`: headers at once, the body
    with ``async for chunk in response.aiter_bytes()``."""

    def __init__(self, client: AsyncFastCGIClient, conn: _AsyncConnection, exchange: Exchange,
                 deadline: Deadline) -> None:
        super().__init__(exchange)
        self._client = client
        self._conn: _AsyncConnection | None = conn
        self._deadline = deadline


    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as the server sends it; memory stays bounded."""
        exchange = self._exchange
        while True:
            if self._conn is None:
                raise RuntimeError("the response was closed")
            chunk = self._conn.pop_body(exchange)
            if chunk:
                yield chunk
                continue
            if exchange.done:
                break
            try:
                await self._conn.wait(exchange, self._deadline)
            except FastCGIError:
                await self.aclose()
                raise
        exchange.raise_error()
        await self.aclose()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._client._finish(conn, self._exchange)


class AsyncFastCGIClient(ClientBase[_AsyncConnection]):
    """The asyncio FastCGI client; the same options as :class:`~fcgibridge.client.FastCGIClient`.

    ``multiplex``: None (default) asks the server (FCGI_GET_VALUES, once) and runs
    concurrent requests over one connection when it answers ``FCGI_MPXS_CONNS=1``;
    True or False decide without asking. Close with ``await client.aclose()`` or
    ``async with``.
    """

    def __init__(self, address: str, *, multiplex: bool | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(address, **options)
        self.multiplex = multiplex
        self._shared: _AsyncConnection | None = None
        self._mpx_lock = asyncio.Lock()

    async def request(self, method: str = "GET", path: str = "/", **options: Unpack[RequestOptions]) -> Response:
        """Send one request and read the whole response (the options of
        :meth:`FastCGIClient.request`); ``body`` and ``data`` may be async iterables."""
        conn, exchange, deadline = await self._start(self._spec(method, path, **options), keep_raw=True)
        try:
            while not exchange.done:
                await conn.wait(exchange, deadline)
            response = exchange.finish()
        except BaseException:
            await self._drop(conn, exchange)
            raise
        await self._finish(conn, exchange)
        return response

    @asynccontextmanager
    async def stream(self, method: str = "GET", path: str = "/",
                     **options: Unpack[RequestOptions]) -> AsyncIterator[AsyncStreamingResponse]:
        """Send a request; yields the response once its head arrived. Leaving the block
        early aborts the request without disturbing the connection's other requests."""
        conn, exchange, deadline = await self._start(self._spec(method, path, **options))
        response = AsyncStreamingResponse(self, conn, exchange, deadline)
        try:
            yield response
        finally:
            await response.aclose()

    async def get_values(self, names: Iterable[str] = DEFAULT_VALUES, *,
                         timeout: float | Timeout | None = None) -> dict[str, str]:
        """FCGI_GET_VALUES on a connection of its own."""
        deadline = Deadline(self.address, self._timeout(timeout))
        conn = await _AsyncConnection.open(self.address, self.family, self.sockaddr, deadline)
        try:
            conn.writer.write(conn.channel.ask_values(names))
            async with asyncio.timeout(deadline.next_wait(deadline.timeout.read)):
                await conn.values_ready.wait()
            values = conn.channel.values_answer()
            assert values is not None  # the reader sets values_ready on an answer or the end
            return values
        except TimeoutError:
            raise deadline.error("read") from None
        finally:
            await conn.close()

    async def ping(self, *, timeout: float | Timeout | None = None) -> float:
        """Seconds a FCGI_GET_VALUES round trip took."""
        start = time.monotonic()
        await self.get_values((FCGI_MPXS_CONNS,), timeout=timeout)
        return time.monotonic() - start

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool, and the multiplexed one while it carries no request."""
        return super().idle_connections + (1 if self._shared is not None and self._shared.channel.idle else 0)

    async def aclose(self) -> None:
        """Close every pooled connection and the multiplexed one."""
        shared, self._shared = self._shared, None
        for conn in [*self._take_all_idle(), *([shared] if shared else [])]:
            await conn.close()

    async def __aenter__(self) -> AsyncFastCGIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------- internals

    async def _multiplexing(self, deadline: Deadline) -> bool:
        if self.multiplex is None:
            async with self._mpx_lock:
                if self.multiplex is None:
                    probe = Timeout(self.timeout.connect, min(self.timeout.read or 2.0, 2.0), None)
                    try:
                        values = await self.get_values((FCGI_MPXS_CONNS,), timeout=probe)
                    except ConnectError:
                        raise
                    except FastCGIError:
                        values = {}
                    self.multiplex = values.get(FCGI_MPXS_CONNS) == "1"
        return bool(self.multiplex)

    async def _acquire(self, deadline: Deadline) -> tuple[_AsyncConnection, bool]:
        """A connection for one more request, and whether it asks for KEEP_CONN."""
        if await self._multiplexing(deadline):
            async with self._mpx_lock:  # concurrent requests wait for the one connection
                return await self._shared_connection(deadline), True
        conn, stale = self._take_idle(lambda pooled: pooled.alive)
        for old in stale:
            await old.close()
        if conn is None:
            conn = await _AsyncConnection.open(self.address, self.family, self.sockaddr, deadline)
        return conn, self.keep_alive

    async def _shared_connection(self, deadline: Deadline) -> _AsyncConnection:
        shared = self._shared
        if shared is not None and not (shared.alive and shared.channel.reusable):
            self._shared = None
            if shared.channel.idle:
                await shared.close()
            shared = None
        if shared is not None and shared.channel.idle and \
                time.monotonic() - shared.idle_since >= self.idle_timeout:
            self._shared = None
            await shared.close()
            shared = None
        if shared is None:
            shared = self._shared = await _AsyncConnection.open(self.address, self.family, self.sockaddr,
                                                                deadline)
        return shared

    async def _start(self, spec: RequestSpec, keep_raw: bool = False) -> tuple[_AsyncConnection, Exchange, Deadline]:
        deadline = Deadline(self.address, spec.timeout)
        conn, keep_conn = await self._acquire(deadline)
        exchange, upload = conn.channel.begin(spec, keep_conn=keep_conn, keep_raw=keep_raw)
        conn.track(exchange)
        try:
            await conn.upload(upload, deadline)
            while not exchange.head_ready:
                await conn.wait(exchange, deadline)
            exchange.raise_error()
        except BaseException:
            await self._drop(conn, exchange)
            raise
        return conn, exchange, deadline

    async def _drop(self, conn: _AsyncConnection, exchange: Exchange) -> None:
        """A request failed midway (timeout, refusal, cancellation): its connection cannot
        be trusted — except a healthy multiplexed one, where only that request is aborted."""
        conn.untrack(exchange)
        if conn is self._shared and conn.alive and not conn.channel.failed:
            data = conn.channel.abort(exchange)
            conn.channel.forget(exchange)
            if data:
                conn.writer.write(data)  # no drain: the output buffer takes a 16-byte record
            return
        conn.channel.reusable = False
        if conn is self._shared:
            self._shared = None
        await conn.close()

    async def _finish(self, conn: _AsyncConnection, exchange: Exchange) -> None:
        channel = conn.channel
        shared = conn is self._shared
        if channel.abort_first(exchange, self.keep_alive or shared):
            grace = Deadline.for_abort(self.address)
            try:
                await conn.send(channel.abort(exchange), exchange, grace)
                while not exchange.done:
                    await conn.wait(exchange, grace)
            except FastCGIError:
                if not shared:
                    await self._drop(conn, exchange)
                    return
        conn.untrack(exchange)
        if shared:
            channel.forget(exchange)
            if not exchange.done:
                channel.abort(exchange)  # its output is dropped from now on
            if channel.idle:
                conn.idle_since = time.monotonic()
            if not channel.reusable and channel.idle:
                self._shared = None
                await conn.close()
            return
        if not self._keep(conn, exchange):
            await conn.close()

