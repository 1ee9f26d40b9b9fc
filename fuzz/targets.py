"""The fuzz targets: one function per parser, taking arbitrary bytes.

Each ``check_*`` function returns normally or raises. What it may see from the core is
the documented protocol error, :class:`RemoteProtocolError` from ``receive_data`` or
``decode_pairs`` (the peer's bytes are not FastCGI); anything else escaping the core
(IndexError, struct.error, a LocalProtocolError for a call the docs allow, ...) is a
finding, and so is a broken invariant, raised here as :class:`Finding`.

The engines (atheris, hypothesis) live in ``fuzz/__main__.py``; this module needs
neither, so the tests and ``python -m fuzz replay`` can run the same checks.

Input layout of the connection targets: byte 0 configures the connection (limits,
roles, how the app side answers), byte 1 seeds how the stream is cut into reads, the
rest is the stream. The records target uses byte 0 as a request id and the rest as
both a name-value block and a record stream.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fcgibridge.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    HEADER_LEN,
    MAX_CONTENT_LEN,
    ApplicationConnection,
    BadRecord,
    ClientConnection,
    Event,
    ProtocolStatus,
    RecordReader,
    RecordType,
    RemoteProtocolError,
    RequestAborted,
    RequestBody,
    RequestBodyEnd,
    RequestData,
    RequestDataEnd,
    RequestEnded,
    RequestRejected,
    RequestStarted,
    RequestState,
    Role,
    Stderr,
    Stdout,
    UnknownTypeResult,
    ValuesResult,
    decode_pairs,
    encode_pairs,
    pack_record,
    pack_stream,
    records,
)
from fcgibridge.protocol.connection import LARGE_OUTPUT

#: The largest record on the wire: header, 65535 bytes of content, 255 of padding.
MAX_RECORD = HEADER_LEN + MAX_CONTENT_LEN + 255

#: Above this request id the app target does not replay its output through the client
#: core (the client hands out ids from 1 up, so reaching id N costs N begin_request calls).
REPLAY_MAX_ID = 256


class Finding(Exception):
    """An invariant of the protocol core does not hold for this input."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Finding(message)


# ------------------------------------------------------------------ cutting input


