"""ApplicationConnection: the role fcgibridge's server plays towards a web server.

Where the FastCGI 1.0 specification decides a behaviour, the test quotes it
(section numbers of FastCGI_Specification.md).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recordkit import GET_PARAMS as PARAMS
from recordkit import begin, params, parse, request, stdin

from fcgibridge.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ApplicationConnection,
    BadRecord,
    Event,
    LocalProtocolError,
    ProtocolStatus,
    Record,
    RecordType,
    RemoteProtocolError,
    RequestAborted,
    RequestBody,
    RequestBodyEnd,
    RequestRejected,
    RequestStarted,
    RequestState,
    Role,
    decode_pairs,
    encode_pairs,
    pack_record,
    pack_stream,
    records,
)

# ------------------------------------------------------------------------- helpers


def types_of(data: bytes) -> list[tuple[int, int, bytes]]:
    return [(r.type, r.request_id, r.content) for r in parse(data)]


def end_record(request_id: int, app_status: int = 0, status: int = ProtocolStatus.REQUEST_COMPLETE) -> Record:
    return Record(RecordType.END_REQUEST, request_id, records.pack_end_request(request_id, app_status, status)[8:])


def feed_bytewise(conn: ApplicationConnection, data: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1])
    return events


# ----------------------------------------------------------------- a plain request


def test_simple_request_gives_started_and_body_end() -> None:
    """Spec appendix B, example 1: BEGIN, PARAMS, empty PARAMS, empty STDIN."""
    conn = ApplicationConnection()
    events = conn.receive_data(request(1))
    assert events == [RequestStarted(1, Role.RESPONDER, False, PARAMS), RequestBodyEnd(1)]
    assert isinstance(events[0], RequestStarted)
    assert events[0].params == PARAMS  # params is excluded from the dataclass repr, not from eq
    assert conn.state_of(1) is RequestState.RESPONDING
    assert conn.data_to_send() == b""


def test_request_body_in_several_records() -> None:
    """Spec appendix B, example 2: the value of a stream does not depend on how it is cut into records."""
    conn = ApplicationConnection()
    data = begin(1) + params(1) + pack_record(RecordType.STDIN, 1, b"quantity=100") + stdin(1, b"&item=3047936")
    events = conn.receive_data(data)
    assert events[1:] == [RequestBody(1, b"quantity=100"), RequestBody(1, b"&item=3047936"), RequestBodyEnd(1)]


def test_params_arrive_only_with_the_empty_params_record() -> None:
    conn = ApplicationConnection()
    encoded = encode_pairs(PARAMS)
    assert conn.receive_data(begin(1) + pack_stream(RecordType.PARAMS, 1, encoded)) == []
    assert conn.state_of(1) is RequestState.PARAMS
    assert conn.receive_data(pack_record(RecordType.PARAMS, 1)) == [RequestStarted(1, Role.RESPONDER, False, PARAMS)]
    assert conn.state_of(1) is RequestState.STDIN


def test_pair_straddling_two_params_records_at_every_offset() -> None:
    """Spec 3.3: "the value of a stream is independent of how many records it contains or
    how its bytes are divided among the non-empty records"."""
    pairs = {"A" * 127: "b" * 128, "HTTP_COOKIE": "c" * 300, "Q": "", "\xe9": "\xff"}
    encoded = encode_pairs(pairs)
    for cut in range(1, len(encoded)):
        conn = ApplicationConnection()
        data = (
            begin(1)
            + pack_record(RecordType.PARAMS, 1, encoded[:cut])
            + pack_record(RecordType.PARAMS, 1, encoded[cut:])
            + pack_record(RecordType.PARAMS, 1)
        )
        assert conn.receive_data(data) == [RequestStarted(1, Role.RESPONDER, False, pairs)], cut


def test_large_params_in_several_records() -> None:
    pairs = {"HTTP_X_BIG": "v" * 200_000, "N" * 70000: "w"}
    conn = ApplicationConnection()
    events = conn.receive_data(begin(1) + params(1, pairs))
    assert events == [RequestStarted(1, Role.RESPONDER, False, pairs)]


def test_non_ascii_params_are_latin_1_strings() -> None:
    """PEP 3333: CGI variables reach the app as latin-1 decoded native strings."""
    conn = ApplicationConnection()
    raw = b"\x0b\x08REQUEST_URI/caf\xc3\xa9?q"
    (event,) = conn.receive_data(begin(1) + pack_record(RecordType.PARAMS, 1, raw) + pack_record(RecordType.PARAMS, 1))
    assert isinstance(event, RequestStarted)
    assert event.params == {"REQUEST_URI": "/caf\xc3\xa9?q"}
    assert event.params["REQUEST_URI"].encode("latin-1").decode("utf-8") == "/café?q"


def test_fed_bytewise_gives_the_same_events() -> None:
    data = request(1, b"x" * 1000, keep_conn=True) + request(2, b"body", keep_conn=True)
    whole = ApplicationConnection(max_reqs=2).receive_data(data)
    bytewise = feed_bytewise(ApplicationConnection(max_reqs=2), data)
    # byte-at-a-time delivers the body in the same records, so the same events
    assert bytewise == whole
    assert [type(e) for e in whole] == [RequestStarted, RequestBody, RequestBodyEnd] * 2


