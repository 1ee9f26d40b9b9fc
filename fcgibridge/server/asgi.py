"""ASGI 3 (HTTP and lifespan) behind the connection layer; ASGI 2 through asgiref.

Request bodies arrive as ``http.request`` messages as STDIN records come in; when the
app falls behind, reading from the connection pauses. The response head waits for the
first body message, so a small response leaves in one write with END_REQUEST.

The response of one call is in one :class:`Response` state; these rules move it:

Rule 1. ``http.response.start`` is taken only while WAITING: the head is formatted
        and HELD (a header with a line break raises ValueError in the app instead).

Rule 2. ``http.response.body`` is taken while HELD or STREAMING. The first one carries
        the held head. With ``more_body`` the bytes go out (waiting while the web
        server is slow to read) and the response is STREAMING; without it they go out
        with END_REQUEST and the response is COMPLETE.

Rule 3. Any other message, or one its state does not take (:data:`REFUSALS` says why),
        raises RuntimeError in the app; an error in a GONE request raises
        :class:`ClientDisconnected` instead, whatever the message.

Rule 4. When the app raises (ClientDisconnected aside), is cancelled, or returns before
        the response is COMPLETE, the error is logged and the request ends: with a 500
        if no byte of the response went out (WAITING or HELD), cut short (app status 1)
        if it did (STREAMING). A COMPLETE or GONE request is left as it is.

Rule 5. The connection layer's ``disconnect`` (the request was aborted or failed, or
        its connection closed) makes any state GONE. Once COMPLETE or GONE,
        ``receive`` answers ``http.disconnect``.

    WAITING ──start──▶ HELD ──body──▶ STREAMING ──body──▶ COMPLETE
                        └──────last body───────────────────┘
    any state ──disconnect──▶ GONE
"""

from __future__ import annotations

import asyncio
import enum
import logging
import traceback
from collections import deque
from collections.abc import Iterator
from types import FrameType
from typing import Any

from asgiref.typing import ASGI3Application

from ..cgi import BadAppResponse, body_bytes, error_response, format_head, status_in_range
from ..protocol import Role
from .connection import ClientDisconnected, RequestStream
from .environ import asgi_scope
from .lifecycle import NoLifecycle

log = logging.getLogger("fcgibridge.app")

#: Body bytes queued for an ASGI app before reading from its connection pauses.
MAX_QUEUED_BODY = 256 * 1024

_START = "http.response.start"
_BODY = "http.response.body"
_NO_MESSAGE = object()  # what a state takes that takes none: no message type equals it


class Response(enum.Enum):
    """Where the response of one ASGI call is (Rules 1-5 above)."""

    WAITING = "no http.response.start yet"
    HELD = "the head is formatted; it leaves with the first body message"
    STREAMING = "the head is out; more body is to come"
    COMPLETE = "the last body message (or the 500) went out with END_REQUEST"
    GONE = "the request was aborted or failed, or its connection closed"

    # Members compare by identity: hashing them by identity too keeps the table and set
    # lookups of every message in C (Enum's own __hash__ is Python code).
    __hash__ = object.__hash__


# Plain names, quick to look up for every message (an enum member's attribute lookup is not).
_WAITING = Response.WAITING
_HELD = Response.HELD
_STREAMING = Response.STREAMING
_COMPLETE = Response.COMPLETE
_GONE = Response.GONE

#: The one message type each state takes (Rules 1, 2); a state that is over takes none.
TAKES: dict[Response, object] = {_WAITING: _START, _HELD: _BODY, _STREAMING: _BODY,
                                 _COMPLETE: _NO_MESSAGE, _GONE: _NO_MESSAGE}
#: The states in which the response is over: nothing more goes out.
OVER = frozenset({_COMPLETE, _GONE})

#: Why a state does not take a message type it may be sent (Rule 3).
REFUSALS: dict[tuple[Response, str], str] = {
    (_WAITING, _BODY): f"ASGI app sent {_BODY!r} before {_START!r}",
    (_HELD, _START): f"ASGI app sent {_START!r} twice",
    (_STREAMING, _START): f"ASGI app sent {_START!r} twice",
    (_COMPLETE, _START): f"ASGI app sent {_START!r} twice",
    (_COMPLETE, _BODY): f"ASGI app sent {_BODY!r} after the response was complete",
}

_INTERNAL_ERROR = error_response(500)


class LifespanFailure(Exception):
    """The app reported ``lifespan.startup.failed`` (or crashed during startup with --lifespan on)."""


