"""WSGI (PEP 3333) behind the connection layer: apps run in a thread pool.

With ``--sync`` (one app call at a time per worker, as in a gunicorn sync worker or a
PHP-FPM child) a request whose body has fully arrived runs on the event loop
thread itself, which saves two thread hand-offs per request; with
``--no-request-buffering``, a request whose body is still arriving runs in the one
pool thread, so it can start before the body is complete;
and an inline response the web server is slow to read moves to that thread mid-way,
keeping backpressure. With ``--inline auto`` the thread-pool mode runs a call inline
the same way while the app keeps answering in under a millisecond, and gives the
calls back to the pool as soon as one takes longer (:class:`InlinePolicy`; the default,
``--inline never``, keeps every call in the pool).

The app thread never touches the transport. Its output is handed to the event loop
through a small queue that coalesces whatever accumulated before the loop got to it,
so a typical small response (head, body, end) leaves in a single write. The thread
waits when the web server is slow to read (backpressure), and its next read or write
fails with :class:`ClientDisconnected` once the request is aborted.

The output of one call is in one :class:`Output` state; these rules move it:

Rule 1. A call starts QUEUED, to run in a pool thread. A call whose body has arrived,
        with no other call busy in the pool, is INLINE instead in sync mode, and in
        the default mode while the app answers fast (:class:`InlinePolicy`): it runs
        on the event loop and writes to the stream itself. With request buffering
        (the default), every call waits for its whole body before it is placed, so a
        slow upload holds no thread; without it, in those modes a call with a small
        body still arriving (:data:`INLINE_BODY`) waits for it. An INLINE call the
        web server reads slower than it writes, or that runs too long (default mode:
        :class:`InlinePolicy`; sync mode: a response still streaming after
        :data:`SYNC_SLICE`, so the loop can read an abort), is handed to a pool thread
        mid-way: QUEUED again.

Rule 2. QUEUED: each write goes on the queue under the lock, and one flush of the queue
        is scheduled on the event loop unless one is already (``_scheduled``). The app
        thread waits while more than :data:`HIGH_WATER` bytes are queued.

Rule 3. The flush writes all that is queued at once. If that leaves the stream full,
        a QUEUED output is BLOCKED until the stream drains, then QUEUED again; the app
        thread waits before it queues more.

Rule 4. The last write (the end of the body, or the 500) makes the output ENDED: the
        request ends with it (the flush ends it for a QUEUED or BLOCKED output; an
        INLINE call ends it itself). The app thread does not wait for it.

Rule 5. ``disconnect`` (the request was aborted or failed, or its connection closed)
        or a closed event loop makes any state GONE: the queue is dropped, a waiting
        app thread wakes, and its next read or write raises ClientDisconnected. A call
        that had not started yet does not run.

    QUEUED ──stream full──▶ BLOCKED ──drained──▶ QUEUED     INLINE ──hand-off──▶ QUEUED
    QUEUED, BLOCKED, INLINE ──last write──▶ ENDED           any state ──disconnect──▶ GONE
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any, Final

from ..cgi import BadAppResponse, body_bytes, error_response, format_head, status_in_range
from ..protocol import Role
from .body import BlockingBody
from .connection import ClientDisconnected, RequestStream
from .environ import is_https, wsgi_environ
from .threadpool import Condition, ThreadPool

log = logging.getLogger("fcgibridge.app")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: Output bytes an app thread may have queued before it waits for the event loop.
HIGH_WATER = 256 * 1024

#: A body declared (CONTENT_LENGTH) up to this size is awaited whole before a call that
#: may run inline is placed (Rule 1): the web server sends it at once, and a call that
#: waits for it holds no thread. A larger one, or one of unknown length, starts in a
#: pool thread as it arrives, so the app reads it while it streams in.
INLINE_BODY = 256 * 1024

#: Sync mode: how long an inline response may stream on the event loop thread before
#: the rest is handed to the pool thread, where an abort does not wait for it (Rule 1).
SYNC_SLICE = 0.002

_INTERNAL_ERROR = error_response(500)


class Output(enum.Enum):
    """Where the output of one WSGI call is (Rules 1-5 above)."""

    QUEUED = "written by an app thread to the queue the event loop flushes"
    BLOCKED = "queued, and the web server is slow to read: the app thread waits"
    INLINE = "sync mode: the call runs on the event loop and writes to the stream"
    ENDED = "the last write is queued or sent"
    GONE = "the request was aborted or failed, or its connection closed: output is dropped"


# Plain names, quick to look up for every write (an enum member's attribute lookup is not).
_QUEUED = Output.QUEUED
_BLOCKED = Output.BLOCKED
_INLINE = Output.INLINE
_ENDED = Output.ENDED
_GONE = Output.GONE


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in blocks; ``close`` closes it."""

    def __init__(self, filelike: IO[bytes], blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while block := read(self.blksize):
            yield block


#: Per-thread resource usage: Linux has it (elsewhere any slow inline call counts as waiting).
_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)