# ------------------------------------------------------------------------ request ids


def test_records_for_inactive_request_ids_are_ignored() -> None:
    """Spec 3.3: "While a request ID R is inactive, the application ignores records with
    requestId == R, except for FCGI_BEGIN_REQUEST records"."""
    conn = ApplicationConnection()
    noise = (
        params(5)
        + stdin(5, b"body")
        + pack_record(RecordType.ABORT_REQUEST, 5)
        + pack_record(RecordType.DATA, 5, b"data")
        + pack_record(RecordType.DATA, 5)
        + pack_record(42, 5, b"future type")
    )
    assert conn.receive_data(noise) == []
    assert conn.state_of(5) is None
    assert conn.active_requests == 0
    assert conn.data_to_send() == b""
    # and the connection is fine afterwards
    assert conn.receive_data(request(5)) == [RequestStarted(5, Role.RESPONDER, False, PARAMS), RequestBodyEnd(5)]


def test_records_after_our_end_request_are_ignored() -> None:
    """Spec 3.3: a request id "becomes inactive when the application sends a record
    {FCGI_END_REQUEST, R, ...}"."""
    conn = ApplicationConnection()
    conn.receive_data(request(1, keep_conn=True))
    conn.end_request(1)
    assert conn.state_of(1) is None
    assert conn.receive_data(stdin(1, b"late") + params(1) + pack_record(RecordType.ABORT_REQUEST, 1)) == []
    assert conn.data_to_send() == b""


def test_begin_request_on_an_active_id_is_a_bad_record_and_other_ids_carry_on() -> None:
    conn = ApplicationConnection(max_reqs=5)
    conn.receive_data(begin(1, keep_conn=True) + params(1) + begin(2, keep_conn=True) + params(2))
    events = conn.receive_data(begin(1, keep_conn=True) + stdin(2, b"two"))
    bad = events[0]
    assert isinstance(bad, BadRecord)
    assert (bad.request_id, bad.record_type) == (1, RecordType.BEGIN_REQUEST)
    assert "BEGIN_REQUEST" in bad.reason
    assert events[1:] == [RequestBody(2, b"two"), RequestBodyEnd(2)]
    assert conn.state_of(1) is RequestState.FAILED
    # request 1's further records are dropped, request 2 still answers
    assert conn.receive_data(stdin(1, b"ignored")) == []
    out = conn.end_request(2, stdout=b"Status: 200 OK\r\n\r\n")
    assert parse(out)[-1] == end_record(2)
    # the caller ends the failed request with an error response
    out = conn.end_request(1, stdout=b"Status: 500 Internal Server Error\r\n\r\n")
    assert parse(out)[-1] == end_record(1)
    assert conn.active_requests == 0


def test_record_out_of_order_is_a_bad_record() -> None:
    conn = ApplicationConnection(max_reqs=2)
    conn.receive_data(begin(1, keep_conn=True) + begin(2, keep_conn=True))
    events = conn.receive_data(stdin(1, b"too early") + params(2))
    assert len(events) == 2
    bad = events[0]
    assert isinstance(bad, BadRecord)
    assert (bad.request_id, bad.record_type) == (1, RecordType.STDIN)
    assert "STDIN" in bad.reason and "PARAMS" in bad.reason
    assert events[1] == RequestStarted(2, Role.RESPONDER, True, PARAMS)


@pytest.mark.parametrize("record_type", [RecordType.DATA, 0, 42, 255])
def test_unexpected_record_type_for_an_active_request_fails_only_that_request(record_type: int) -> None:
    conn = ApplicationConnection()
    conn.receive_data(begin(1) + params(1))
    (bad,) = conn.receive_data(pack_record(record_type, 1, b"x"))
    assert isinstance(bad, BadRecord)
    assert bad.record_type == record_type
    assert conn.state_of(1) is RequestState.FAILED


# ----------------------------------------------------------------- management records


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {FCGI_MAX_CONNS: "1", FCGI_MAX_REQS: "1", FCGI_MPXS_CONNS: "1"}),
        (
            {"max_conns": 10, "max_reqs": 50, "mpxs_conns": False},
            {FCGI_MAX_CONNS: "10", FCGI_MAX_REQS: "50", FCGI_MPXS_CONNS: "0"},
        ),
    ],
)
def test_get_values_answers_the_configured_values(config: dict[str, object], expected: dict[str, str]) -> None:
    """Spec 4.1: {FCGI_GET_VALUES, 0, ...} is answered with {FCGI_GET_VALUES_RESULT, 0, ...}."""
    conn = ApplicationConnection(**config)  # type: ignore[arg-type]
    query = encode_pairs({FCGI_MAX_CONNS: "", FCGI_MAX_REQS: "", FCGI_MPXS_CONNS: ""})
    assert conn.receive_data(pack_record(RecordType.GET_VALUES, 0, query)) == []
    ((rtype, rid, content),) = types_of(conn.data_to_send())
    assert (rtype, rid) == (RecordType.GET_VALUES_RESULT, 0)
    assert decode_pairs(content) == expected
    assert conn.data_to_send() == b""