class ASGIAdapter(NoLifecycle):
    """Serves an ASGI 3 app: each request is a task on the worker's event loop.

    It is the app's :class:`~fcgibridge.server.lifecycle.Lifecycle` too: the ASGI
    lifespan runs before the first request and after the last (no restart or stop hook).
    """

    def __init__(self, app: ASGI3Application, *, root_path: str = "", lifespan: str = "auto",
                 capacity: int = 1024) -> None:
        self.app = app
        self.root_path = root_path
        self.capacity = capacity
        self.lifespan = Lifespan(app, lifespan)
        #: The lifespan state every request scope starts from; None without lifespan.
        self.state: dict[str, Any] | None = self.lifespan.state
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, stream: RequestStream) -> ASGIRequest:
        request = ASGIRequest(self, stream)
        # One name for all: asyncio would format a "Task-N" for each. The task leaves
        # self.tasks at the end of run() (a done callback would cost a loop turn).
        task = request.task = stream.loop.create_task(request.run(), name="fcgibridge-request")
        self.tasks.add(task)
        return request

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the app calls still running (a response is out
        before the app returns: background work after the last body message), then cancel them."""
        if self.tasks and timeout > 0:
            await asyncio.wait(list(self.tasks), timeout=timeout)
        for task in self.tasks:
            task.cancel()

    # ------------------------------------------------ Lifecycle

    async def startup(self) -> int:
        """The lifespan startup; :class:`LifespanFailure` when the app reports it failed."""
        await self.lifespan.startup()
        if not self.lifespan.supported:
            self.lifespan.state.clear()
            self.state = None
        return 0

    async def shutdown(self) -> None:
        await self.lifespan.shutdown()


class ASGIRequest:
    """One ASGI HTTP call: the receive and send callables and the body queue."""

    def __init__(self, adapter: ASGIAdapter, stream: RequestStream) -> None:
        self.adapter = adapter
        self.stream = stream
        self.chunks: deque[bytes] = deque()
        self.queued = 0
        # Spec 6.3: an authorizer gets no FCGI_STDIN, not even the empty record.
        self.body_done = stream.role is Role.AUTHORIZER
        self.body_delivered = False
        self.response = _WAITING
        self.head = b""  # formatted by http.response.start, sent with the first body message
        # Futures of the receive() calls waiting for news (a list, not one future: receive()
        # may wait in several tasks); made only when one waits, which a small request never does.
        self._waiters: list[asyncio.Future[None]] = []
        self.task: asyncio.Task[None] | None = None  # cancelled past --timeout
        self.running = False  # run() has begun (so it will take its task out of adapter.tasks)
        self.call: Any = None  # what the app returned (its coroutine): the slow log shows its stack
        #: ``scope["extensions"]["fcgi.data"]``: the FILTER role's data stream; None otherwise.
        self.data = DataStream(self) if stream.role is Role.FILTER else None

    # ------------------------------------------------ RequestHandler (loop side)

    def receive_body(self, data: bytes) -> None:
        if self.body_done:
            return  # STDIN after its end (only an authorizer can get here): not part of the body
        self.chunks.append(data)
        self.queued += len(data)
        if self.queued > MAX_QUEUED_BODY:
            self.stream.pause_reading()
        self._wake()

    def end_body(self) -> None:
        self.body_done = True
        self._wake()

    def receive_data(self, data: bytes) -> None:
        if self.data is not None:
            self.data.feed(data)

    def end_data(self) -> None:
        if self.data is not None:
            self.data.end()

    def disconnect(self) -> None:
        self.response = _GONE  # Rule 5
        self._wake()

    def cancel(self) -> bool:
        if self.task is not None:
            self.task.cancel()
            if not self.running:  # cancelled before its first step: run() never gets to its finally
                self.adapter.tasks.discard(self.task)
        return True

    def current_stack(self) -> str | None:
        """The coroutine's own stack, and what it awaits (not the event loop's)."""
        if self.call is None:
            return None
        # From the app's coroutine, not the task's: compiled, run() has no frame to start from.
        return "".join(traceback.StackSummary.extract(_awaited_frames(self.call)).format())

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():  # a waiting task may have been cancelled
                    waiter.set_result(None)

    async def _wait(self) -> None:
        # Until the next _wake(). The caller checked its conditions with no await in
        # between, so no wake-up can be lost.
        waiter = self.stream.loop.create_future()
        self._waiters.append(waiter)
        await waiter

    # ------------------------------------------------------------- receive / send

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.response in OVER:  # Rule 5
                return {"type": "http.disconnect"}
            if self.chunks:
                data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
                self.chunks.clear()
                if self.queued > MAX_QUEUED_BODY:
                    self.stream.resume_reading()
                self.queued = 0
                self.body_delivered = self.body_done
                return {"type": "http.request", "body": data, "more_body": not self.body_done}
            if self.body_done and not self.body_delivered:
                self.body_delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._wait()

    async def send(self, message: Any) -> None:
        kind = message["type"]
        state = self.response
        if kind != TAKES[state]:
            raise _refusal(state, kind)
        if state is _WAITING:  # Rule 1
            self.head = _response_head(message)
            self.response = _HELD
            return
        # Rule 2
        body = message.get("body", b"")
        if type(body) is not bytes:  # checked before the state moves: the 500 or the cut still follows
            body = body_bytes(body, "the ASGI app sent an http.response.body whose body is")
        if message.get("more_body", False):
            if state is _HELD:
                body = self.head + body
            self.response = _STREAMING
            if body:
                self.stream.write(body)
                await self.stream.drain()
            return
        self.response = _COMPLETE
        self.stream.end(body, head=self.head if state is _HELD else b"")
        self._wake()

    # --------------------------------------------------------------------- run

    async def run(self) -> None:
        self.running = True
        stream = self.stream
        try:
            scope = asgi_scope(stream.params, stream.role, self.adapter.root_path, self.adapter.state)
            if self.data is not None:
                scope["extensions"]["fcgi.data"] = self.data
            self.call = self.adapter.app(scope, self.receive, self.send)  # type: ignore[arg-type]
            await self.call
        except ClientDisconnected:
            log.info("client went away during %s", stream.params.get("REQUEST_URI", "?"))
        except asyncio.CancelledError:
            self._finish_failed()
            raise
        except BadAppResponse as exc:  # the app's mistake, named: no traceback into the server
            log.error("app error: %s: %s %s", exc, stream.params.get("REQUEST_METHOD", "?"),
                      stream.params.get("REQUEST_URI", "?"))
            self._finish_failed()
        except Exception:
            log.exception("error in ASGI app serving %s", stream.params.get("REQUEST_URI", "?"))
            self._finish_failed()
        else:
            self._check_complete()
        finally:
            if self.task is not None:
                self.adapter.tasks.discard(self.task)

    def _check_complete(self) -> None:
        """After the app returned: Rule 4 if its response is not complete."""
        state = self.response
        if state not in OVER:
            uri = self.stream.params.get("REQUEST_URI", "?")
            if state is _STREAMING:
                log.error("ASGI app returned before finishing its response to %s", uri)
            else:
                log.error("ASGI app returned without a response to %s", uri)
            self._finish_failed()

    def _finish_failed(self) -> None:
        """Rule 4: a 500 if nothing went out yet, else the response cut short."""
        state = self.response
        if state in OVER:
            return
        self.response = _COMPLETE
        self.stream.end(b"" if state is _STREAMING else _INTERNAL_ERROR, app_status=1)


class DataStream:
    """``scope["extensions"]["fcgi.data"]`` of a FILTER request: the file the web server
    wants filtered (FCGI_DATA, spec 6.4), which arrives after the whole body.

    ``await receive()`` gives ``{"type": "fcgi.data", "body": bytes, "more_body": bool}``
    messages, as the body's ``http.request`` ones, and ``{"type": "http.disconnect"}`` once
    the request is gone or its response complete; ``await read()`` gives all the rest at
    once. ``length`` and ``last_modified`` are the FCGI_DATA_LENGTH and FCGI_DATA_LAST_MOD
    params as ints (None when missing or not a number). Reading from the web server
    pauses while more than :data:`MAX_QUEUED_BODY` bytes of it wait unread, as for the
    body: so read the body first (the web server sends it first).
    """

    def __init__(self, request: ASGIRequest) -> None:
        self._request = request  # its wake-ups (_wait, _wake) and its response state
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._done = False
        self._delivered = False
        params = request.stream.params
        self.length = _int_param(params.get("FCGI_DATA_LENGTH"))
        self.last_modified = _int_param(params.get("FCGI_DATA_LAST_MOD"))

    # ------------------------------------------------ loop side (the connection)

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued > MAX_QUEUED_BODY:
            self._request.stream.pause_reading()
        self._request._wake()

    def end(self) -> None:
        self._done = True
        self._request._wake()

    # ------------------------------------------------------------------ app side

    async def receive(self) -> dict[str, Any]:
        request = self._request
        while True:
            if request.response is _GONE:
                return {"type": "http.disconnect"}
            if self._chunks:
                chunks = self._chunks
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                if self._queued > MAX_QUEUED_BODY:
                    request.stream.resume_reading()
                self._queued = 0
                self._delivered = self._done
                return {"type": "fcgi.data", "body": data, "more_body": not self._done}
            if self._done and not self._delivered:
                self._delivered = True
                return {"type": "fcgi.data", "body": b"", "more_body": False}
            if request.response is _COMPLETE:  # the request is over: no more will come
                return {"type": "http.disconnect"}
            await request._wait()

    async def read(self) -> bytes:
        """The rest of the data stream, whole (in memory); ClientDisconnected if the
        request is gone first."""
        parts: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] != "fcgi.data":
                raise ClientDisconnected("the request was aborted or its connection closed")
            parts.append(message["body"])
            if not message["more_body"]:
                return b"".join(parts)


def _response_head(message: Any) -> bytes:
    """The CGI head of an ``http.response.start`` message (Rule 1), which must have an
    int status from 100 to 599 (no bool, str or bytes: the same rule as WSGI's) and
    headers that are an iterable of [name, value] pairs of bytes (the ASGI spec);
    :class:`BadAppResponse` names what is wrong."""
    status = message["status"]
    if isinstance(status, bool) or not isinstance(status, int) or not status_in_range(status):
        raise BadAppResponse(f"the ASGI status must be an int from 100 to 599, not {status!r}")
    headers = message.get("headers", ())
    try:
        pairs = list(headers)
    except TypeError:
        raise BadAppResponse(f"the ASGI headers must be an iterable of [name, value] pairs, not {headers!r}") from None
    for pair in pairs:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or type(pair[0]) is not bytes
                or type(pair[1]) is not bytes):
            raise BadAppResponse(f"an ASGI header must be a [name, value] pair of bytes, not {pair!r}")
    try:
        return format_head(int(status), pairs)
    except ValueError:
        raise BadAppResponse("an ASGI header name or value contains a line break") from None


def _int_param(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _refusal(state: Response, kind: object) -> Exception:
    """The error for a message its state does not take (Rule 3)."""
    if state is _GONE:
        return ClientDisconnected("the request was aborted or its connection closed")
    refusal = REFUSALS.get((state, kind)) if isinstance(kind, str) else None
    return RuntimeError(refusal or f"ASGI app sent unexpected message type {kind!r}")


class Lifespan:
    """The ASGI lifespan protocol: startup before serving, shutdown after.

    With ``mode="auto"`` an app that raises on the lifespan scope (Django's ASGI handler
    does) is taken not to support it, and serving goes on without it.
    """

    def __init__(self, app: ASGI3Application, mode: str = "auto") -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        if not self.supported:
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._messages.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            raise LifespanFailure(self._failure)

    async def shutdown(self) -> None:
        if not self.supported or self._task is None or self._task.done():
            return
        await self._messages.put({"type": "lifespan.shutdown"})
        await self._stopped.wait()

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)  # type: ignore[arg-type]
        except Exception as exc:
            if self._failure is not None:
                log.error("ASGI lifespan startup failed", exc_info=True)
            elif self._started.is_set():
                log.exception("error in the ASGI lifespan task after startup")
            elif self.mode == "auto":
                log.info("the app does not support ASGI lifespan (%s: %s); serving without it",
                         type(exc).__name__, exc)
                self.supported = False
            else:
                log.exception("error in ASGI lifespan startup")
                self._failure = f"{type(exc).__name__}: {exc}"
        finally:
            self._started.set()
            self._stopped.set()

    async def _receive(self) -> dict[str, Any]:
        return await self._messages.get()

    async def _send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failure = message.get("message", "") or "lifespan.startup.failed"
            self._started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if kind == "lifespan.shutdown.failed":
                log.error("ASGI lifespan shutdown failed: %s", message.get("message", ""))
            self._stopped.set()


def _awaited_frames(coro: Any) -> Iterator[tuple[FrameType, int]]:
    """The frames of a suspended coroutine and of what it awaits, outermost first."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            return
        yield frame, frame.f_lineno
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
