"""ClientConnection: the role a web server plays, as fcgibridge's FastCGI client."""

from __future__ import annotations

import pytest
from recordkit import end_request, parse, stdout

from fcgibridge.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ApplicationConnection,
    ClientConnection,
    Event,
    LocalProtocolError,
    ProtocolStatus,
    Record,
    RecordType,
    RemoteProtocolError,
    RequestBody,
    RequestBodyEnd,
    RequestEnded,
    RequestStarted,
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

PARAMS = {"REQUEST_METHOD": "POST", "SCRIPT_FILENAME": "/srv/index.php", "CONTENT_LENGTH": "5"}


# ---------------------------------------------------------------------- request ids


def test_request_ids_start_at_one_and_are_distinct_while_active() -> None:
    client = ClientConnection()
    ids = [client.begin_request(PARAMS)[0] for _ in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert client.active_requests == 5
    assert all(client.is_active(i) for i in ids)
    assert not client.is_active(6)


def test_request_id_is_reused_after_end_request() -> None:
    """Spec 3.3: "The Web server attempts to keep FastCGI request IDs small. That way the
    application can keep track of request ID states using a short array"."""
    client = ClientConnection()
    first, _ = client.begin_request(PARAMS)
    assert client.receive_data(end_request(first)) == [RequestEnded(first, 0, ProtocolStatus.REQUEST_COMPLETE)]
    assert not client.is_active(first)
    again, _ = client.begin_request(PARAMS)
    assert again == first == 1


def test_lowest_free_id_is_taken() -> None:
    client = ClientConnection()
    for _ in range(4):
        client.begin_request(PARAMS)
    client.receive_data(end_request(3) + end_request(2))
    assert [client.begin_request(PARAMS)[0] for _ in range(3)] == [2, 3, 5]


def test_a_sequence_of_requests_on_a_kept_connection_all_use_id_one() -> None:
    client = ClientConnection()
    for _ in range(100):
        request_id, _ = client.begin_request(PARAMS)
        assert request_id == 1
        client.receive_data(stdout(1, b"ok") + end_request(1))


def test_all_ids_in_use_is_a_local_error() -> None:
    client = ClientConnection()
    for _ in range(0xFFFF):
        client.begin_request({})
    assert client.active_requests == 0xFFFF
    with pytest.raises(LocalProtocolError, match="65535"):
        client.begin_request({})
    client.receive_data(end_request(40000))
    assert client.begin_request({})[0] == 40000


# ---------------------------------------------------------------------- output bytes


def test_begin_request_bytes() -> None:
    client = ClientConnection()
    request_id, data = client.begin_request(PARAMS, role=Role.AUTHORIZER, keep_conn=False)
    begin, *param_records = parse(data)
    assert begin.type == RecordType.BEGIN_REQUEST and begin.request_id == request_id
    assert records.parse_begin_request(begin.content) == (Role.AUTHORIZER, False)
    assert all(r.type == RecordType.PARAMS and r.request_id == request_id for r in param_records)
    assert param_records[-1].content == b""  # the PARAMS stream is closed
    assert decode_pairs(b"".join(r.content for r in param_records)) == PARAMS
    _, default = ClientConnection().begin_request(PARAMS)
    assert records.parse_begin_request(parse(default)[0].content) == (Role.RESPONDER, True)


def test_params_accept_pairs_and_bytes() -> None:
    client = ClientConnection()
    _, data = client.begin_request([(b"HTTP_X", b"\xff\x00"), ("A", "\xe9")])
    content = b"".join(r.content for r in parse(data)[1:])
    assert decode_pairs(content) == {"HTTP_X": "\xff\x00", "A": "\xe9"}


def test_stdin_bytes_and_closing() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    body = client.send_stdin(request_id, b"ab") + client.send_stdin(request_id, b"")
    body += client.end_stdin(request_id, b"c")
    assert [(r.type, r.content) for r in parse(body)] == [
        (RecordType.STDIN, b"ab"),
        (RecordType.STDIN, b"c"),
        (RecordType.STDIN, b""),
    ]


def test_end_stdin_without_data_is_only_the_empty_record() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    assert parse(client.end_stdin(request_id)) == [Record(RecordType.STDIN, request_id, b"")]


def test_large_stdin_is_split() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    body = b"b" * 150_000
    pieces = parse(client.send_stdin(request_id, memoryview(body)))
    assert len(pieces) == 3
    assert b"".join(r.content for r in pieces) == body


def test_send_stdin_after_end_stdin_is_a_local_error() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    client.end_stdin(request_id, b"hello")
    with pytest.raises(LocalProtocolError, match="closed"):
        client.send_stdin(request_id, b"more")
    with pytest.raises(LocalProtocolError):
        client.end_stdin(request_id)


def test_stdin_for_an_unknown_or_ended_request_is_a_local_error() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError, match="not active"):
        client.send_stdin(1, b"x")
    request_id, _ = client.begin_request(PARAMS)
    client.receive_data(end_request(request_id))
    with pytest.raises(LocalProtocolError, match="not active"):
        client.end_stdin(request_id)
    with pytest.raises(LocalProtocolError, match="not active"):
        client.abort_request(request_id)


