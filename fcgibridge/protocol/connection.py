"""The two roles of a FastCGI connection, without any I/O.

:class:`ApplicationConnection` is the side a web server talks to (fcgibridge's server);
:class:`ClientConnection` is the web server's side (fcgibridge's client). Both take bytes
with ``receive_data`` and return events; their ``send_*`` methods return the bytes to
write. Neither knows about sockets, threads or asyncio.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from . import records
from .constants import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    MAX_KNOWN_TYPE,
    NULL_REQUEST_ID,
    ProtocolStatus,
    RecordType,
    Role,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    BadRecord,
    Event,
    RequestAborted,
    RequestBody,
    RequestBodyEnd,
    RequestData,
    RequestDataEnd,
    RequestEnded,
    RequestRejected,
    RequestStarted,
    Stderr,
    Stdout,
    UnknownTypeResult,
    ValuesResult,
)
from .state import (
    DRAIN_ON_END,
    FILTER_TRANSITIONS,
    SILENT_STATES,
    TRANSITIONS,
    WRITABLE_STATES,
    RequestState,
    Step,
)

#: Default bound on the PARAMS stream of one request (nginx sends about 1 KiB; long
#: cookies and URLs push it up, but nothing legitimate comes near this).
DEFAULT_MAX_PARAMS_SIZE = 1024 * 1024

#: Output larger than this is handed back in pieces (``*_parts``), not copied into one.
LARGE_OUTPUT = 16 * 1024

#: Bound on the GET_VALUES record content we accept (it lists names only).
MAX_MANAGEMENT_SIZE = 4096

# Plain ints for the per-record hot path (class attribute access on an Enum is slow).
_BEGIN_REQUEST = int(RecordType.BEGIN_REQUEST)
_ABORT_REQUEST = int(RecordType.ABORT_REQUEST)
_MAX_KNOWN_TYPE = int(MAX_KNOWN_TYPE)
_AUTHORIZER = int(Role.AUTHORIZER)
_FILTER = int(Role.FILTER)

_APP_TYPES = frozenset({RecordType.BEGIN_REQUEST, RecordType.ABORT_REQUEST, RecordType.PARAMS,
                        RecordType.STDIN, RecordType.DATA})


class _Side:
    """What both roles share: bytes in, events out, and errors that are final."""

    def __init__(self) -> None:
        self._reader = records.RecordReader()
        self._error: RemoteProtocolError | None = None

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; return the events they complete.

        Raises :class:`RemoteProtocolError` when the peer broke the protocol (bad version,
        impossible lengths); the connection should then be closed, and every later call
        raises the same error again.
        """
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        try:
            return self._receive(data)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _receive(self, data: bytes) -> list[Event]:
        raise NotImplementedError


class _AppRequest:
    """One active request, as the core tracks it."""

    __slots__ = ("body_pending", "keep_conn", "params", "role", "state", "stderr_open", "stdout_open", "table")

    def __init__(self, role: int, keep_conn: bool) -> None:
        self.role = role
        #: The state rules of its role: a filter reads DATA after STDIN (Rule 6).
        self.table = FILTER_TRANSITIONS if role == _FILTER else TRANSITIONS
        self.keep_conn = keep_conn
        self.state = RequestState.PARAMS
        self.params = bytearray()
        self.stdout_open = False
        self.stderr_open = False
        #: The web server may still send STDIN (Rule 4): until the empty STDIN (a filter:
        #: the empty DATA), and never for an authorizer (spec 6.3 sends it none).
        self.body_pending = role != _AUTHORIZER