def test_get_values_answers_only_the_names_asked() -> None:
    """Spec 4.1: "If the application doesn't understand a variable name that was included
    in the query, it omits that name from the response"."""
    conn = ApplicationConnection(max_reqs=7)
    query = encode_pairs({FCGI_MAX_REQS: "", "FCGI_SOMETHING_ELSE": "", "PATH": ""})
    conn.receive_data(pack_record(RecordType.GET_VALUES, 0, query))
    ((_, _, content),) = types_of(conn.data_to_send())
    assert decode_pairs(content) == {FCGI_MAX_REQS: "7"}
    conn.receive_data(pack_record(RecordType.GET_VALUES, 0))
    assert types_of(conn.data_to_send()) == [(RecordType.GET_VALUES_RESULT, 0, b"")]


def test_get_values_at_any_time_during_a_request() -> None:
    """Spec 4.1: "An application may receive a FCGI_GET_VALUES record at any time"."""
    conn = ApplicationConnection()
    query = pack_record(RecordType.GET_VALUES, 0, encode_pairs({FCGI_MPXS_CONNS: ""}))
    events = conn.receive_data(begin(1) + params(1) + query + stdin(1, b"x"))
    assert [type(e) for e in events] == [RequestStarted, RequestBody, RequestBodyEnd]
    ((rtype, _, content),) = types_of(conn.data_to_send())
    assert rtype == RecordType.GET_VALUES_RESULT and decode_pairs(content) == {FCGI_MPXS_CONNS: "1"}


@pytest.mark.parametrize("record_type", [0, 12, 99, 255, RecordType.END_REQUEST, RecordType.STDOUT])
def test_unknown_management_type_is_answered_with_unknown_type(record_type: int) -> None:
    """Spec 4.2: "When an application receives a management record whose type T it does not
    understand, the application responds with {FCGI_UNKNOWN_TYPE, 0, {T}}"."""
    conn = ApplicationConnection()
    assert conn.receive_data(pack_record(record_type, 0, b"whatever")) == []
    assert types_of(conn.data_to_send()) == [(RecordType.UNKNOWN_TYPE, 0, bytes([record_type]) + bytes(7))]


def test_application_record_type_with_the_null_id_is_a_remote_error() -> None:
    """Spec appendix A: application record types "cannot use the null request ID"."""
    with pytest.raises(RemoteProtocolError):
        ApplicationConnection().receive_data(begin(0))


def test_oversized_management_record_is_a_remote_error() -> None:
    query = encode_pairs({"X" * 5000: ""})
    with pytest.raises(RemoteProtocolError):
        ApplicationConnection().receive_data(pack_record(RecordType.GET_VALUES, 0, query))


# ------------------------------------------------------------- roles and rejections


@pytest.mark.parametrize("role", [Role.FILTER, 0, 99, 0xFFFF])
def test_unknown_role_is_rejected_with_unknown_role(role: int) -> None:
    """Spec 5.5: FCGI_UNKNOWN_ROLE: "rejecting a new request. This happens when the Web server
    has specified a role that is unknown to the application"."""
    conn = ApplicationConnection()
    events = conn.receive_data(begin(3, role=role, keep_conn=True))
    assert events == [RequestRejected(3, ProtocolStatus.UNKNOWN_ROLE, role)]
    assert parse(conn.data_to_send()) == [end_record(3, 0, ProtocolStatus.UNKNOWN_ROLE)]
    # the id stays inactive: the rest of the rejected request is ignored
    assert conn.receive_data(params(3) + stdin(3, b"x")) == []
    assert conn.state_of(3) is None
    assert not conn.should_close
    assert conn.receive_data(request(3)) == [RequestStarted(3, Role.RESPONDER, False, PARAMS), RequestBodyEnd(3)]


def test_rejected_request_without_keep_conn_closes_the_connection() -> None:
    conn = ApplicationConnection()
    conn.receive_data(begin(1, role=Role.FILTER, keep_conn=False))
    assert conn.should_close


def test_authorizer_role_reaches_request_started() -> None:
    """Spec 6.3: the Authorizer "receives HTTP request information from the Web server on the
    FCGI_PARAMS stream, in the same format as a Responder"."""
    conn = ApplicationConnection()
    events = conn.receive_data(begin(1, role=Role.AUTHORIZER) + params(1))
    assert events == [RequestStarted(1, Role.AUTHORIZER, False, PARAMS)]
    assert isinstance(events[0], RequestStarted) and events[0].role is Role.AUTHORIZER