class InlinePolicy:
    """When a call of the default mode runs inline on the event loop (Rule 1).

    A call handed to a pool thread costs two thread hand-offs, more than a fast app takes
    to answer; a call run inline holds up every other request of the worker while it
    runs. So calls go to the pool until :data:`STREAK` of them took under :data:`FAST`
    each, with no inline call too slow in between; then they run inline (while no pool thread is busy and the body
    is in; one call in :data:`PROBE_EVERY` runs inline as a trial meanwhile, and a trial
    that is not too slow counts as such a call too), until one takes longer than
    :data:`SLOW` and waited meanwhile (the thread
    gave up the CPU: a voluntary context switch; a call that was only preempted on a
    busy machine did not wait): that one is handed to the pool mid-way if it is
    streaming, and the pool takes every call again for a while (:data:`BACKOFF`,
    doubled at each such call, up to :data:`MAX_BACKOFF`). An app that waits for
    anything (a database, a sleep, another server) so keeps its threads.
    """

    FAST: Final = 0.001
    SLOW: Final = 0.002
    STREAK: Final = 50
    PROBE_EVERY: Final = 10
    BACKOFF: Final = 10.0
    MAX_BACKOFF: Final = 3600.0

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.inline = False  # calls may run inline now
        self._streak = 0  # calls in a row under FAST (pool) or not too slow (inline)
        self._placed = 0  # calls placed while they go to the pool (for the trials)
        self._strikes = 0  # inline calls that took longer than SLOW
        self._retry_at = 0.0  # monotonic time before which calls stay in the pool
        self._lock = threading.Lock()  # pool threads report too

    def pool_call(self, seconds: float) -> None:
        """A call in a pool thread took ``seconds`` (called from that thread). A quick one
        counts towards the streak; a slow one proves nothing (it may have waited for the
        interpreter lock): only an inline call that waited ends the streak."""
        if seconds >= self.FAST:
            return
        with self._lock:
            self._streak += 1
            self._maybe_inline()

    def probe(self) -> bool:
        """While the calls go to the pool: may this one run inline, as a trial? (One in
        :data:`PROBE_EVERY`, outside a back-off.) Under load a quick call can take longer
        than FAST in a pool thread, waiting for the interpreter lock; inline it cannot."""
        self._placed += 1
        return self._placed % self.PROBE_EVERY == 0 and time.monotonic() >= self._retry_at

    def quick_inline_call(self) -> None:
        """An inline call (a trial or not) did not take too long (loop thread)."""
        with self._lock:
            self._streak += 1
            self._maybe_inline()

    def _maybe_inline(self) -> None:
        if self._streak >= self.STREAK and time.monotonic() >= self._retry_at:
            self.inline = True

    @staticmethod
    def waits() -> int:
        """How often this thread has given up the CPU so far (its voluntary context switches)."""
        return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw if _RUSAGE_THREAD is not None else 0

    def too_slow(self, started: float, waits: int) -> bool:
        """An inline call that began at ``started`` (``perf_counter``), when :meth:`waits`
        was ``waits``, took too long and waited: the pool takes the calls again (called
        from the loop thread)."""
        if time.perf_counter() - started <= self.SLOW:
            return False
        if _RUSAGE_THREAD is not None and self.waits() == waits:
            return False  # it ran the whole time, or was preempted: the pool would not help
        with self._lock:
            self.inline = False
            self._streak = 0
            self._strikes += 1
            backoff = min(self.MAX_BACKOFF, self.BACKOFF * 2 ** min(self._strikes - 1, 20))
            self._retry_at = time.monotonic() + backoff
        return True