class ApplicationConnection(_Side):
    """The application role: what a FastCGI server speaks to its web server.

    Answers management records (GET_VALUES, unknown types), impossible requests
    (unknown role, too many requests) and requests aborted before their PARAMS ended
    by itself; their replies wait in :meth:`data_to_send`. Everything else becomes
    events for the caller. ``roles`` are the roles it plays: RESPONDER and AUTHORIZER
    unless told; a caller that can serve the FILTER role's DATA stream
    (:class:`RequestData`) adds ``Role.FILTER``.
    """

    def __init__(
        self,
        *,
        max_conns: int = 1,
        max_reqs: int = 1,
        mpxs_conns: bool = True,
        roles: Collection[Role] = (Role.RESPONDER, Role.AUTHORIZER),
        max_params_size: int = DEFAULT_MAX_PARAMS_SIZE,
    ) -> None:
        self.max_conns = max_conns
        self.max_reqs = max_reqs
        self.mpxs_conns = mpxs_conns
        self.roles = frozenset(roles)
        self.max_params_size = max_params_size
        super().__init__()
        self._requests: dict[int, _AppRequest] = {}
        #: How many of ``_requests`` are DRAINING (Rule 5: they do not count against the
        #: limits). A count, so that admitting a request does not walk every draining one:
        #: a web server that leaves thousands of bodies unfinished made each BEGIN_REQUEST
        #: cost a pass over all of them.
        self._draining = 0
        self._replies: list[bytes] = []
        self._closing = False

    # ----------------------------------------------------------------- state queries

    @property
    def should_close(self) -> bool:
        """True once a request without KEEP_CONN has ended and nothing is left in flight.

        The spec: "If FCGI_KEEP_CONN is zero, the application closes the connection
        after responding to this request."
        """
        return self._closing and not self._requests

    @property
    def active_requests(self) -> int:
        """Requests not yet ended by us, plus ended ones still draining their body."""
        return len(self._requests)

    def state_of(self, request_id: int) -> RequestState | None:
        """The state of ``request_id``, or None when it is inactive."""
        request = self._requests.get(request_id)
        return request.state if request else None

    # ---------------------------------------------------------------------- input

    def _receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        requests = self._requests
        for rtype, request_id, content in self._reader.feed_raw(data):
            if request_id == NULL_REQUEST_ID:
                self._management(rtype, content)
            elif rtype == _BEGIN_REQUEST:
                self._begin(request_id, content, events)
            elif rtype in _APP_TYPES or not 0 < rtype <= _MAX_KNOWN_TYPE:
                request = requests.get(request_id)
                if request is not None:  # Rule 1: inactive ids are ignored
                    self._step(request_id, request, rtype, content, events)
            else:
                raise RemoteProtocolError(f"record type {rtype} is sent by applications, not web servers")
        return events

    def data_to_send(self) -> bytes:
        """Replies the core wrote by itself (management answers, rejected requests)."""
        if not self._replies:
            return b""
        out = b"".join(self._replies)
        self._replies.clear()
        return out

    def _management(self, rtype: int, content: bytes) -> None:
        if rtype in _APP_TYPES:
            raise RemoteProtocolError(f"{RecordType(rtype).name} record with request id 0")
        if len(content) > MAX_MANAGEMENT_SIZE:
            raise RemoteProtocolError(f"management record of {len(content)} bytes")
        if self._closing:
            return
        if rtype == RecordType.GET_VALUES:
            asked = records.decode_pairs(content)
            known = self._values()
            answer = {name: known[name] for name in asked if name in known}
            self._replies.append(
                records.pack_record(RecordType.GET_VALUES_RESULT, NULL_REQUEST_ID, records.encode_pairs(answer))
            )
        else:
            self._replies.append(records.pack_unknown_type(rtype))

    def _values(self) -> dict[str, str]:
        return {
            FCGI_MAX_CONNS: str(self.max_conns),
            FCGI_MAX_REQS: str(self.max_reqs),
            FCGI_MPXS_CONNS: "1" if self.mpxs_conns else "0",
        }

    def _begin(self, request_id: int, content: bytes, events: list[Event]) -> None:
        role, keep_conn = records.parse_begin_request(content)
        existing = self._requests.get(request_id)
        if existing is not None:
            if existing.state is RequestState.DRAINING:
                del self._requests[request_id]  # Rule 5: ended, so the id is free again
                self._draining -= 1
            else:
                if existing.state not in SILENT_STATES:
                    reason = "BEGIN_REQUEST for an active request"
                    self._fail(request_id, existing, RecordType.BEGIN_REQUEST, reason, events)
                return
        if self._closing:
            return
        status = self._admission(role)
        if status is not None:
            self._replies.append(records.pack_end_request(request_id, 0, status))
            events.append(RequestRejected(request_id, status, role))
            if not keep_conn:
                self._closing = True
            return
        self._requests[request_id] = _AppRequest(role, keep_conn)

    def _admission(self, role: int) -> ProtocolStatus | None:
        if role not in self.roles:
            return ProtocolStatus.UNKNOWN_ROLE
        if not self._requests:
            return None
        # Rule 5: a draining request is over as far as the web server knows
        running = len(self._requests) - self._draining
        if running >= self.max_reqs or (running and not self.mpxs_conns):
            return ProtocolStatus.OVERLOADED if self.mpxs_conns else ProtocolStatus.CANT_MPX_CONN
        return None

    def _step(self, request_id: int, request: _AppRequest, rtype: int, content: bytes, events: list[Event]) -> None:
        empty = not content or rtype == _ABORT_REQUEST
        # IntEnum members hash and compare as their ints, so the table takes the raw type.
        row = request.table.get((request.state, rtype, empty))
        if row is None:
            known = 0 < rtype <= _MAX_KNOWN_TYPE
            if request.state not in SILENT_STATES:
                name = RecordType(rtype).name if known else f"type {rtype}"
                self._fail(request_id, request, rtype, f"{name} record while {request.state.value}", events)
            return
        step, next_state = row
        if next_state is None:
            del self._requests[request_id]
            if request.state is RequestState.DRAINING:  # the one way out of DRAINING
                self._draining -= 1
        else:
            request.state = next_state
        if step is Step.PARAMS_DATA:
            request.params += content
            if len(request.params) > self.max_params_size:
                request.params = bytearray()
                self._fail(request_id, request, rtype, f"PARAMS larger than {self.max_params_size} bytes", events)
        elif step is Step.PARAMS_END:
            encoded, request.params = bytes(request.params), bytearray()
            try:
                params = records.decode_pairs(encoded)
            except RemoteProtocolError as exc:  # Rule 2: the framing is intact, fail this request only
                self._fail(request_id, request, rtype, f"malformed PARAMS: {exc}", events)
                return
            events.append(RequestStarted(request_id, _role(request.role), request.keep_conn, params))
        elif step is Step.BODY_DATA:
            events.append(RequestBody(request_id, content))
        elif step is Step.BODY_END:
            request.body_pending = request.role == _FILTER  # Rule 6: DATA follows
            events.append(RequestBodyEnd(request_id))
        elif step is Step.DATA_DATA:
            events.append(RequestData(request_id, content))
        elif step is Step.DATA_END:
            request.body_pending = False
            events.append(RequestDataEnd(request_id))
        elif step is Step.BODY_CLOSED:
            request.body_pending = False
        elif step is Step.ABORT:
            events.append(RequestAborted(request_id))
        elif step is Step.ABORT_UNSTARTED:
            self._answer_abort(request_id, request)

    def _answer_abort(self, request_id: int, request: _AppRequest) -> None:
        """Rule 3: a request aborted before its PARAMS ended was never given to the
        caller, so the core sends its END_REQUEST (the id is inactive already)."""
        self._replies.append(records.pack_end_request(request_id, 1, ProtocolStatus.REQUEST_COMPLETE))
        if not request.keep_conn:
            self._closing = True

    def _fail(self, request_id: int, request: _AppRequest, rtype: int, reason: str, events: list[Event]) -> None:
        request.state = RequestState.FAILED
        events.append(BadRecord(request_id, rtype, reason))

    # --------------------------------------------------------------------- output

    def _writable(self, request_id: int, what: str) -> _AppRequest | None:
        request = self._requests.get(request_id)
        if request is None:
            raise LocalProtocolError(f"{what} for request {request_id}, which is not active (ended already?)")
        if request.state in WRITABLE_STATES:
            return request
        if request.state is RequestState.ABORTED:
            return None  # the web server gave up on it: output is dropped
        raise LocalProtocolError(f"{what} for request {request_id} while {request.state.value}")

    def send_stdout(self, request_id: int, data: bytes | memoryview) -> bytes:
        """Bytes carrying ``data`` as FCGI_STDOUT (split into records of at most 64 KiB)."""
        return _joined(self.send_stdout_parts(request_id, data))

    def send_stdout_parts(self, request_id: int, data: bytes | memoryview) -> list[bytes | memoryview]:
        """:meth:`send_stdout` as pieces to write one after the other: ``data`` larger
        than :data:`LARGE_OUTPUT` is not copied."""
        request = self._writable(request_id, "STDOUT")
        if request is None or not data:
            return []
        request.stdout_open = True
        if len(data) > LARGE_OUTPUT:
            return records.stream_parts(RecordType.STDOUT, request_id, data)
        return [records.pack_stream(RecordType.STDOUT, request_id, data)]

    def send_stderr(self, request_id: int, data: bytes | memoryview) -> bytes:
        """Bytes carrying ``data`` as FCGI_STDERR: the web server logs it."""
        request = self._writable(request_id, "STDERR")
        if request is None or not data:
            return b""
        request.stderr_open = True
        return records.pack_stream(RecordType.STDERR, request_id, data)

    def end_request(
        self,
        request_id: int,
        app_status: int = 0,
        *,
        stdout: bytes | memoryview = b"",
        protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE,
    ) -> bytes:
        """Bytes ending the request: the last ``stdout`` if any, the closing empty
        STDOUT (and STDERR, if used) records, then END_REQUEST — ready for one write.

        After this the request id is inactive (or draining its body, Rule 4); nothing
        more may be sent for it.
        """
        return _joined(self.end_request_parts(request_id, app_status, stdout=stdout, protocol_status=protocol_status))

    def end_request_parts(
        self,
        request_id: int,
        app_status: int = 0,
        *,
        stdout: bytes | memoryview = b"",
        head: bytes = b"",
        protocol_status: ProtocolStatus = ProtocolStatus.REQUEST_COMPLETE,
    ) -> list[bytes | memoryview]:
        """:meth:`end_request` as pieces to write one after the other (``writelines``):
        ``stdout`` larger than :data:`LARGE_OUTPUT` is not copied. ``head`` goes out
        before ``stdout`` (a response head: in a record of its own before a large
        ``stdout``, joined to a small one)."""
        if head:
            if len(stdout) <= LARGE_OUTPUT:
                stdout, head = head + stdout, b""
            else:
                head = records.pack_stream(RecordType.STDOUT, request_id, head)
        request = self._requests.get(request_id)
        if request is None:
            raise LocalProtocolError(f"END_REQUEST for request {request_id}, which is not active (ended already?)")
        if request.state is RequestState.DRAINING:
            raise LocalProtocolError(f"END_REQUEST for request {request_id}, which was ended already")
        out: list[bytes | memoryview]
        if request.state is RequestState.ABORTED:
            out = [records.pack_end_request(request_id, app_status, protocol_status)]
        elif request.stderr_open:
            out = [head, *records.stream_parts(RecordType.STDOUT, request_id, stdout),
                   records.pack_record(RecordType.STDOUT, request_id),
                   records.pack_record(RecordType.STDERR, request_id),
                   records.pack_end_request(request_id, app_status, protocol_status)]
        else:
            tail = records.pack_end_of_response(request_id, app_status, protocol_status)
            if len(stdout) > LARGE_OUTPUT:
                out = records.stream_parts(RecordType.STDOUT, request_id, stdout)
                if head:
                    out.insert(0, head)
                out.append(tail)
            else:
                out = [records.pack_stream(RecordType.STDOUT, request_id, stdout) + tail if stdout else tail]
        if request.state in DRAIN_ON_END and request.body_pending:
            request.state = RequestState.DRAINING  # Rule 4
            self._draining += 1
        else:
            del self._requests[request_id]
        if not request.keep_conn:
            self._closing = True
        return out