def test_authorizer_answered_without_stdin_closes_the_connection() -> None:
    """Spec 6.3 never sends FCGI_STDIN to an Authorizer, and Apache's mod_authnz_fcgi sends
    none: ending an authorizer request must not wait for a body that never comes."""
    conn = ApplicationConnection()
    conn.receive_data(begin(1, role=Role.AUTHORIZER) + params(1))
    out = conn.end_request(1, stdout=b"Status: 200 OK\r\nVariable-USER: ann\r\n\r\n")
    assert parse(out)[-1] == end_record(1)
    assert conn.state_of(1) is None
    assert conn.should_close
    # a web server that does send an (empty) STDIN after all: ignored, the id is inactive
    assert conn.receive_data(stdin(1)) == []


def test_authorizer_with_keep_conn_can_be_followed_by_another_request() -> None:
    conn = ApplicationConnection(mpxs_conns=False)
    conn.receive_data(begin(1, role=Role.AUTHORIZER, keep_conn=True) + params(1))
    conn.end_request(1, stdout=b"Status: 403 Forbidden\r\n\r\n")
    events = conn.receive_data(request(1, keep_conn=True))
    assert events == [RequestStarted(1, Role.RESPONDER, True, PARAMS), RequestBodyEnd(1)]
    assert conn.data_to_send() == b""


def test_second_request_without_multiplexing_is_cant_mpx_conn() -> None:
    """Spec 5.5: FCGI_CANT_MPX_CONN: "This happens when a Web server sends concurrent requests
    over one connection to an application that is designed to process one request at a time"."""
    conn = ApplicationConnection(max_reqs=10, mpxs_conns=False)
    conn.receive_data(begin(1, keep_conn=True) + params(1))
    events = conn.receive_data(begin(2, keep_conn=True) + params(2) + stdin(2))
    assert events == [RequestRejected(2, ProtocolStatus.CANT_MPX_CONN, Role.RESPONDER)]
    assert parse(conn.data_to_send()) == [end_record(2, 0, ProtocolStatus.CANT_MPX_CONN)]
    assert conn.state_of(1) is RequestState.STDIN
    assert conn.active_requests == 1


def test_requests_past_max_reqs_are_overloaded() -> None:
    """Spec 5.5: FCGI_OVERLOADED: "rejecting a new request. This happens when the application
    runs out of some resource"."""
    conn = ApplicationConnection(max_reqs=2)
    conn.receive_data(begin(1, keep_conn=True) + begin(2, keep_conn=True))
    events = conn.receive_data(begin(3, keep_conn=True))
    assert events == [RequestRejected(3, ProtocolStatus.OVERLOADED, Role.RESPONDER)]
    assert parse(conn.data_to_send()) == [end_record(3, 0, ProtocolStatus.OVERLOADED)]
    # once one ends, a new one is admitted
    conn.receive_data(params(1) + stdin(1))
    conn.end_request(1)
    assert conn.receive_data(begin(3, keep_conn=True) + params(3)) == [RequestStarted(3, Role.RESPONDER, True, PARAMS)]


# ---------------------------------------------------------------------------- abort


def test_abort_gives_request_aborted_and_end_request_sends_no_stdout() -> None:
    """Spec 5.4: "After receiving {FCGI_ABORT_REQUEST, R}, the application responds as soon as
    possible with {FCGI_END_REQUEST, R, {FCGI_REQUEST_COMPLETE, appStatus}}"."""
    conn = ApplicationConnection()
    conn.receive_data(begin(1) + params(1) + stdin(1, b"part", close=False))
    assert conn.receive_data(pack_record(RecordType.ABORT_REQUEST, 1)) == [RequestAborted(1)]
    assert conn.state_of(1) is RequestState.ABORTED
    # output for an aborted request is dropped, not an error: the app may still be writing
    assert conn.send_stdout(1, b"too late") == b""
    assert conn.send_stderr(1, b"too late") == b""
    # records after the abort are dropped
    assert conn.receive_data(stdin(1, b"more")) == []
    out = conn.end_request(1, 5, stdout=b"ignored")
    assert parse(out) == [end_record(1, 5)]
    assert conn.state_of(1) is None
    assert conn.should_close


@pytest.mark.parametrize("when", ["stdin", "responding"])
def test_abort_in_every_live_state(when: str) -> None:
    conn = ApplicationConnection()
    data = {"stdin": begin(1) + params(1), "responding": request(1)}[when]
    conn.receive_data(data)
    assert conn.receive_data(pack_record(RecordType.ABORT_REQUEST, 1)) == [RequestAborted(1)]
    assert parse(conn.end_request(1)) == [end_record(1)]


def test_abort_while_draining_forgets_the_request() -> None:
    conn = ApplicationConnection()
    conn.receive_data(begin(1) + params(1))
    conn.end_request(1)
    assert conn.state_of(1) is RequestState.DRAINING
    assert conn.receive_data(pack_record(RecordType.ABORT_REQUEST, 1)) == []
    assert conn.state_of(1) is None
    assert conn.should_close


# ---------------------------------------------------------------------- multiplexing


