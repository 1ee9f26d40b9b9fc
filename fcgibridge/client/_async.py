"""The asyncio client: streams and one reader task per connection around the shared
:class:`Channel`; several requests share a connection when the server multiplexes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from ..protocol import FCGI_MPXS_CONNS, Role
from ._base import (
    CHUNK_SIZE,
    HIGH_WATER,
    Channel,
    ConnectError,
    ConnectionClosed,
    Deadline,
    Exchange,
    FastCGIError,
    RequestSpec,
    Response,
    StreamedHead,
    Timeout,
    connect_error,
    iter_body,
    make_spec,
    parse_address,
)
from ._sync import ABORT_GRACE, DEFAULT_VALUES


async def _body_chunks(body: Any) -> AsyncIterator[bytes]:
    if hasattr(body, "__aiter__"):
        async for chunk in body:
            if chunk:
                yield bytes(chunk)
    else:
        for chunk in iter_body(body):
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


class AsyncFastCGIClient:
    """The asyncio FastCGI client; the same options as :class:`~fcgibridge.client.FastCGIClient`.

    ``multiplex``: None (default) asks the server (FCGI_GET_VALUES, once) and runs
    concurrent requests over one connection when it answers ``FCGI_MPXS_CONNS=1``;
    True or False decide without asking. Close with ``await client.aclose()`` or
    ``async with``.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float | Timeout | None = 10.0,
        keep_alive: bool = False,
        pool_size: int = 8,
        idle_timeout: float = 60.0,
        multiplex: bool | None = None,
        root: str | None = None,
        script_filename: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> None:
        self.address = address
        self.family, self.sockaddr = parse_address(address)
        self.timeout = Timeout.of(timeout)
        self.keep_alive = keep_alive
        self.pool_size = pool_size
        self.idle_timeout = idle_timeout
        self.multiplex = multiplex
        self.root = root
        self.script_filename = script_filename
        self.params = dict(params or {})
        self._pool: deque[_AsyncConnection] = deque()
        self._shared: _AsyncConnection | None = None
        self._mpx_lock = asyncio.Lock()

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        params: Mapping[str, str] | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: Any = b"",
        script_filename: str | None = None,
        root: str | None = None,
        role: Role = Role.RESPONDER,
        timeout: float | Timeout | None = None,
    ) -> Response:
        """Send one request and read the whole response; ``body`` may be an async iterable."""
        spec = self._spec(method, path, params, headers, body, script_filename, root, role)
        conn, exchange, deadline = await self._start(spec, timeout, keep_raw=True)
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
    async def stream(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        params: Mapping[str, str] | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: Any = b"",
        script_filename: str | None = None,
        root: str | None = None,
        role: Role = Role.RESPONDER,
        timeout: float | Timeout | None = None,
    ) -> AsyncIterator[AsyncStreamingResponse]:
        """Send a request; yields the response once its head arrived. Leaving the block
        early aborts the request without disturbing the connection's other requests."""
        spec = self._spec(method, path, params, headers, body, script_filename, root, role)
        conn, exchange, deadline = await self._start(spec, timeout)
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
            conn.writer.write(conn.channel.core.get_values(names))
            async with asyncio.timeout(deadline.next_wait(deadline.timeout.read)):
                await conn.values_ready.wait()
            if conn.channel.values is None:
                raise ConnectionClosed(self.address, "the server closed the connection without "
                                                     "answering FCGI_GET_VALUES")
            return conn.channel.values
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
        return len(self._pool) + (1 if self._shared is not None and self._shared.channel.idle else 0)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, deque()
        shared, self._shared = self._shared, None
        for conn in [*pool, *([shared] if shared else [])]:
            await conn.close()

    async def __aenter__(self) -> AsyncFastCGIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------- internals

    def _timeout(self, timeout: float | Timeout | None) -> Timeout:
        return self.timeout if timeout is None else Timeout.of(timeout)

    def _spec(self, method: str, path: str, params: Mapping[str, str] | None,
              headers: Iterable[tuple[str, str]] | Mapping[str, str], body: Any,
              script_filename: str | None, root: str | None, role: Role) -> RequestSpec:
        return make_spec(method, path, params=params, headers=headers, body=body,
                         script_filename=script_filename or self.script_filename, root=root or self.root,
                         role=role, defaults=self.params)

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
        now = time.monotonic()
        while self._pool:
            conn = self._pool.pop()
            if now - conn.idle_since < self.idle_timeout and conn.alive and conn.channel.reusable:
                return conn, self.keep_alive
            await conn.close()
        return await _AsyncConnection.open(self.address, self.family, self.sockaddr, deadline), self.keep_alive

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

    async def _start(self, spec: RequestSpec, timeout: float | Timeout | None,
                     keep_raw: bool = False) -> tuple[_AsyncConnection, Exchange, Deadline]:
        deadline = Deadline(self.address, self._timeout(timeout))
        conn, keep_conn = await self._acquire(deadline)
        exchange, data, body_sent = conn.channel.begin(spec, keep_conn=keep_conn, keep_raw=keep_raw)
        conn.track(exchange)
        try:
            await conn.send(data, exchange, deadline)
            if not body_sent:
                async for chunk in _body_chunks(spec.body):
                    out = conn.channel.stdin(exchange, chunk)
                    if out is None:
                        break
                    await conn.send(out, exchange, deadline)
                else:
                    out = conn.channel.end_stdin(exchange)
                    if out is not None:
                        await conn.send(out, exchange, deadline)
            while exchange.head is None and not exchange.done:
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
        if not exchange.done and channel.reusable and (self.keep_alive or shared):
            grace = Deadline(self.address, Timeout(None, ABORT_GRACE, ABORT_GRACE))
            try:
                await conn.send(channel.abort(exchange), exchange, grace)
                while not exchange.done:
                    await conn.wait(exchange, grace)
            except FastCGIError:
                if not shared:
                    await self._drop(conn, exchange)
                    return
        conn.untrack(exchange)
        channel.forget(exchange)
        if shared:
            if not exchange.done:
                channel.abort(exchange)  # its output is dropped from now on
            if channel.idle:
                conn.idle_since = time.monotonic()
            if not channel.reusable and channel.idle:
                self._shared = None
                await conn.close()
            return
        if not channel.keepable(exchange, self.keep_alive):
            await conn.close()
            return
        conn.idle_since = time.monotonic()
        if len(self._pool) < self.pool_size:
            self._pool.append(conn)
        else:
            await conn.close()