def _joined(parts: list[bytes | memoryview]) -> bytes:
    if len(parts) == 1 and type(parts[0]) is bytes:
        return parts[0]
    return b"".join(parts)


_ROLES = {int(role): role for role in Role}


def _role(value: int) -> Role:
    return _ROLES[value]


# ----------------------------------------------------------------------- client role


@dataclass(slots=True)
class _ClientRequest:
    stdin_open: bool = True
    #: The FILTER role's DATA stream may still be sent (spec 6.4: after the whole STDIN).
    data_open: bool = False


class ClientConnection(_Side):
    """The client role: what a web server speaks to a FastCGI application."""

    def __init__(self) -> None:
        super().__init__()
        self._requests: dict[int, _ClientRequest] = {}
        self._freed_ids: list[int] = []  # a heap of ended ids below _highest_id
        self._highest_id = 0

    @property
    def active_requests(self) -> int:
        return len(self._requests)

    def is_active(self, request_id: int) -> bool:
        return request_id in self._requests

    def _new_id(self) -> int:
        # Spec 3.3: "The Web server attempts to keep FastCGI request IDs small", so an
        # application may track them in a short array: take the lowest free id. Every
        # freed id is below the high-water mark, so the heap's smallest is the lowest.
        if self._freed_ids:
            return heapq.heappop(self._freed_ids)
        self._highest_id += 1
        return self._highest_id

    def begin_request(
        self,
        params: Mapping[str, str | bytes] | Iterable[tuple[str | bytes, str | bytes]],
        *,
        role: Role = Role.RESPONDER,
        keep_conn: bool = True,
    ) -> tuple[int, bytes]:
        """Start a request: returns its id and the BEGIN_REQUEST + whole PARAMS bytes."""
        if len(self._requests) >= 0xFFFF:
            raise LocalProtocolError("all 65535 request ids are in use on this connection")
        request_id = self._new_id()
        self._requests[request_id] = _ClientRequest(data_open=role == Role.FILTER)
        data = records.pack_begin_request(request_id, role, keep_conn) + records.pack_params(request_id, params)
        return request_id, data

    def _open_stdin(self, request_id: int) -> _ClientRequest:
        request = self._requests.get(request_id)
        if request is None:
            raise LocalProtocolError(f"STDIN for request {request_id}, which is not active")
        if not request.stdin_open:
            raise LocalProtocolError(f"STDIN for request {request_id} after its body was closed")
        return request

    def send_stdin(self, request_id: int, data: bytes | memoryview) -> bytes:
        """Bytes carrying a piece of the request body."""
        self._open_stdin(request_id)
        return records.pack_stream(RecordType.STDIN, request_id, data)

    def end_stdin(self, request_id: int, data: bytes | memoryview = b"") -> bytes:
        """Bytes carrying the last piece of the body (if any) and the closing empty STDIN."""
        request = self._open_stdin(request_id)
        request.stdin_open = False
        return records.pack_stream(RecordType.STDIN, request_id, data) + records.pack_record(
            RecordType.STDIN, request_id
        )

    def _open_data(self, request_id: int) -> _ClientRequest:
        request = self._requests.get(request_id)
        if request is None:
            raise LocalProtocolError(f"DATA for request {request_id}, which is not active")
        if not request.data_open:
            raise LocalProtocolError(f"DATA for request {request_id}: not a FILTER request, or its DATA was closed")
        if request.stdin_open:
            raise LocalProtocolError(f"DATA for request {request_id} before its body was closed (end_stdin)")
        return request

    def send_data(self, request_id: int, data: bytes | memoryview) -> bytes:
        """Bytes carrying a piece of a FILTER request's data stream (FCGI_DATA), which
        follows the whole body (spec 6.4)."""
        self._open_data(request_id)
        return records.pack_stream(RecordType.DATA, request_id, data)

    def end_data(self, request_id: int, data: bytes | memoryview = b"") -> bytes:
        """Bytes carrying the last piece of the data stream (if any) and the closing empty DATA."""
        request = self._open_data(request_id)
        request.data_open = False
        return records.pack_stream(RecordType.DATA, request_id, data) + records.pack_record(
            RecordType.DATA, request_id
        )

    def abort_request(self, request_id: int) -> bytes:
        """Bytes asking the application to abort the request (it still answers END_REQUEST)."""
        if request_id not in self._requests:
            raise LocalProtocolError(f"ABORT_REQUEST for request {request_id}, which is not active")
        return records.pack_record(RecordType.ABORT_REQUEST, request_id)

    def get_values(self, names: Iterable[str]) -> bytes:
        """Bytes of a GET_VALUES query; the answer arrives as a :class:`ValuesResult`."""
        content = records.encode_pairs([(name, b"") for name in names])
        return records.pack_record(RecordType.GET_VALUES, NULL_REQUEST_ID, content)

    def _receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for rtype, request_id, content in self._reader.feed_raw(data):
            if request_id == NULL_REQUEST_ID:
                events.append(self._management(rtype, content))
            elif request_id not in self._requests:
                continue  # a stray record for a request we no longer track
            elif rtype == RecordType.STDOUT:
                if content:
                    events.append(Stdout(request_id, content))
            elif rtype == RecordType.STDERR:
                if content:
                    events.append(Stderr(request_id, content))
            elif rtype == RecordType.END_REQUEST:
                body = records.parse_end_request(content)
                del self._requests[request_id]
                heapq.heappush(self._freed_ids, request_id)
                events.append(RequestEnded(request_id, body.app_status, body.protocol_status))
            else:
                raise RemoteProtocolError(f"record type {rtype} for request {request_id} from an application")
        return events

    @staticmethod
    def _management(rtype: int, content: bytes) -> Event:
        if rtype == RecordType.GET_VALUES_RESULT:
            return ValuesResult(records.decode_pairs(content))
        if rtype == RecordType.UNKNOWN_TYPE:
            return UnknownTypeResult(records.parse_unknown_type(content))
        raise RemoteProtocolError(f"management record of type {rtype} from an application")