def test_interleaved_requests_are_attributed_correctly() -> None:
    """Spec appendix B, example 4: two requests multiplexed on one connection, answered out of order."""
    conn = ApplicationConnection(max_reqs=2)
    p2 = {"SERVER_PORT": "8080"}
    data = b"".join(
        [
            begin(1, keep_conn=True),
            params(1),
            begin(2, keep_conn=True),
            pack_stream(RecordType.PARAMS, 2, encode_pairs(p2)),
            pack_record(RecordType.STDIN, 1, b"one-a"),
            pack_record(RecordType.PARAMS, 2),
            pack_record(RecordType.STDIN, 2, b"two-a"),
            pack_record(RecordType.STDIN, 1, b"one-b"),
            pack_record(RecordType.STDIN, 2),
            pack_record(RecordType.STDIN, 1),
        ]
    )
    events = conn.receive_data(data)
    assert events == [
        RequestStarted(1, Role.RESPONDER, True, PARAMS),
        RequestBody(1, b"one-a"),
        RequestStarted(2, Role.RESPONDER, True, p2),
        RequestBody(2, b"two-a"),
        RequestBody(1, b"one-b"),
        RequestBodyEnd(2),
        RequestBodyEnd(1),
    ]
    out = conn.send_stdout(1, b"Content-type: text/html\r\n\r\n")
    out += conn.end_request(2, stdout=b"page two")
    out += conn.end_request(1, stdout=b"page one")
    assert types_of(out) == [
        (RecordType.STDOUT, 1, b"Content-type: text/html\r\n\r\n"),
        (RecordType.STDOUT, 2, b"page two"),
        (RecordType.STDOUT, 2, b""),
        (RecordType.END_REQUEST, 2, end_record(2).content),
        (RecordType.STDOUT, 1, b"page one"),
        (RecordType.STDOUT, 1, b""),
        (RecordType.END_REQUEST, 1, end_record(1).content),
    ]
    assert not conn.should_close


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_interleaving_of_requests_gives_the_same_per_request_events(data: st.DataObject) -> None:
    """Records of different requests may be interleaved in any order the web server likes;
    each request sees its own records in its own order."""
    n = data.draw(st.integers(1, 4))
    bodies = {rid: data.draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3)) for rid in range(1, n + 1)}
    queues = {
        rid: [begin(rid, keep_conn=True), params(rid, {"ID": str(rid)})]
        + [pack_record(RecordType.STDIN, rid, piece) for piece in bodies[rid]]
        + [pack_record(RecordType.STDIN, rid)]
        for rid in bodies
    }
    stream = b""
    while any(queues.values()):
        rid = data.draw(st.sampled_from(sorted(r for r, q in queues.items() if q)))
        stream += queues[rid].pop(0)
    events = ApplicationConnection(max_reqs=4).receive_data(stream)
    for rid, pieces in bodies.items():
        mine = [e for e in events if getattr(e, "request_id", None) == rid]
        expected: list[Event] = [RequestStarted(rid, Role.RESPONDER, True, {"ID": str(rid)})]
        expected += [RequestBody(rid, piece) for piece in pieces]
        expected.append(RequestBodyEnd(rid))
        assert mine == expected
    assert len(events) == sum(len(b) + 2 for b in bodies.values())


# ------------------------------------------------------------- KEEP_CONN and closing


def test_keep_conn_leaves_the_connection_open() -> None:
    """Spec 5.1: if FCGI_KEEP_CONN is set, "the application does not close the connection after
    responding to this request; the Web server retains responsibility for the connection"."""
    conn = ApplicationConnection()
    for _ in range(3):
        events = conn.receive_data(request(1, keep_conn=True))
        assert events[0] == RequestStarted(1, Role.RESPONDER, True, PARAMS)
        assert not conn.should_close
        conn.end_request(1, stdout=b"ok")
        assert not conn.should_close


def test_without_keep_conn_the_connection_closes_after_end_request() -> None:
    """Spec 5.1: if FCGI_KEEP_CONN is zero, "the application closes the connection after
    responding to this request"."""
    conn = ApplicationConnection()
    conn.receive_data(request(1))
    assert not conn.should_close
    conn.end_request(1, stdout=b"ok")
    assert conn.should_close


def test_without_keep_conn_close_waits_for_the_other_multiplexed_requests() -> None:
    conn = ApplicationConnection(max_reqs=2)
    conn.receive_data(request(1) + request(2, keep_conn=True))
    conn.end_request(1)
    assert not conn.should_close
    conn.end_request(2)
    assert conn.should_close


# ----------------------------------------------------------- end before the body ends


def test_end_before_body_drains_stdin_before_closing() -> None:
    """The app answers before reading the body: the request moves to DRAINING, the rest of
    the body is discarded without events, and the connection closes only after the empty
    STDIN (closing earlier turns the web server's write into a broken pipe and a 502)."""
    conn = ApplicationConnection()
    conn.receive_data(begin(1) + params(1) + stdin(1, b"first", close=False))
    out = conn.end_request(1, stdout=b"Status: 413 Payload Too Large\r\n\r\n")
    assert parse(out)[-1] == end_record(1)
    assert conn.state_of(1) is RequestState.DRAINING
    assert not conn.should_close
    assert conn.receive_data(stdin(1, b"x" * 100_000, close=False)) == []
    assert not conn.should_close
    assert conn.receive_data(pack_record(RecordType.STDIN, 1)) == []
    assert conn.state_of(1) is None
    assert conn.should_close
    assert conn.data_to_send() == b""