def test_abort_request_bytes_and_the_request_stays_active_until_end_request() -> None:
    """Spec 5.4: after ABORT_REQUEST the application still "responds ... with {FCGI_END_REQUEST, R, ...}"."""
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    assert parse(client.abort_request(request_id)) == [Record(RecordType.ABORT_REQUEST, request_id, b"")]
    assert client.is_active(request_id)
    assert client.receive_data(end_request(request_id, 1)) == [RequestEnded(request_id, 1, 0)]
    assert not client.is_active(request_id)


def test_get_values_bytes() -> None:
    data = ClientConnection().get_values([FCGI_MAX_CONNS, FCGI_MPXS_CONNS])
    ((rtype, rid, content),) = parse(data)
    assert (rtype, rid) == (RecordType.GET_VALUES, 0)
    assert decode_pairs(content) == {FCGI_MAX_CONNS: "", FCGI_MPXS_CONNS: ""}


# ---------------------------------------------------------------------------- events


def test_stdout_stderr_and_end_request_events() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    data = (
        stdout(request_id, b"Status: 200 OK\r\n\r\n")
        + pack_stream(RecordType.STDERR, request_id, b"warning\n")
        + stdout(request_id, b"body")
        + pack_record(RecordType.STDOUT, request_id)
        + pack_record(RecordType.STDERR, request_id)
        + end_request(request_id, 938)
    )
    assert client.receive_data(data) == [
        Stdout(request_id, b"Status: 200 OK\r\n\r\n"),
        Stderr(request_id, b"warning\n"),
        Stdout(request_id, b"body"),
        RequestEnded(request_id, 938, ProtocolStatus.REQUEST_COMPLETE),
    ]
    assert not client.is_active(request_id)


@pytest.mark.parametrize("status", list(ProtocolStatus))
def test_end_request_protocol_status(status: ProtocolStatus) -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    assert client.receive_data(end_request(request_id, 0, status)) == [RequestEnded(request_id, 0, status)]


def test_events_fed_bytewise_are_the_same_data() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    data = stdout(request_id, b"x" * 70000) + pack_record(RecordType.STDOUT, request_id) + end_request(request_id)
    events: list[Event] = []
    for i in range(len(data)):
        events += client.receive_data(data[i : i + 1])
    assert b"".join(e.data for e in events if isinstance(e, Stdout)) == b"x" * 70000
    assert events[-1] == RequestEnded(request_id, 0, 0)


def test_stray_records_for_unknown_ids_are_ignored() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    stray = stdout(9, b"not ours") + pack_stream(RecordType.STDERR, 9, b"nor this") + end_request(9)
    stray += pack_record(RecordType.BEGIN_REQUEST, 9, bytes(8))  # even nonsense for an id we never used
    assert client.receive_data(stray) == []
    assert client.is_active(request_id)
    assert not client.is_active(9)