def cuts(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut into reads of mixed sizes, the same ones for the same ``seed``:
    one byte, a header and a bit, and whole socket reads."""
    sizes = (1, 2, 3, 7, 8, 9, 15, 16, 17, 64, 1000, 65536)
    rng = random.Random(seed)
    pieces: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = rng.choice(sizes)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@dataclass
class Outcome:
    """What feeding a stream to a fresh connection gave, to compare two ways of cutting it."""

    events: list[Event]
    replies: bytes
    failed: bool
    active: int
    closing: bool = False


def agree(coarse: Outcome, fine: Outcome, how: str) -> None:
    """The same stream cut two ways gives the same result. After a protocol error the
    coarser feed may have lost the events of its last read (``receive_data`` raises
    instead of returning them), so its events and replies need only be a prefix."""
    expect(coarse.failed == fine.failed, f"{how}: failed={coarse.failed}, byte by byte failed={fine.failed}")
    if not fine.failed:
        expect(coarse.events == fine.events, f"{how}: events differ from byte by byte:\n{coarse.events}\n{fine.events}")
        expect(coarse.replies == fine.replies, f"{how}: replies differ from byte by byte")
        expect(coarse.active == fine.active, f"{how}: {coarse.active} active requests, byte by byte {fine.active}")
        expect(coarse.closing == fine.closing, f"{how}: should_close differs from byte by byte")
        return
    expect(fine.events[: len(coarse.events)] == coarse.events, f"{how}: events are not a prefix of byte by byte's")
    expect(fine.replies.startswith(coarse.replies), f"{how}: replies are not a prefix of byte by byte's")


def stays_broken(receive: Callable[[bytes], list[Event]]) -> None:
    """Docs: after a RemoteProtocolError every later call raises it again."""
    try:
        receive(bytes((1, RecordType.GET_VALUES, 0, 0, 0, 0, 0, 0)))
    except RemoteProtocolError:
        return
    raise Finding("receive_data accepted bytes after a RemoteProtocolError")


# ----------------------------------------------------------------- record framing


def spans(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """Every record of ``data`` as ``(type, request_id, content, raw bytes)``; it must
    be well-formed FastCGI that ends on a record boundary (our own output)."""
    out: list[tuple[int, int, bytes, bytes]] = []
    pos = 0
    while pos < len(data):
        expect(len(data) - pos >= HEADER_LEN, "output ends inside a record header")
        expect(data[pos] == 1, f"output record with version {data[pos]}")
        length = (data[pos + 4] << 8) | data[pos + 5]
        stop = pos + HEADER_LEN + length + data[pos + 6]
        expect(stop <= len(data), "output ends inside a record")
        out.append((data[pos + 1], (data[pos + 2] << 8) | data[pos + 3],
                    data[pos + HEADER_LEN : pos + HEADER_LEN + length], data[pos:stop]))
        pos = stop
    reader = RecordReader()
    expect([tuple(r) for r in reader.feed(data)] == [s[:3] for s in out], "RecordReader reads our output differently")
    expect(reader.pending == 0, "RecordReader holds back part of our output")
    return out


def request_ids(stream: bytes) -> set[int]:
    """The request ids of the records in ``stream`` up to where it stops being FastCGI."""
    ids: set[int] = set()
    reader = RecordReader()
    try:
        for _, request_id, _ in reader.feed_raw(stream):
            ids.add(request_id)
    except RemoteProtocolError:
        pass
    return ids - {0}


# ============================================================ application role


@dataclass(frozen=True)
class AppConfig:
    """The connection and the app's habits, from the first byte of the input."""

    max_reqs: int
    mpxs_conns: bool
    roles: frozenset[Role]
    max_params_size: int
    policy: int

    @classmethod
    def from_byte(cls, byte: int) -> AppConfig:
        roles = frozenset(Role) if byte & 8 else frozenset({Role.RESPONDER, Role.AUTHORIZER})
        return cls(max_reqs=(1, 2, 3, 100)[byte & 3], mpxs_conns=bool(byte & 4), roles=roles,
                   max_params_size=256 if byte & 16 else 1024 * 1024, policy=byte >> 5)

    def connection(self) -> ApplicationConnection:
        return ApplicationConnection(max_conns=7, max_reqs=self.max_reqs, mpxs_conns=self.mpxs_conns,
                                     roles=self.roles, max_params_size=self.max_params_size)

    def values(self) -> dict[str, str]:
        return {FCGI_MAX_CONNS: "7", FCGI_MAX_REQS: str(self.max_reqs), FCGI_MPXS_CONNS: str(int(self.mpxs_conns))}


def app_passive(config: AppConfig, pieces: Sequence[bytes]) -> Outcome:
    """Feed ``pieces`` to an app side that answers nothing itself."""
    conn = config.connection()
    events: list[Event] = []
    replies: list[bytes] = []
    failed = False
    for piece in pieces:
        try:
            events += conn.receive_data(piece)
        except RemoteProtocolError:
            failed = True
            stays_broken(conn.receive_data)
            break
        finally:
            replies.append(conn.data_to_send())
    return Outcome(events, b"".join(replies), failed, conn.active_requests, conn.should_close)


@dataclass
class Incarnation:
    """One life of a request id, as the app sees it through the events."""

    started: bool = False
    keep_conn: bool = True
    role: int = Role.RESPONDER
    body_done: bool = False
    data_done: bool = False
    bodies: int = 0
    aborted: bool = False
    failed: bool = False
    ended: bool = False
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass
class Answer:
    """What the web server should read for one ended request."""

    stdout: bytes
    stderr: bytes
    app_status: int
    protocol_status: int


@dataclass
class AppModel:
    """The harness's side of the application role: the app's view of each request, what
    it wrote, and what the client core must read back from it."""

    config: AppConfig
    conn: ApplicationConnection
    live: dict[int, Incarnation] = field(default_factory=dict)
    answers: dict[int, list[Answer]] = field(default_factory=dict)
    out: list[bytes] = field(default_factory=list)
    closing: bool = False
    payload: int = 0

    # ---------------------------------------------------------- checking the events

    def check(self, event: Event) -> None:
        request_id = getattr(event, "request_id", 0)
        expect(0 < request_id <= 0xFFFF, f"{event!r}: request id out of range")
        current = self.live.get(request_id)
        if current is not None and current.ended:
            current = None
        if isinstance(event, RequestRejected):
            self.rejected(event, current)
        elif isinstance(event, RequestStarted):
            self.started(event, current)
        elif isinstance(event, RequestAborted):
            # Before its PARAMS ended an abort is the core's to answer (Rule 3): no event.
            expect(current is not None and current.started, f"{event!r} for a request that has not started")
            assert current is not None
            expect(not current.aborted and not current.failed, f"{event!r} after an abort or a bad record")
            current.aborted = True
        elif isinstance(event, BadRecord):
            request = current if current is not None else self.new(request_id)
            expect(not request.aborted and not request.failed, f"{event!r} after an abort or a bad record")
            expect(isinstance(event.reason, str) and event.reason != "", f"{event!r} without a reason")
            request.failed = True
        elif isinstance(event, (RequestBody, RequestBodyEnd)):
            expect(current is not None and current.started, f"{event!r} for a request that has not started")
            assert current is not None
            expect(not current.body_done, f"{event!r} after the end of the body")
            expect(not current.aborted and not current.failed, f"{event!r} after an abort or a bad record")
            if isinstance(event, RequestBody):
                expect(len(event.data) > 0, "an empty RequestBody")
                self.payload += len(event.data)
                current.bodies += 1
            else:
                current.body_done = True
        elif isinstance(event, (RequestData, RequestDataEnd)):
            expect(current is not None and current.role == Role.FILTER, f"{event!r} for a request not a filter")
            assert current is not None
            expect(current.body_done, f"{event!r} before the end of the body (Rule 6)")
            expect(not current.data_done, f"{event!r} after the end of the data")
            expect(not current.aborted and not current.failed, f"{event!r} after an abort or a bad record")
            if isinstance(event, RequestData):
                expect(len(event.data) > 0, "an empty RequestData")
                self.payload += len(event.data)
            else:
                current.data_done = True
        else:
            raise Finding(f"{event!r} is not an application-role event")

    def new(self, request_id: int) -> Incarnation:
        request = self.live[request_id] = Incarnation()
        return request

    def rejected(self, event: RequestRejected, current: Incarnation | None) -> None:
        expect(current is None, f"{event!r} for a request that is still active")
        expect(not self.closing, f"{event!r} after a request without KEEP_CONN ended")
        unknown_role = event.role not in self.config.roles
        expect((event.protocol_status == ProtocolStatus.UNKNOWN_ROLE) == unknown_role,
               f"{event!r} with roles {sorted(self.config.roles)}")
        if not unknown_role:
            expected = ProtocolStatus.OVERLOADED if self.config.mpxs_conns else ProtocolStatus.CANT_MPX_CONN
            expect(event.protocol_status == expected, f"{event!r}, expected {expected!r}")

    def started(self, event: RequestStarted, current: Incarnation | None) -> None:
        expect(current is None or not current.started, f"{event!r} for a request that had started already")
        expect(current is None or not (current.aborted or current.failed), f"{event!r} after an abort or bad record")
        expect(event.role in self.config.roles, f"{event!r} with a role not configured")
        expect(all(type(k) is str and type(v) is str for k, v in event.params.items()), "params not all str")
        size = sum(len(k) + len(v) for k, v in event.params.items())
        expect(size <= self.config.max_params_size, f"{event!r}: {size} characters of params")
        expect(decode_pairs(encode_pairs(event.params)) == event.params, "params do not survive encode/decode")
        self.payload += size
        request = current if current is not None else self.new(event.request_id)
        request.started, request.keep_conn, request.role = True, event.keep_conn, event.role

    def core_answers(self, replies: bytes, events: list[Event] | None) -> None:
        """The END_REQUESTs the core wrote by itself in one read: a rejection per
        RequestRejected, the rest for requests aborted before their PARAMS ended (Rule 3,
        app status 1), which the app never heard of. ``events`` is None for a read that
        raised: its events are lost, so its END_REQUESTs are only noted."""
        if events is None:
            for rtype, request_id, content, _ in spans(replies):
                if rtype == RecordType.END_REQUEST:
                    body = records.parse_end_request(content)
                    self.answers.setdefault(request_id, []).append(Answer(b"", b"", *body))
            return
        rejected = [e for e in events if isinstance(e, RequestRejected)]
        for rtype, request_id, content, _ in spans(replies):
            if rtype != RecordType.END_REQUEST:
                expect(request_id == 0, f"the core wrote a record of type {rtype} for request {request_id}")
                continue
            body = records.parse_end_request(content)
            # A rejection has app status 0 and a status other than REQUEST_COMPLETE, the
            # core's answer to an early abort app status 1: the body says which this is.
            if rejected and rejected[0].request_id == request_id and body.app_status == 0:
                expected = (0, rejected.pop(0).protocol_status)
            else:
                current = self.live.get(request_id)
                expect(current is None or current.ended, f"the core ended request {request_id}, which the app runs")
                expected = (1, ProtocolStatus.REQUEST_COMPLETE)
            expect(tuple(body) == expected, f"the core ended request {request_id}: {body}, expected {expected}")
            self.answers.setdefault(request_id, []).append(Answer(b"", b"", *expected))
        expect(not rejected, f"rejected requests {rejected} got no END_REQUEST")

    def running(self) -> int:
        return sum(1 for r in self.live.values() if not r.ended)

    def after_read(self) -> None:
        """What holds once the events of one read are in."""
        limit = self.config.max_reqs if self.config.mpxs_conns else 1
        expect(self.running() <= limit, f"{self.running()} requests running, the limit is {limit}")
        expect(self.conn.active_requests >= self.running(), "the core tracks fewer requests than are running")
        for request_id, request in self.live.items():
            state = self.conn.state_of(request_id)
            if request.ended:
                continue
            expect(state is not None, f"request {request_id} is running but inactive in the core")
            if request.aborted:
                expect(state is RequestState.ABORTED, f"aborted request {request_id} is {state}")
            elif request.failed:
                expect(state is RequestState.FAILED, f"failed request {request_id} is {state}")
            elif request.body_done and request.role == Role.FILTER and not request.data_done:
                expect(state is RequestState.DATA, f"filter request {request_id} past its body is {state}")
            elif request.body_done:
                expect(state is RequestState.RESPONDING, f"request {request_id} with its input is {state}")
            elif request.started:
                expect(state is RequestState.STDIN, f"started request {request_id} is {state}")
        if self.conn.should_close:
            expect(self.conn.active_requests == 0, "should_close with requests in flight")

    # ------------------------------------------------------------- answering them

    def habit(self, request_id: int) -> int:
        return (self.config.policy + request_id) & 7

    def act(self, event: Event) -> None:
        """Answer as an app would: when depends on the request's habit (at its start,
        on its first piece of body, at the end of its body, or only at the very end)."""
        request_id = getattr(event, "request_id", 0)
        request = self.live.get(request_id)
        if request is None or request.ended or isinstance(event, RequestRejected):
            return
        habit = self.habit(request_id)
        if isinstance(event, (RequestAborted, BadRecord)):
            self.end(request_id, request)
        elif isinstance(event, RequestStarted):
            if habit % 3 == 0:
                self.write(request_id, request, b"Status: 200 OK\r\n\r\n")
            if habit == 6:
                self.write(request_id, request, bytes(LARGE_OUTPUT + 5))  # handed back in pieces
            if habit & 4:
                self.write_stderr(request_id, request, b"warning %d\n" % request_id)
            if habit % 4 == 0:
                self.end(request_id, request)
        elif isinstance(event, RequestBody):
            if habit % 4 == 1 and request.bodies == 1:
                self.end(request_id, request)
        elif isinstance(event, (RequestBodyEnd, RequestDataEnd)) and habit % 4 == self.end_of_input(event):
            self.end(request_id, request)

    @staticmethod
    def end_of_input(event: Event) -> int:
        """The habit that ends a request at this event: 2 at the end of its body, 3 at
        the end of a filter's data."""
        return 2 if isinstance(event, RequestBodyEnd) else 3

    def write(self, request_id: int, request: Incarnation, data: bytes) -> None:
        self.out.append(self.conn.send_stdout(request_id, data))
        if not request.aborted:
            request.stdout += data

    def write_stderr(self, request_id: int, request: Incarnation, data: bytes) -> None:
        self.out.append(self.conn.send_stderr(request_id, data))
        if not request.aborted:
            request.stderr += data

    def end(self, request_id: int, request: Incarnation) -> None:
        habit = self.habit(request_id)
        app_status = 0xFFFFFFFF if habit == 7 else request_id
        head = b""
        stdout = b"" if request.aborted else b"body of %d" % request_id
        if habit == 5 and not request.aborted:
            # A head and a body: large (the head goes in a record of its own), or small.
            size = LARGE_OUTPUT + 1 + request_id % 97 if request_id % 2 else 10
            head, stdout = b"Content-Type: text/plain\r\n\r\n", bytes(size)
        parts = self.conn.end_request_parts(request_id, app_status, stdout=stdout, head=head)
        self.out.append(b"".join(parts))
        if not request.aborted:
            request.stdout += head + stdout
        request.ended = True
        # A request that never started may have lacked KEEP_CONN too, but its flags came
        # in no event: closing is checked only from requests seen to start.
        if request.started and not request.keep_conn:
            self.closing = True
        self.answers.setdefault(request_id, []).append(
            Answer(request.stdout, request.stderr, app_status, ProtocolStatus.REQUEST_COMPLETE))

    def finish(self, stream_ids: set[int]) -> None:
        """End every request still running, then check that nothing is left but bodies
        draining and requests the web server never finished beginning."""
        for request_id, request in list(self.live.items()):
            if not request.ended:
                self.end(request_id, request)
        for request_id in stream_ids:
            state = self.conn.state_of(request_id)
            last = self.live.get(request_id)
            if state is RequestState.PARAMS:
                expect(last is None or last.ended, f"request {request_id} in PARAMS after it was ended")
            else:
                expect(state in (None, RequestState.DRAINING), f"request {request_id} is {state} after it was ended")
        if self.closing and self.conn.active_requests == 0:
            expect(self.conn.should_close, "a request without KEEP_CONN ended, yet should_close is false")


def check_app(data: bytes) -> None:
    """The application role fed arbitrary bytes from a web server."""
    if len(data) < 2:
        return
    config = AppConfig.from_byte(data[0])
    stream = data[2:]
    pieces = cuts(stream, data[1])
    fine = app_passive(config, bytewise(stream))
    agree(app_passive(config, [stream]), fine, "fed whole")
    agree(app_passive(config, pieces), fine, f"cut by seed {data[1]}")
    expect(len(fine.replies) <= 2 * len(stream) + 64, f"{len(fine.replies)} bytes of replies to {len(stream)} bytes")
    app_active(config, pieces, stream)


def app_active(config: AppConfig, pieces: Sequence[bytes], stream: bytes) -> None:
    conn = config.connection()
    model = AppModel(config, conn)
    failed = False
    for piece in pieces:
        try:
            events = conn.receive_data(piece)
        except RemoteProtocolError:
            failed = True
            replies = conn.data_to_send()
            model.out.append(replies)
            model.core_answers(replies, None)
            stays_broken(conn.receive_data)
            break
        replies = conn.data_to_send()
        model.out.append(replies)
        # The core's own answers first: an early abort it answered may come before a new
        # request on the same id in the same read, never after one.
        model.core_answers(replies, events)
        for event in events:
            model.check(event)
        model.after_read()
        for event in events:
            model.act(event)
    expect(model.payload <= len(stream), f"{model.payload} bytes of events from {len(stream)} bytes")
    # After a protocol error the core may hold requests whose events were lost with the
    # read that raised: the connection is closed then, and its state no longer checked.
    model.finish(set() if failed else request_ids(stream))
    try:
        replay_as_client(b"".join(model.out), model)
    except RemoteProtocolError as exc:  # our own output: no error is allowed here
        raise Finding(f"the client core refused what the app side wrote: {exc}") from exc


def replay_as_client(out: bytes, model: AppModel) -> None:
    """Everything the app side wrote reads back cleanly in the client core: the same
    stdout, stderr and statuses per request, the configured values."""
    found = spans(out)
    for rtype, _, _, _ in found:
        expect(rtype in (RecordType.STDOUT, RecordType.STDERR, RecordType.END_REQUEST,
                         RecordType.GET_VALUES_RESULT, RecordType.UNKNOWN_TYPE), f"app wrote a record of type {rtype}")
    if any(request_id > REPLAY_MAX_ID for _, request_id, _, _ in found):
        return
    client = ClientConnection()
    got: dict[int, list[Answer]] = {}
    pending: dict[int, Answer] = {}
    known = model.config.values()
    for _, request_id, _, raw in found:
        while request_id and not client.is_active(request_id):
            client.begin_request({})
        for event in client.receive_data(raw):
            if isinstance(event, ValuesResult):
                expect(all(known.get(k) == v for k, v in event.values.items()), f"GET_VALUES answered {event.values}")
            elif isinstance(event, UnknownTypeResult):
                expect(not 0 < event.record_type <= RecordType.UNKNOWN_TYPE or event.record_type in (
                    RecordType.END_REQUEST, RecordType.STDOUT, RecordType.STDERR, RecordType.GET_VALUES_RESULT,
                    RecordType.UNKNOWN_TYPE), f"UNKNOWN_TYPE for {event.record_type}")
            elif isinstance(event, (Stdout, Stderr, RequestEnded)):
                answer = pending.setdefault(event.request_id, Answer(b"", b"", 0, 0))
                if isinstance(event, Stdout):
                    answer.stdout += event.data
                elif isinstance(event, Stderr):
                    answer.stderr += event.data
                else:
                    answer.app_status, answer.protocol_status = event.app_status, event.protocol_status
                    got.setdefault(event.request_id, []).append(pending.pop(event.request_id))
    expect(not pending, f"output for requests {sorted(pending)} without END_REQUEST")
    expect(got == model.answers, f"the client core read back\n{got}\nnot\n{model.answers}")


# ================================================================= client role


@dataclass(frozen=True)
class ClientConfig:
    requests: int
    close_stdin: bool
    ask_values: bool
    policy: int

    @classmethod
    def from_byte(cls, byte: int) -> ClientConfig:
        return cls(requests=1 + (byte & 3), close_stdin=bool(byte & 4), ask_values=bool(byte & 8), policy=byte >> 4)


def client_setup(config: ClientConfig) -> tuple[ClientConnection, dict[int, bool]]:
    """A client that has sent its requests (ids 1..n), as a web server does before it reads."""
    conn = ClientConnection()
    open_stdin: dict[int, bool] = {}
    for n in range(config.requests):
        role = Role.FILTER if n == 1 and config.policy & 1 else Role.RESPONDER
        request_id, _ = conn.begin_request({"REQUEST_METHOD": "POST", "N": str(n)}, role=role, keep_conn=n % 2 == 0)
        expect(request_id == n + 1, f"request {n + 1} got id {request_id}")
        open_stdin[request_id] = True
        if config.close_stdin or n == 0:
            conn.end_stdin(request_id, b"body")
            open_stdin[request_id] = False
            if role is Role.FILTER:
                conn.end_data(request_id, b"file")
    if config.ask_values:
        conn.get_values([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS])
    return conn, open_stdin


def client_passive(config: ClientConfig, pieces: Sequence[bytes]) -> Outcome:
    conn, _ = client_setup(config)
    events: list[Event] = []
    failed = False
    for piece in pieces:
        try:
            events += conn.receive_data(piece)
        except RemoteProtocolError:
            failed = True
            stays_broken(conn.receive_data)
            break
    return Outcome(events, b"", failed, conn.active_requests)


def lowest_free(taken: set[int]) -> int:
    request_id = 1
    while request_id in taken:
        request_id += 1
    return request_id


def check_client(data: bytes) -> None:
    """The client role fed arbitrary bytes as if from an application, after it sent its requests."""
    if len(data) < 2:
        return
    config = ClientConfig.from_byte(data[0])
    stream = data[2:]
    pieces = cuts(stream, data[1])
    fine = client_passive(config, bytewise(stream))
    agree(client_passive(config, [stream]), fine, "fed whole")
    agree(client_passive(config, pieces), fine, f"cut by seed {data[1]}")
    client_active(config, pieces, stream)


def client_active(config: ClientConfig, pieces: Sequence[bytes], stream: bytes) -> None:
    """The client reacting as a web server does: more requests as others end, bodies
    sent while answers arrive, an abort now and then."""
    conn, open_stdin = client_setup(config)
    payload = 0
    for turn, piece in enumerate(pieces, 1):
        try:
            events = conn.receive_data(piece)
        except RemoteProtocolError:
            stays_broken(conn.receive_data)
            break
        for event in events:
            if isinstance(event, (Stdout, Stderr)):
                expect(event.request_id in open_stdin, f"{event!r} for a request not active")
                expect(len(event.data) > 0, f"empty {event!r}")
                payload += len(event.data)
            elif isinstance(event, RequestEnded):
                expect(event.request_id in open_stdin, f"{event!r} for a request not active")
                expect(0 <= event.app_status <= 0xFFFFFFFF and 0 <= event.protocol_status <= 0xFF, f"{event!r}")
                del open_stdin[event.request_id]
            elif isinstance(event, ValuesResult):
                expect(all(type(k) is str and type(v) is str for k, v in event.values.items()), f"{event!r}")
                payload += sum(len(k) + len(v) for k, v in event.values.items())
            elif isinstance(event, UnknownTypeResult):
                expect(0 <= event.record_type <= 0xFF, f"{event!r}")
            else:
                raise Finding(f"{event!r} is not a client-role event")
        expect(conn.active_requests == len(open_stdin), f"{conn.active_requests} active, expected {len(open_stdin)}")
        for request_id in range(1, 8):
            expect(conn.is_active(request_id) == (request_id in open_stdin), f"request {request_id} activity")
        react(conn, open_stdin, config.policy + turn)
    expect(payload <= len(stream), f"{payload} bytes of events from {len(stream)} bytes")


def react(conn: ClientConnection, open_stdin: dict[int, bool], habit: int) -> None:
    if habit % 3 == 0 and len(open_stdin) < 6:
        expected = lowest_free(set(open_stdin))
        request_id, data = conn.begin_request([("REQUEST_METHOD", "GET")])
        expect(request_id == expected, f"begin_request gave id {request_id}, the lowest free is {expected}")
        expect(spans(data)[0][:2] == (RecordType.BEGIN_REQUEST, request_id), "begin_request bytes")
        open_stdin[request_id] = True
    for request_id, stdin_open in list(open_stdin.items()):
        if stdin_open and habit % 2:
            conn.send_stdin(request_id, b"more")
            if habit % 4 == 1:
                conn.end_stdin(request_id)
                open_stdin[request_id] = False
        if habit % 7 == 3:
            conn.abort_request(request_id)


# ==================================================================== records


def reader_outcome(pieces: Sequence[bytes]) -> tuple[list[tuple[int, int, bytes]], bool, int]:
    reader = RecordReader()
    found: list[tuple[int, int, bytes]] = []
    for piece in pieces:
        try:
            found += reader.feed_raw(piece)
        except RemoteProtocolError:
            try:
                reader.feed_raw(b"\x01")
            except RemoteProtocolError:
                return found, True, reader.pending
            raise Finding("RecordReader accepted bytes after a RemoteProtocolError") from None
        expect(reader.pending < MAX_RECORD, f"RecordReader holds {reader.pending} bytes")
    return found, False, reader.pending


def check_records(data: bytes) -> None:
    """The record reader and the name-value decoder fed arbitrary bytes; the writers
    fed arbitrary data."""
    if not data:
        return
    request_id, rest = data[0] + 1, data[1:]
    check_pairs(rest)
    fine = reader_outcome(bytewise(rest))
    for how, pieces in (("whole", [rest]), ("cut", cuts(rest, data[0]))):
        found, failed, pending = reader_outcome(pieces)
        expect(failed == fine[1], f"RecordReader fed {how}: failed={failed}, byte by byte {fine[1]}")
        if failed:
            expect(fine[0][: len(found)] == found, f"RecordReader fed {how}: records not a prefix")
        else:
            expect((found, pending) == (fine[0], fine[2]), f"RecordReader fed {how} reads differently")
    if not fine[1]:
        again = b"".join(pack_record(t, i, c) for t, i, c in fine[0])
        expect(reader_outcome([again]) == (fine[0], False, 0), "records do not survive pack_record")
    packed = pack_stream(RecordType.STDOUT, request_id, rest)
    written = spans(packed)
    expect(b"".join(s[2] for s in written) == rest, "pack_stream does not carry its data")
    expect(all(s[:2] == (RecordType.STDOUT, request_id) and s[2] for s in written), "pack_stream records")
    expect(b"".join(records.stream_parts(RecordType.STDOUT, request_id, memoryview(rest))) == packed,
           "stream_parts and pack_stream differ")


def check_pairs(block: bytes) -> None:
    try:
        pairs = decode_pairs(block)
    except RemoteProtocolError:
        return
    expect(sum(len(k) + len(v) for k, v in pairs.items()) <= len(block), "pairs longer than their block")
    expect(decode_pairs(encode_pairs(pairs)) == pairs, "pairs do not survive encode/decode")
    expect(all(max(map(ord, k + v), default=0) < 256 for k, v in pairs.items()), "pairs not latin-1")


TARGETS: dict[str, Callable[[bytes], None]] = {"app": check_app, "client": check_client, "records": check_records}