def test_draining_request_may_not_be_written_or_ended_again() -> None:
    conn = ApplicationConnection()
    conn.receive_data(begin(1) + params(1))
    conn.end_request(1)
    with pytest.raises(LocalProtocolError):
        conn.send_stdout(1, b"after the end")
    with pytest.raises(LocalProtocolError):
        conn.end_request(1)


def test_draining_request_ignores_stray_records_without_bad_record() -> None:
    """After our END_REQUEST the id is inactive (spec 3.3): whatever else arrives for it is
    ignored, never reported as a BadRecord the caller would answer a second time."""
    conn = ApplicationConnection()
    conn.receive_data(begin(1))  # ended while PARAMS were still arriving (say, a timeout)
    conn.end_request(1, stdout=b"Status: 408 Request Timeout\r\n\r\n")
    events = conn.receive_data(params(1) + pack_record(RecordType.DATA, 1, b"d") + stdin(1, b"body", close=False))
    assert events == []
    assert conn.state_of(1) is RequestState.DRAINING
    assert conn.receive_data(pack_record(RecordType.STDIN, 1)) == []
    assert conn.should_close


def test_begin_request_reusing_a_draining_id_starts_a_new_request() -> None:
    """Spec 3.3: the id is inactive once we sent END_REQUEST, and a BEGIN_REQUEST makes an
    inactive id active: the web server may reuse it without sending the rest of the old body."""
    conn = ApplicationConnection(mpxs_conns=False)
    conn.receive_data(begin(1, keep_conn=True) + params(1) + stdin(1, b"half", close=False))
    conn.end_request(1, stdout=b"early answer")
    assert conn.state_of(1) is RequestState.DRAINING
    events = conn.receive_data(request(1, b"new body", keep_conn=True))
    assert events == [
        RequestStarted(1, Role.RESPONDER, True, PARAMS),
        RequestBody(1, b"new body"),
        RequestBodyEnd(1),
    ]
    assert conn.data_to_send() == b""


def test_draining_request_does_not_count_against_multiplexing_limits() -> None:
    """The web server saw END_REQUEST: for it, no request is running on the connection."""
    conn = ApplicationConnection(mpxs_conns=False, max_reqs=1)
    conn.receive_data(begin(1, keep_conn=True) + params(1) + stdin(1, b"half", close=False))
    conn.end_request(1)
    events = conn.receive_data(begin(2, keep_conn=True) + params(2))
    assert events == [RequestStarted(2, Role.RESPONDER, True, PARAMS)]
    assert conn.data_to_send() == b""
    # the old body may still come in, and is discarded
    assert conn.receive_data(stdin(1, b"rest")) == []
    assert conn.state_of(1) is None


def _begin_and_end(conn: ApplicationConnection, request_ids: range) -> float:
    """Seconds to begin these requests and end each before its body (so it drains)."""
    started = time.perf_counter()
    for request_id in request_ids:
        conn.receive_data(begin(request_id, keep_conn=True) + params(request_id))
        conn.end_request(request_id)
    return time.perf_counter() - started


def test_many_draining_requests_do_not_slow_down_admitting_new_ones() -> None:
    """A web server that never finishes 20,000 bodies leaves 20,000 requests draining
    (Rule 4); a BEGIN_REQUEST still costs what it did on a fresh connection. (Admission
    used to walk every draining request: 20,000 of them took 26 s, pure Python.)"""
    fresh = min(_begin_and_end(ApplicationConnection(max_reqs=10), range(1, 301)) for _ in range(3))
    conn = ApplicationConnection(max_reqs=10)
    _begin_and_end(conn, range(1, 20001))
    assert conn.active_requests == 20000
    crowded = min(_begin_and_end(conn, range(20001 + 300 * n, 20301 + 300 * n)) for n in range(3))
    assert crowded < 5 * fresh + 0.02, (crowded, fresh)


@pytest.mark.parametrize("way_out", ["empty STDIN", "ABORT_REQUEST", "BEGIN_REQUEST on its id"])
def test_a_request_that_stops_draining_no_longer_frees_a_place(way_out: str) -> None:
    """Draining requests do not count against max_reqs; once one is gone, however it
    went, the running ones count as before."""
    conn = ApplicationConnection(max_reqs=2, mpxs_conns=True)
    conn.receive_data(begin(1, keep_conn=True) + params(1) + begin(2, keep_conn=True) + params(2))
    conn.end_request(1)  # draining: the place is free
    assert conn.receive_data(begin(3, keep_conn=True) + params(3)) == [RequestStarted(3, Role.RESPONDER, True, PARAMS)]
    leave = {"empty STDIN": stdin(1), "ABORT_REQUEST": pack_record(RecordType.ABORT_REQUEST, 1),
             "BEGIN_REQUEST on its id": begin(1, keep_conn=True)}[way_out]
    conn.receive_data(leave)
    conn.data_to_send()
    events = conn.receive_data(begin(4, keep_conn=True))
    assert events == [RequestRejected(4, ProtocolStatus.OVERLOADED, Role.RESPONDER)]
    assert conn.state_of(1) is None