def test_records_after_end_request_are_ignored() -> None:
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    client.receive_data(end_request(request_id))
    assert client.receive_data(stdout(request_id, b"late") + end_request(request_id)) == []


def test_multiplexed_responses_are_attributed() -> None:
    client = ClientConnection()
    one, _ = client.begin_request(PARAMS)
    two, _ = client.begin_request(PARAMS)
    data = stdout(two, b"2a") + stdout(one, b"1a") + end_request(two) + stdout(one, b"1b") + end_request(one, 3)
    assert client.receive_data(data) == [
        Stdout(two, b"2a"),
        Stdout(one, b"1a"),
        RequestEnded(two, 0, 0),
        Stdout(one, b"1b"),
        RequestEnded(one, 3, 0),
    ]


def test_values_result_and_unknown_type_events() -> None:
    client = ClientConnection()
    result = pack_record(RecordType.GET_VALUES_RESULT, 0, encode_pairs({FCGI_MAX_REQS: "50"}))
    assert client.receive_data(result + records.pack_unknown_type(12)) == [
        ValuesResult({FCGI_MAX_REQS: "50"}),
        UnknownTypeResult(12),
    ]


def test_get_values_round_trip_against_the_application_role() -> None:
    """Spec 4.1: the query carries names with empty values; the answer only the names understood."""
    client = ClientConnection()
    app = ApplicationConnection(max_conns=8, max_reqs=20, mpxs_conns=True)
    assert app.receive_data(client.get_values([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, "NOPE"])) == []
    assert client.receive_data(app.data_to_send()) == [
        ValuesResult({FCGI_MAX_CONNS: "8", FCGI_MAX_REQS: "20", FCGI_MPXS_CONNS: "1"})
    ]


def test_whole_request_against_the_application_role() -> None:
    client = ClientConnection()
    app = ApplicationConnection()
    request_id, data = client.begin_request(PARAMS, keep_conn=False)
    data += client.end_stdin(request_id, b"a=b&c")
    assert app.receive_data(data) == [
        RequestStarted(request_id, Role.RESPONDER, False, PARAMS),
        RequestBody(request_id, b"a=b&c"),
        RequestBodyEnd(request_id),
    ]
    reply = app.end_request(request_id, stdout=b"Status: 201 Created\r\n\r\n")
    assert client.receive_data(reply) == [
        Stdout(request_id, b"Status: 201 Created\r\n\r\n"),
        RequestEnded(request_id, 0, ProtocolStatus.REQUEST_COMPLETE),
    ]
    assert app.should_close
    assert client.active_requests == 0


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "record",
    [
        pack_record(RecordType.PARAMS, 1, b"x"),  # a web-server-only type for our request
        pack_record(RecordType.STDIN, 1),
        pack_record(99, 1, b"?"),
        pack_record(RecordType.END_REQUEST, 1, b"short"),  # END_REQUEST body of 5 bytes
        pack_record(RecordType.BEGIN_REQUEST, 0, bytes(8)),  # not a management type
        pack_record(RecordType.UNKNOWN_TYPE, 0, b"\x05"),
        pack_record(RecordType.GET_VALUES_RESULT, 0, b"\x05\x05abc"),
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
    ],
)
def test_bad_input_from_the_application_is_a_remote_error(record: bytes) -> None:
    client = ClientConnection()
    client.begin_request(PARAMS)
    with pytest.raises(RemoteProtocolError):
        client.receive_data(record)


@pytest.mark.parametrize(
    "bad", [b"\x02" + bytes(7), pack_record(RecordType.END_REQUEST, 1, b"short")], ids=["version", "end-body"]
)
def test_remote_error_is_final(bad: bytes) -> None:
    """Records after the bad one were consumed with it, so carrying on would lose events silently."""
    client = ClientConnection()
    request_id, _ = client.begin_request(PARAMS)
    with pytest.raises(RemoteProtocolError):
        client.receive_data(bad + stdout(request_id, b"lost"))
    with pytest.raises(RemoteProtocolError, match="already"):
        client.receive_data(end_request(request_id))
