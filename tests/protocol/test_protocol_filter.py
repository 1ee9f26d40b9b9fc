"""The FILTER role's DATA stream (spec 6.4) and ABORT_REQUEST before a request started,
in both roles of the core, fed whole, byte at a time and cut where hypothesis likes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recordkit import GET_PARAMS as PARAMS
from recordkit import begin, params, parse, request, stdin

from fcgibridge.protocol import (
    ApplicationConnection,
    BadRecord,
    ClientConnection,
    Event,
    LocalProtocolError,
    ProtocolStatus,
    Record,
    RecordType,
    RequestAborted,
    RequestBody,
    RequestBodyEnd,
    RequestData,
    RequestDataEnd,
    RequestEnded,
    RequestStarted,
    RequestState,
    Role,
    Stdout,
    pack_record,
    pack_stream,
    records,
)

Feed = Callable[[ApplicationConnection, bytes], list[Event]]

ROLES = (Role.RESPONDER, Role.AUTHORIZER, Role.FILTER)
FILTER_PARAMS = {**PARAMS, "FCGI_DATA_LENGTH": "11", "FCGI_DATA_LAST_MOD": "1700000000"}


def whole(conn: ApplicationConnection, data: bytes) -> list[Event]:
    return conn.receive_data(data)


def bytewise(conn: ApplicationConnection, data: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1])
    return events


FEEDS = [pytest.param(whole, id="whole"), pytest.param(bytewise, id="bytewise")]


def abort(request_id: int) -> bytes:
    return pack_record(RecordType.ABORT_REQUEST, request_id)


def data_stream(request_id: int, data: bytes = b"", *, close: bool = True) -> bytes:
    out = pack_stream(RecordType.DATA, request_id, data)
    return out + pack_record(RecordType.DATA, request_id) if close else out


def end_record(request_id: int, app_status: int = 0) -> Record:
    content = records.pack_end_request(request_id, app_status, ProtocolStatus.REQUEST_COMPLETE)[8:]
    return Record(RecordType.END_REQUEST, request_id, content)


def partial_params(request_id: int) -> bytes:
    """The PARAMS stream cut in the middle of a pair, without its closing record."""
    encoded = records.encode_pairs(PARAMS)
    return pack_record(RecordType.PARAMS, request_id, encoded[: len(encoded) // 2])


# ------------------------------------------------- ABORT_REQUEST before RequestStarted


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("sent", ["begin only", "part of params"])
def test_abort_before_params_ended_is_answered_by_the_core(feed: Feed, sent: str) -> None:
    """Spec 5.4: after {FCGI_ABORT_REQUEST, R} the application answers
    {FCGI_END_REQUEST, R, {FCGI_REQUEST_COMPLETE, appStatus}}. The caller never saw this
    request start, so the core answers, frees the id and (no KEEP_CONN) closes."""
    conn = ApplicationConnection()
    data = begin(1) + (partial_params(1) if sent == "part of params" else b"") + abort(1)
    assert feed(conn, data) == []
    assert parse(conn.data_to_send()) == [end_record(1, 1)]
    assert conn.state_of(1) is None and conn.active_requests == 0
    assert conn.should_close
    assert conn.receive_data(params(1) + stdin(1)) == []  # the rest of it: an inactive id (Rule 1)
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("feed", FEEDS)
def test_abort_before_params_ended_with_keep_conn_frees_the_id_for_the_next_request(feed: Feed) -> None:
    conn = ApplicationConnection(mpxs_conns=False)
    assert feed(conn, begin(1, keep_conn=True) + partial_params(1) + abort(1)) == []
    assert parse(conn.data_to_send()) == [end_record(1, 1)]
    assert not conn.should_close
    events = feed(conn, request(1, keep_conn=True))
    assert events == [RequestStarted(1, Role.RESPONDER, True, PARAMS), RequestBodyEnd(1)]
    assert conn.data_to_send() == b""  # no CANT_MPX_CONN: the aborted request is gone


def test_abort_before_params_ended_leaves_the_other_requests_alone() -> None:
    conn = ApplicationConnection(max_reqs=4)
    conn.receive_data(begin(1) + params(1) + begin(2) + partial_params(2))
    assert conn.receive_data(abort(2)) == []
    assert parse(conn.data_to_send()) == [end_record(2, 1)]
    assert conn.state_of(1) is RequestState.STDIN
    assert not conn.should_close  # request 1 (no KEEP_CONN either) is still in flight
    assert conn.receive_data(stdin(1, b"x")) == [RequestBody(1, b"x"), RequestBodyEnd(1)]
    conn.end_request(1)
    assert conn.should_close


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("role", ROLES)
def test_abort_during_stdin_is_the_callers_to_answer(feed: Feed, role: Role) -> None:
    """Once RequestStarted was given, the caller owns the request: the abort is an event
    and its end_request sends the END_REQUEST (the core sends none of its own)."""
    conn = ApplicationConnection(roles=ROLES)
    events = feed(conn, begin(1, role=role) + params(1) + stdin(1, b"part", close=False) + abort(1))
    assert events[0] == RequestStarted(1, role, False, PARAMS)
    assert events[-1] == RequestAborted(1)
    assert conn.data_to_send() == b""
    assert parse(conn.end_request(1, 1)) == [end_record(1, 1)]
    assert conn.state_of(1) is None and conn.should_close


# ------------------------------------------------------------------- the FILTER role


def filter_request(request_id: int, body: bytes, data: bytes, *, keep_conn: bool = False) -> bytes:
    return (begin(request_id, role=Role.FILTER, keep_conn=keep_conn) + params(request_id, FILTER_PARAMS)
            + stdin(request_id, body) + data_stream(request_id, data))


def test_filter_is_rejected_unless_the_caller_plays_it() -> None:
    conn = ApplicationConnection()
    conn.receive_data(filter_request(1, b"", b"x"))
    assert conn.data_to_send()[:2] == bytes([1, RecordType.END_REQUEST])
    assert conn.state_of(1) is None


@pytest.mark.parametrize("feed", FEEDS)
def test_filter_reads_stdin_then_data(feed: Feed) -> None:
    """Spec 6.4: PARAMS, then the body on FCGI_STDIN, then the file on FCGI_DATA."""
    conn = ApplicationConnection(roles=ROLES)
    events = feed(conn, filter_request(1, b"body", b"hello world"))
    assert events[0] == RequestStarted(1, Role.FILTER, False, FILTER_PARAMS)
    assert isinstance(events[0], RequestStarted) and events[0].params["FCGI_DATA_LENGTH"] == "11"
    rest = events[1:]
    assert [e for e in rest if not isinstance(e, RequestBody | RequestData)] == [RequestBodyEnd(1), RequestDataEnd(1)]
    assert b"".join(e.data for e in rest if isinstance(e, RequestBody)) == b"body"
    assert b"".join(e.data for e in rest if isinstance(e, RequestData)) == b"hello world"
    assert rest.index(RequestBodyEnd(1)) < min(i for i, e in enumerate(rest) if isinstance(e, RequestData))
    assert conn.state_of(1) is RequestState.RESPONDING
    out = conn.end_request(1, stdout=b"Status: 200 OK\r\n\r\nHELLO WORLD")
    assert parse(out)[-1] == end_record(1)
    assert conn.state_of(1) is None and conn.should_close


def test_filter_states_step_by_step() -> None:
    conn = ApplicationConnection(roles=ROLES)
    conn.receive_data(begin(1, role=Role.FILTER) + params(1))
    assert conn.state_of(1) is RequestState.STDIN
    assert conn.receive_data(stdin(1)) == [RequestBodyEnd(1)]
    assert conn.state_of(1) is RequestState.DATA
    assert conn.send_stdout(1, b"early") != b""  # it may answer while the data arrives
    assert conn.receive_data(data_stream(1, b"a" * 70000, close=False)) == [
        RequestData(1, b"a" * 65528), RequestData(1, b"a" * (70000 - 65528))]
    assert conn.receive_data(data_stream(1)) == [RequestDataEnd(1)]
    assert conn.state_of(1) is RequestState.RESPONDING


def test_empty_data_stream_still_ends() -> None:
    conn = ApplicationConnection(roles=ROLES)
    events = conn.receive_data(filter_request(1, b"", b""))
    assert events[1:] == [RequestBodyEnd(1), RequestDataEnd(1)]


@given(st.binary(max_size=3000), st.binary(max_size=3000), st.data())
@settings(max_examples=60, deadline=None)
def test_filter_any_cuts_give_the_same_streams(body: bytes, data: bytes, draw: st.DataObject) -> None:
    wire = filter_request(1, body, data)
    points = draw.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    edges = [0, *sorted(set(points)), len(wire)]
    conn = ApplicationConnection(roles=ROLES)
    events: list[Event] = []
    for a, b in itertools.pairwise(edges):
        events += conn.receive_data(wire[a:b])
    assert b"".join(e.data for e in events if isinstance(e, RequestBody)) == body
    assert b"".join(e.data for e in events if isinstance(e, RequestData)) == data
    assert [e for e in events if not isinstance(e, RequestBody | RequestData)][1:] == [
        RequestBodyEnd(1), RequestDataEnd(1)]


def test_data_before_the_body_ended_is_a_bad_record() -> None:
    """Spec 6.4 puts the data stream after the body: DATA while STDIN is open does not fit (Rule 2)."""
    conn = ApplicationConnection(roles=ROLES)
    conn.receive_data(begin(1, role=Role.FILTER) + params(1) + stdin(1, b"x", close=False))
    events = conn.receive_data(data_stream(1, b"too soon", close=False))
    assert events == [BadRecord(1, RecordType.DATA, "DATA record while reading STDIN")]
    assert conn.state_of(1) is RequestState.FAILED


@pytest.mark.parametrize("role", [Role.RESPONDER, Role.AUTHORIZER])
def test_data_for_another_role_is_a_bad_record(role: Role) -> None:
    conn = ApplicationConnection(roles=ROLES)
    conn.receive_data(begin(1, role=role) + params(1) + (stdin(1) if role is Role.RESPONDER else b""))
    events = conn.receive_data(data_stream(1, b"x"))
    assert len(events) == 1 and isinstance(events[0], BadRecord) and events[0].record_type == RecordType.DATA


@pytest.mark.parametrize("when", ["params", "stdin", "data"])
def test_filter_ended_early_drains_through_the_empty_data(when: str) -> None:
    """Rule 4 for a filter: the web server is still sending until its empty DATA record."""
    conn = ApplicationConnection(roles=ROLES)
    sent = begin(1, role=Role.FILTER)
    rest = params(1) + stdin(1, b"body") + data_stream(1, b"data")
    cut = {"params": 0, "stdin": len(params(1)), "data": len(params(1) + stdin(1, b"body"))}[when]
    conn.receive_data(sent + rest[:cut])
    if when == "params":
        conn.receive_data(rest[: len(params(1))])  # the app can only end a request that started
        cut = len(params(1))
    conn.end_request(1, stdout=b"Status: 413 Payload Too Large\r\n\r\n")
    assert conn.state_of(1) is RequestState.DRAINING
    assert not conn.should_close
    tail = rest[cut:]
    assert conn.receive_data(tail[:-8]) == []  # all but the empty DATA: dropped silently
    assert conn.state_of(1) is RequestState.DRAINING
    assert conn.receive_data(tail[-8:]) == []
    assert conn.state_of(1) is None and conn.should_close


def test_failed_filter_is_complete_at_its_empty_data_not_its_empty_stdin() -> None:
    conn = ApplicationConnection(roles=ROLES)
    conn.receive_data(begin(1, role=Role.FILTER) + params(1) + pack_record(RecordType.DATA, 1, b"early"))
    assert conn.state_of(1) is RequestState.FAILED
    conn.receive_data(stdin(1))  # the body's end: DATA still follows
    conn.end_request(1, 1)
    assert conn.state_of(1) is RequestState.DRAINING
    conn.receive_data(data_stream(1, b"the file"))
    assert conn.state_of(1) is None and conn.should_close

    conn = ApplicationConnection(roles=ROLES)
    conn.receive_data(begin(1, role=Role.FILTER) + params(1) + pack_record(RecordType.DATA, 1, b"early"))
    conn.receive_data(stdin(1) + data_stream(1))
    conn.end_request(1, 1)
    assert conn.state_of(1) is None  # its input was all in: nothing to drain


def test_abort_during_data_is_an_event() -> None:
    conn = ApplicationConnection(roles=ROLES)
    conn.receive_data(begin(1, role=Role.FILTER) + params(1) + stdin(1) + data_stream(1, b"x", close=False))
    assert conn.receive_data(abort(1)) == [RequestAborted(1)]
    assert parse(conn.end_request(1, 1)) == [end_record(1, 1)]
    assert conn.state_of(1) is None


# ------------------------------------------------------------------- the client role


def test_client_sends_data_after_the_body_for_a_filter() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS, role=Role.FILTER)
    with pytest.raises(LocalProtocolError, match="before its body was closed"):
        client.send_data(request_id, b"x")
    client.end_stdin(request_id, b"body")
    out = client.send_data(request_id, b"a" * 70000) + client.end_data(request_id, b"end")
    sent = parse(out)
    assert {r.type for r in sent} == {RecordType.DATA}
    assert b"".join(r.content for r in sent) == b"a" * 70000 + b"end"
    assert sent[-1].content == b""
    with pytest.raises(LocalProtocolError, match="its DATA was closed"):
        client.end_data(request_id)


def test_client_refuses_data_for_another_role() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    client.end_stdin(request_id)
    with pytest.raises(LocalProtocolError, match="not a FILTER request"):
        client.send_data(request_id, b"x")
    with pytest.raises(LocalProtocolError, match="not active"):
        client.end_data(99)


def pair_round_trip(body: bytes, data: bytes, cut: Callable[[bytes], Sequence[bytes]]) -> None:
    client = ClientConnection()
    app = ApplicationConnection(roles=ROLES)
    request_id, wire = client.begin_request(FILTER_PARAMS, role=Role.FILTER, keep_conn=False)
    wire += client.send_stdin(request_id, body[:5]) + client.end_stdin(request_id, body[5:])
    wire += client.send_data(request_id, data[:100_000]) + client.end_data(request_id, data[100_000:])
    events: list[Event] = []
    for piece in cut(wire):
        events += app.receive_data(piece)
    assert events[0] == RequestStarted(request_id, Role.FILTER, False, FILTER_PARAMS)
    assert b"".join(e.data for e in events if isinstance(e, RequestBody)) == body
    got = b"".join(e.data for e in events if isinstance(e, RequestData))
    assert got == data
    answer = app.end_request(request_id, stdout=b"Status: 200 OK\r\n\r\n" + got.upper())
    assert app.should_close
    back: list[Event] = []
    for piece in cut(answer):
        back += client.receive_data(piece)
    assert b"".join(e.data for e in back if isinstance(e, Stdout)) == b"Status: 200 OK\r\n\r\n" + data.upper()
    assert back[-1] == RequestEnded(request_id, 0, ProtocolStatus.REQUEST_COMPLETE)
    assert client.active_requests == 0 and app.active_requests == 0


def test_filter_round_trip_whole() -> None:
    pair_round_trip(b"form=1&x=2", b"<p>some html</p>" * 20000, lambda wire: [wire])


def test_filter_round_trip_byte_at_a_time() -> None:
    pair_round_trip(b"form=1&x=2", b"<p>x</p>" * 40, lambda wire: [wire[i : i + 1] for i in range(len(wire))])


def test_abort_round_trip_before_params_ended() -> None:
    """The client core's view: the END_REQUEST the app core wrote by itself frees the id."""
    client = ClientConnection()
    app = ApplicationConnection()
    request_id, wire = client.begin_request(PARAMS)
    app.receive_data(wire[:-8])  # all but the empty PARAMS record
    app.receive_data(client.abort_request(request_id))
    assert client.receive_data(app.data_to_send()) == [RequestEnded(request_id, 1, 0)]
    assert client.active_requests == 0 and app.active_requests == 0
    assert not app.should_close  # it asked for KEEP_CONN


def test_a_draining_filter_does_not_count_against_max_reqs_and_gives_its_place_back() -> None:
    conn = ApplicationConnection(roles=ROLES, max_reqs=1)
    conn.receive_data(begin(1, role=Role.FILTER, keep_conn=True) + params(1) + stdin(1))
    conn.end_request(1)
    assert conn.state_of(1) is RequestState.DRAINING
    assert conn.receive_data(begin(2, keep_conn=True) + params(2)) == [RequestStarted(2, Role.RESPONDER, True, PARAMS)]
    conn.receive_data(data_stream(1, b"the rest"))  # its empty DATA: no longer draining
    assert conn.state_of(1) is None
    conn.receive_data(stdin(2))
    conn.end_request(2)
    assert conn.receive_data(begin(3, keep_conn=True) + params(3)) == [RequestStarted(3, Role.RESPONDER, True, PARAMS)]
    assert conn.data_to_send() == b""  # nobody was refused