# ---------------------------------------------------------------------------- output


def test_end_request_with_small_stdout_is_stdout_empty_stdout_end_request() -> None:
    """Spec appendix B, example 1: STDOUT, empty STDOUT, END_REQUEST, in that order."""
    conn = ApplicationConnection()
    conn.receive_data(request(1))
    body = b"Content-type: text/html\r\n\r\n<html>"
    out = conn.end_request(1, stdout=body)
    assert types_of(out) == [
        (RecordType.STDOUT, 1, body),
        (RecordType.STDOUT, 1, b""),
        (RecordType.END_REQUEST, 1, bytes(8)),
    ]
    assert len(out) % 8 == 0


def test_end_request_without_stdout_still_closes_the_stdout_stream() -> None:
    """Spec 6.1: "at least one record of the stream type is always transmitted, even if the stream is empty"."""
    conn = ApplicationConnection()
    conn.receive_data(request(1))
    assert types_of(conn.end_request(1, 3)) == [
        (RecordType.STDOUT, 1, b""),
        (RecordType.END_REQUEST, 1, end_record(1, 3).content),
    ]


def test_stderr_is_closed_when_used() -> None:
    """Spec appendix B, example 3: interleaved STDOUT and STDERR, both closed before END_REQUEST."""
    conn = ApplicationConnection()
    conn.receive_data(request(1))
    out = conn.send_stdout(1, b"Content-type: text/html\r\n\r\n<ht")
    out += conn.send_stderr(1, b"config error: missing SI_UID\n")
    out += conn.send_stdout(1, b"ml>")
    out += conn.end_request(1, 938)
    assert types_of(out) == [
        (RecordType.STDOUT, 1, b"Content-type: text/html\r\n\r\n<ht"),
        (RecordType.STDERR, 1, b"config error: missing SI_UID\n"),
        (RecordType.STDOUT, 1, b"ml>"),
        (RecordType.STDOUT, 1, b""),
        (RecordType.STDERR, 1, b""),
        (RecordType.END_REQUEST, 1, end_record(1, 938).content),
    ]


def test_empty_writes_send_nothing() -> None:
    """An empty STDOUT record would close the stream early."""
    conn = ApplicationConnection()
    conn.receive_data(request(1))
    assert conn.send_stdout(1, b"") == b""
    assert conn.send_stderr(1, b"") == b""
    # STDERR was never really used, so it is not closed either
    assert [t for t, _, _ in types_of(conn.end_request(1))] == [RecordType.STDOUT, RecordType.END_REQUEST]


def test_large_stdout_is_split_into_records() -> None:
    conn = ApplicationConnection()
    conn.receive_data(request(1))
    body = bytes(range(256)) * 1000
    out = conn.send_stdout(1, memoryview(body))
    pieces = types_of(out)
    assert len(pieces) == 4
    assert all(t == RecordType.STDOUT and len(c) <= 65535 for t, _, c in pieces)
    assert b"".join(c for _, _, c in pieces) == body


def test_response_may_start_before_the_body_is_read() -> None:
    """Spec 6.2: the application "needn't finish reading from FCGI_STDIN before it begins writing"."""
    conn = ApplicationConnection()
    conn.receive_data(begin(1) + params(1))
    assert types_of(conn.send_stdout(1, b"early")) == [(RecordType.STDOUT, 1, b"early")]


def test_no_output_before_params_are_complete() -> None:
    """Spec 6.2: "The application must wait to finish reading FCGI_PARAMS before it begins
    writing FCGI_STDOUT and FCGI_STDERR"."""
    conn = ApplicationConnection()
    conn.receive_data(begin(1))
    with pytest.raises(LocalProtocolError, match="PARAMS"):
        conn.send_stdout(1, b"too early")
    with pytest.raises(LocalProtocolError, match="PARAMS"):
        conn.send_stderr(1, b"too early")


def test_never_bytes_after_end_request() -> None:
    conn = ApplicationConnection()
    conn.receive_data(request(1, keep_conn=True))
    conn.end_request(1)
    with pytest.raises(LocalProtocolError, match="not active"):
        conn.send_stdout(1, b"x")
    with pytest.raises(LocalProtocolError, match="not active"):
        conn.send_stderr(1, b"x")
    with pytest.raises(LocalProtocolError, match="not active"):
        conn.end_request(1)
    with pytest.raises(LocalProtocolError):
        conn.send_stdout(99, b"never begun")