class WSGIAdapter:
    """Serves a WSGI app: each request runs in a thread of the pool, or inline on the
    event loop (sync mode, and the default mode while the app answers fast)."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        threads: int = 8,
        root_path: str = "",
        spool_threshold: int,
        multiprocess: bool = False,
        sync: bool = False,
        inline: bool = True,
        buffering: bool = True,
    ) -> None:
        self.app = app
        #: A call is placed only once its whole body is in (--request-buffering), so a
        #: body that arrives slowly (or stops) holds no thread meanwhile.
        self.buffering = buffering
        self.root_path = root_path
        self.spool_threshold = spool_threshold
        threads = 1 if sync else threads
        self.executor = ThreadPool(threads)
        self.sync = sync
        self.busy = 0  # sync mode: calls handed to the pool and not finished (loop side)
        #: Default mode: when calls run inline (``--inline auto``; never with ``--inline never``).
        self.policy = InlinePolicy(inline and not sync)
        self.pool_busy = 0  # default mode with the policy: calls in pool threads (under _busy_lock)
        self._busy_lock = threading.Lock()
        self.base = {
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": threads > 1,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
        }

    def start(self, stream: RequestStream) -> WSGIRequest:
        loop = stream.loop
        request = WSGIRequest(self, stream, loop)
        if self.buffering and not request.body.complete:
            request.awaits_body = True  # Rule 1: end_body() places it
        else:
            self.place(request)
        return request

    def place(self, request: WSGIRequest) -> None:
        """Start ``request``'s call: in the pool, or, where calls may run inline, once
        the events of this read are handled (by then a small body, and the empty STDIN
        that ends it, has arrived in the same read): :meth:`WSGIRequest.dispatch`."""
        if self.sync or self.policy.enabled:
            request.loop.call_soon(request.dispatch)
        else:
            self.submit(request.run, request.loop)

    def may_run_inline(self) -> bool:
        """A call placed now may run inline, once its body is in (Rule 1): always in
        sync mode; in the default mode while the policy says so, or as its trial."""
        return self.sync or (self.policy.enabled and (self.policy.inline or self.policy.probe()))

    def runs_inline(self) -> bool:
        """Such a call whose body is in runs inline now: no other call is in the pool."""
        return self.busy == 0 if self.sync else self.pool_busy == 0

    def submit(self, call: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        """Run ``call`` in the pool (on ``loop``'s thread); sync mode counts it as busy until done."""
        if not self.sync:
            if self.policy.enabled:
                self._submit_timed(call)
            else:
                self.executor.submit(call)
            return
        self.busy += 1

        def counted() -> None:
            try:
                call()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody counts anymore
                    loop.call_soon_threadsafe(self._pool_done)

        self.executor.submit(counted)

    def _submit_timed(self, call: Callable[[], None]) -> None:
        """Default mode: run ``call`` in the pool, counted as busy (it reports its time
        to the policy itself: :meth:`WSGIRequest.run`)."""
        with self._busy_lock:
            self.pool_busy += 1

        def counted() -> None:
            try:
                call()
            finally:
                with self._busy_lock:
                    self.pool_busy -= 1

        self.executor.submit(counted)

    def _pool_done(self) -> None:
        self.busy -= 1

    @property
    def capacity(self) -> int:
        return 1 if self.sync else self.executor.size

    def close(self) -> None:
        self.executor.shutdown()

    async def drain(self, timeout: float) -> None:
        """Wait (off the loop) for the pool's threads to finish their calls."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)


class WSGIRequest:
    """One WSGI call. The loop side takes body bytes; the thread side runs the app."""

    def __init__(self, adapter: WSGIAdapter, stream: RequestStream, loop: asyncio.AbstractEventLoop) -> None:
        self.adapter = adapter
        self.stream = stream
        self.loop = loop
        self.body = BlockingBody(adapter.spool_threshold)
        if stream.role is Role.AUTHORIZER:
            self.body.end()  # spec 6.3: an authorizer gets no STDIN at all, not even the empty record
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.head_sent = False
        # output handed to the loop; the lock guards it and the queue (Rules 2-5)
        self.output = _QUEUED
        self._lock = Condition()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._scheduled = False  # a flush of the queue is scheduled on the loop
        self._app_status = 0
        self.thread_id = 0  # the thread running the app (the slow log prints its stack)
        self.started = 0.0  # perf_counter() when an inline call began (default mode)
        self.waits = 0  # the loop thread's voluntary context switches then
        self.awaits_body = False  # placed once its body is in (Rule 1)
        self.candidate: bool | None = None  # may run inline (decided when first placed)
        #: ``fcgi.data``: the FILTER role's data stream, spooled like the body; None for
        #: the other roles. Such a call never runs inline: its app would wait on the
        #: event loop thread for DATA that only that thread can feed.
        self.data: BlockingBody | None = None
        if stream.role is Role.FILTER:
            self.data = BlockingBody(adapter.spool_threshold)
            self.candidate = False

    # ------------------------------------------------ RequestHandler (loop side)

    def receive_body(self, data: bytes) -> None:
        try:
            self.body.feed(data)
        except OSError as exc:  # the spool file could not be made or written (disk full?)
            log.error("could not spool the body of %s: %s", self.stream.params.get("REQUEST_URI", "?"), exc)
            self.stream.fail(500, "Internal Server Error")

    def end_body(self) -> None:
        self.body.end()
        if self.awaits_body:  # Rule 1: the call waited for its body; place it now
            self.awaits_body = False
            self.adapter.place(self)

    def receive_data(self, data: bytes) -> None:
        """A piece of ``fcgi.data`` (FILTER role), spooled as :meth:`receive_body` does."""
        if self.data is None:
            return
        try:
            self.data.feed(data)
        except OSError as exc:
            log.error("could not spool the data of %s: %s", self.stream.params.get("REQUEST_URI", "?"), exc)
            self.stream.fail(500, "Internal Server Error")

    def end_data(self) -> None:
        if self.data is not None:
            self.data.end()

    def disconnect(self) -> None:
        self.body.abort()
        if self.data is not None:
            self.data.abort()
        with self._lock:
            self.output = _GONE  # Rule 5
            self._pending.clear()
            self._pending_size = 0
            self._lock.notify_all()

    def cancel(self) -> bool:
        return False  # a thread cannot be interrupted: its output is dropped from now on

    def current_stack(self) -> str | None:
        frame = sys._current_frames().get(self.thread_id) if self.thread_id else None
        return "".join(traceback.format_stack(frame)) if frame is not None else None

    # --------------------------------------------------------- app thread side

    def dispatch(self) -> None:
        """Loop side: run now, inline, or queue for the pool (Rule 1)."""
        if self.candidate is None:
            self.candidate = self.adapter.may_run_inline()
        if self.output is _GONE:  # refused or aborted before it started: the app need not run
            self.body.close()
        elif not self.candidate:
            self.adapter.submit(self.run, self.loop)
        elif not self.body.complete and self._small_body():
            self.awaits_body = True  # end_body() dispatches again
        elif self.body.complete and self.adapter.runs_inline():
            self.output = _INLINE  # Rule 1
            policy = self.adapter.policy
            if policy.enabled:
                self.started, self.waits = time.perf_counter(), policy.waits()
            self.run()
            if self.output is not _QUEUED and policy.enabled and not self._too_slow():
                policy.quick_inline_call()  # not handed off mid-way, nor slow
        else:
            self.adapter.submit(self.run, self.loop)

    def _small_body(self) -> bool:
        """A body small enough for the call to wait for before it is placed (:data:`INLINE_BODY`)."""
        length = self.stream.params.get("CONTENT_LENGTH", "")
        return length.isascii() and length.isdigit() and int(length) <= INLINE_BODY

    def run(self) -> None:
        """Call the app (in a pool thread, or inline on the loop in sync mode)."""
        self.thread_id = threading.get_ident()
        if self.output is _GONE:  # aborted (or refused) while waiting for a thread: the app need not run
            self.body.close()
            return
        policy = self.adapter.policy
        if self.output is _INLINE or not policy.enabled:
            self._guarded(self._call_app)
            return
        started = time.perf_counter()
        self._guarded(self._call_app)
        # From when the body was in: waiting for the web server to send it is not the app's time.
        policy.pool_call(time.perf_counter() - max(started, self.body.ended_at))

    def _guarded(self, work: Callable[[], bool]) -> None:
        """Run ``work`` (which returns True when it handed the rest to another thread),
        turning app errors into a 500 or an ended stream."""
        stream = self.stream
        handed_off = False
        try:
            handed_off = work()
        except ClientDisconnected:
            log.info("client went away during %s", stream.params.get("REQUEST_URI", "?"))
        except BadAppResponse as exc:  # the app's mistake, named: no traceback into the server
            log.error("app error: %s: %s %s", exc, stream.params.get("REQUEST_METHOD", "?"),
                      stream.params.get("REQUEST_URI", "?"))
            with contextlib.suppress(ClientDisconnected):
                self._fail()
        except BaseException:
            log.exception("error in WSGI app serving %s", stream.params.get("REQUEST_URI", "?"))
            with contextlib.suppress(ClientDisconnected):
                self._fail()
        finally:
            if not handed_off:
                self.body.close()
                if self.data is not None:
                    self.data.close()

    def _call_app(self) -> bool:
        params = self.stream.params
        environ = wsgi_environ(params, self.stream.role, self.adapter.root_path)
        environ.update(self.adapter.base)
        environ["wsgi.url_scheme"] = "https" if is_https(params) else "http"
        environ["wsgi.input"] = self.body
        if self.data is not None:
            environ["fcgi.data"] = self.data
        result = self.adapter.app(environ, self.start_response)
        if type(result) is list and len(result) == 1 and self.status is not None and not self.head_sent:
            # The usual answer, ``[body]``: head, body and END_REQUEST leave in one write.
            body: object = result[0]  # not checked as bytes at the assignment (compiled): below
            if type(body) is bytes and len(body) <= HIGH_WATER:
                if self.output is _INLINE:  # the head in a record of its own: the body is not copied
                    self.output = _ENDED  # Rule 4
                    self.head_sent = True
                    self.stream.end(body, self._app_status, head=self._head())
                else:
                    self._send(self._head() + body, end=True)
                return False
        return self._iterate(result, iter(result))

    def _iterate(self, result: Iterable[object], chunks: Iterator[object]) -> bool:
        """Send the app's body chunks, close its iterable, end the request. Returns True
        if it handed the rest to the pool thread instead (inline calls, Rule 1).

        In sync mode a response still streaming :data:`SYNC_SLICE` after its iteration
        began is handed to the pool thread too, as one the web server reads slowly is: on the
        event loop thread, an app that waits between chunks would keep the worker from
        reading anything meanwhile, an FCGI_ABORT_REQUEST included, which is then
        answered only once the whole response is out. In the pool thread the loop reads
        it at once, sends END_REQUEST, and the app's next write raises ClientDisconnected
        (its iterable is closed). What cannot be cut short is a wait inside one step of
        the app on the loop thread (the call itself, or the ``next()`` of one chunk, in
        the slice): the abort is answered when that step returns (or when the worker is
        killed past its time limit). Responses of one chunk, and quick streams, stay on
        the loop, with --sync's speed."""
        handed_off = False
        slice_end = time.perf_counter() + SYNC_SLICE if self.output is _INLINE and self.adapter.sync else 0.0
        try:
            for item in chunks:  # objects: compiled, a str would fail as bytes before the check
                chunk = item if type(item) is bytes else body_bytes(item, "the WSGI response iterable yielded")
                if chunk:
                    self._write(chunk)
                if self.output is _INLINE and (not self.stream.writable or self._too_slow()
                                               or (slice_end and time.perf_counter() > slice_end)):
                    handed_off = True
                    self._hand_off(result, chunks)
                    return True
        finally:
            close = getattr(result, "close", None)
            if not handed_off and close is not None:
                close()
        if self.status is None:
            raise RuntimeError("the WSGI app returned without calling start_response")
        self._send(b"" if self.head_sent else self._head(), end=True)
        return False

    def _too_slow(self) -> bool:
        """Default mode: this inline call has run too long; the rest goes to the pool."""
        policy = self.adapter.policy
        return policy.enabled and policy.too_slow(self.started, self.waits)

    def _hand_off(self, result: Iterable[object], chunks: Iterator[object]) -> None:
        """Sync mode: the web server reads slower than the app writes; go on in the pool
        thread, which can wait for it, instead of buffering the rest in memory (Rule 1)."""
        self.output = _QUEUED
        self.adapter.submit(lambda: self._guarded(lambda: self._iterate(result, chunks)), self.loop)

    def _fail(self) -> None:
        """A 500 if no byte of the response was written yet, else the response cut short."""
        self._app_status = 1
        self._send(b"" if self.head_sent else _INTERNAL_ERROR, end=True)

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        if (type(status) is not str or len(status) < 4 or not status[:3].isascii() or not status[:3].isdigit()
                or status[3] != " " or not status_in_range(int(status[:3]))):
            raise BadAppResponse(f"the WSGI status must be a str like '200 OK' (100 to 599), not {status!r}")
        if not isinstance(headers, (list, tuple)):
            raise BadAppResponse(f"the WSGI headers must be a list of (str, str) tuples, not {type(headers).__name__}")
        for header in headers:
            if (not isinstance(header, (tuple, list)) or len(header) != 2 or type(header[0]) is not str
                    or type(header[1]) is not str):
                raise BadAppResponse(f"the WSGI headers must be (str, str) tuples, not {header!r}")
        self.status = status
        self.headers = headers
        return self.write

    def _head(self) -> bytes:
        """The CGI head for the status and headers given to start_response (latin-1, PEP 3333)."""
        assert self.status is not None
        try:
            headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers]
            return format_head(self.status, headers)
        except UnicodeEncodeError as exc:  # a header, or the status line
            raise BadAppResponse(f"a WSGI status or header must be latin-1 (PEP 3333), not {exc.object!r}") from None
        except ValueError:
            raise BadAppResponse("a WSGI header name or value contains a line break") from None

    def write(self, data: object) -> None:
        """The ``write`` callable start_response returns (PEP 3333): bytes only (checked
        here, so ``data`` is an object: compiled, a ``bytes`` argument is checked first)."""
        self._write(data if type(data) is bytes else body_bytes(data, "the WSGI write() callable was given"))

    def _write(self, data: bytes) -> None:
        """Where every body chunk goes (checked to be bytes before)."""
        if self.status is None:
            raise RuntimeError("write() before start_response()")
        if not self.head_sent:
            data = self._head() + data
            self.head_sent = True
        self._send(data)

    def _send(self, data: bytes, end: bool = False) -> None:
        if self.output is _INLINE:
            self._send_inline(data, end)
            return
        with self._lock:
            if self.output is _GONE:
                raise ClientDisconnected("the request was aborted or its connection closed")
            if end:
                self.output = _ENDED  # Rule 4
                self.head_sent = True
            if data:
                self._pending.append(data)
                self._pending_size += len(data)
            if not self._scheduled:  # Rule 2
                try:
                    self.loop.call_soon_threadsafe(self._flush)
                except RuntimeError:  # the event loop is closed: the worker stopped
                    self.output = _GONE
                    raise ClientDisconnected("the server stopped") from None
                self._scheduled = True
            # Rules 2 and 3; GONE empties the queue, so it ends the wait too (Rule 5).
            while not end and (self._pending_size > HIGH_WATER or self.output is _BLOCKED):
                self._lock.wait()
            if self.output is _GONE:  # aborted while waiting for the web server to read
                raise ClientDisconnected("the request was aborted or its connection closed")

    def _send_inline(self, data: bytes, end: bool) -> None:
        """Sync mode, on the loop thread: straight to the stream (a GONE call never gets here)."""
        if end:
            self.output = _ENDED  # Rule 4
            self.head_sent = True
            self.stream.end(data, self._app_status)
        elif data:
            self.stream.write(data)

    # -------------------------------------------------------------- loop side

    def _flush(self) -> None:
        """Write all that is queued at once (Rule 3), or end the request with it (Rule 4)."""
        with self._lock:
            parts, self._pending, self._pending_size = self._pending, [], 0
            self._scheduled = False
            output = self.output
        if output is _GONE:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        stream = self.stream
        try:
            if output is _ENDED:
                stream.end(data, self._app_status)
            else:
                stream.write(data)
        except ClientDisconnected:
            self.disconnect()
            return
        if output is not _ENDED and not stream.writable:
            with self._lock:
                if self.output is _QUEUED:
                    self.output = _BLOCKED
            self.loop.create_task(self._unblock())
        else:
            with self._lock:
                self._lock.notify_all()

    async def _unblock(self) -> None:
        await self.stream.drain()
        with self._lock:
            if self.output is _BLOCKED:
                self.output = _QUEUED
            self._lock.notify_all()