def test_failed_request_may_still_write_an_error_response() -> None:
    conn = ApplicationConnection()
    conn.receive_data(request(1))
    (bad,) = conn.receive_data(stdin(1, b"after the end of STDIN"))
    assert isinstance(bad, BadRecord)
    assert conn.state_of(1) is RequestState.FAILED
    out = conn.send_stdout(1, b"Status: 500\r\n\r\n") + conn.end_request(1, 1)
    assert [t for t, _, _ in types_of(out)] == [RecordType.STDOUT, RecordType.STDOUT, RecordType.END_REQUEST]
    assert conn.should_close


# ------------------------------------------------------------------------ bad input


def test_params_larger_than_max_params_size_is_a_bad_record() -> None:
    conn = ApplicationConnection(max_params_size=1000, max_reqs=2)
    big = encode_pairs({"HTTP_COOKIE": "c" * 2000})
    events = conn.receive_data(
        begin(1) + begin(2) + params(2) + pack_stream(RecordType.PARAMS, 1, big) + pack_record(RecordType.PARAMS, 1)
    )
    assert events[0] == RequestStarted(2, Role.RESPONDER, False, PARAMS)
    bad = events[1]
    assert isinstance(bad, BadRecord)
    assert (bad.request_id, bad.record_type) == (1, RecordType.PARAMS)
    assert "1000" in bad.reason
    assert len(events) == 2  # the empty PARAMS of the failed request gives no RequestStarted
    assert conn.state_of(1) is RequestState.FAILED


def test_params_exactly_max_params_size_is_accepted() -> None:
    pairs = {"HTTP_COOKIE": "c" * 984}
    assert len(encode_pairs(pairs)) == 1000
    conn = ApplicationConnection(max_params_size=1000)
    assert conn.receive_data(begin(1) + params(1, pairs)) == [RequestStarted(1, Role.RESPONDER, False, pairs)]


def test_failed_request_drains_the_body_before_the_connection_closes() -> None:
    """A BadRecord while the web server is still sending (params too large) is answered
    with an error; closing before the body is drained would turn that answer into a 502."""
    conn = ApplicationConnection(max_params_size=100)
    conn.receive_data(begin(1) + pack_stream(RecordType.PARAMS, 1, encode_pairs({"X": "y" * 200})))
    assert conn.state_of(1) is RequestState.FAILED
    conn.end_request(1, stdout=b"Status: 431 Request Header Fields Too Large\r\n\r\n")
    assert not conn.should_close
    assert conn.receive_data(pack_record(RecordType.PARAMS, 1) + stdin(1, b"body", close=False)) == []
    assert not conn.should_close
    assert conn.receive_data(pack_record(RecordType.STDIN, 1)) == []
    assert conn.should_close
    assert conn.active_requests == 0


def test_failed_request_after_its_body_closes_at_once() -> None:
    conn = ApplicationConnection()
    conn.receive_data(request(1) + begin(1))  # BEGIN on the active id: failed
    assert conn.state_of(1) is RequestState.FAILED
    conn.end_request(1)
    assert conn.state_of(1) is None
    assert conn.should_close


def test_malformed_params_fail_only_their_request() -> None:
    """Rule 2 of the state table: a bad request never tears down the connection, so the
    requests multiplexed with it keep their events."""
    conn = ApplicationConnection(max_reqs=2)
    data = (
        begin(1, keep_conn=True)
        + pack_record(RecordType.PARAMS, 1, b"\x05\x05abc")
        + pack_record(RecordType.PARAMS, 1)
        + request(2, b"two", keep_conn=True)
    )
    events = conn.receive_data(data)
    bad = events[0]
    assert isinstance(bad, BadRecord)
    assert (bad.request_id, bad.record_type) == (1, RecordType.PARAMS)
    assert events[1:] == [RequestStarted(2, Role.RESPONDER, True, PARAMS), RequestBody(2, b"two"), RequestBodyEnd(2)]
    assert conn.state_of(1) is RequestState.FAILED


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        bytes(16),
    ],
)
def test_garbage_bytes_are_a_remote_error(garbage: bytes) -> None:
    conn = ApplicationConnection()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(garbage)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(request(1))


def test_begin_request_body_of_wrong_size_is_a_remote_error_for_good() -> None:
    conn = ApplicationConnection()
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(pack_record(RecordType.BEGIN_REQUEST, 1, b"\x00\x01\x00") + request(2))
    # the records after the bad one were consumed with it: carrying on would lose them silently
    with pytest.raises(RemoteProtocolError, match="already failed"):
        conn.receive_data(request(3))


@pytest.mark.parametrize("record_type", [RecordType.END_REQUEST, RecordType.STDOUT, RecordType.STDERR])
def test_application_to_server_record_types_from_the_web_server_are_a_remote_error(record_type: int) -> None:
    """Spec appendix A: these types are only ever sent by the application to the web server."""
    conn = ApplicationConnection()
    conn.receive_data(begin(1))
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(pack_record(record_type, 1, b"x"))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_events_or_a_remote_error(garbage: bytes) -> None:
    conn = ApplicationConnection(max_reqs=3)
    try:
        events = conn.receive_data(request(1, keep_conn=True)[:8] + garbage)
    except RemoteProtocolError:
        return
    assert all(isinstance(e, Event) for e in events)
