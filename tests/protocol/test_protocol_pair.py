"""The client role talking to the application role in memory, bytes cut anywhere.

Both sides are the sans-IO core, so whatever one writes the other must read back the
same: requests, bodies, responses, multiplexing, aborts, rejections and GET_VALUES.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcgibridge.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ApplicationConnection,
    ClientConnection,
    Event,
    LocalProtocolError,
    ProtocolStatus,
    RequestAborted,
    RequestBody,
    RequestBodyEnd,
    RequestEnded,
    RequestRejected,
    RequestStarted,
    RequestState,
    Role,
    Stderr,
    Stdout,
    ValuesResult,
)

Cutter = Callable[[bytes], Sequence[bytes]]


def whole(data: bytes) -> Sequence[bytes]:
    return [data]


def bytewise(data: bytes) -> Sequence[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def cutter_from(draw: st.DataObject) -> Cutter:
    """Cuts each write at points hypothesis chooses."""

    def cut(data: bytes) -> Sequence[bytes]:
        if not data:
            return [data]
        points = draw.draw(st.lists(st.integers(0, len(data)), max_size=6), label="cuts")
        edges = [0, *sorted(set(points)), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(edges)]

    return cut


@dataclass
class ConnectionPair:
    """A ClientConnection wired to an ApplicationConnection through in-memory byte pipes."""

    app: ApplicationConnection = field(default_factory=lambda: ApplicationConnection(max_reqs=64))
    client: ClientConnection = field(default_factory=ClientConnection)
    to_app_cut: Cutter = whole
    to_client_cut: Cutter = whole

    def to_app(self, data: bytes) -> list[Event]:
        """Deliver client bytes to the app; return the app's events (its own replies go back)."""
        events: list[Event] = []
        for piece in self.to_app_cut(data):
            events += self.app.receive_data(piece)
        return events

    def to_client(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for piece in self.to_client_cut(data):
            events += self.client.receive_data(piece)
        return events

    def app_replies(self) -> list[Event]:
        """What the app core answered by itself (management, rejections), as the client sees it."""
        return self.to_client(self.app.data_to_send())


def merge_stdout(events: Sequence[Event], request_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Stdout) and e.request_id == request_id)


def merge_body(events: Sequence[Event], request_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, RequestBody) and e.request_id == request_id)


def without_data(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, RequestBody | Stdout | Stderr)]


# ----------------------------------------------------------------- one request


def round_trip(pair: ConnectionPair, params: dict[str, str], body: bytes, response: bytes, errors: bytes) -> None:
    request_id, data = pair.client.begin_request(params, keep_conn=False)
    data += pair.client.send_stdin(request_id, body[: len(body) // 2])
    data += pair.client.end_stdin(request_id, body[len(body) // 2 :])
    events = pair.to_app(data)
    started = RequestStarted(request_id, Role.RESPONDER, False, params)
    assert without_data(events) == [started, RequestBodyEnd(request_id)]
    assert merge_body(events, request_id) == body
    out = pair.app.send_stdout(request_id, response[:10]) + pair.app.send_stderr(request_id, errors)
    out += pair.app.end_request(request_id, 7, stdout=response[10:])
    assert pair.app.should_close
    got = pair.to_client(out)
    assert merge_stdout(got, request_id) == response
    assert b"".join(e.data for e in got if isinstance(e, Stderr)) == errors
    assert got[-1] == RequestEnded(request_id, 7, ProtocolStatus.REQUEST_COMPLETE)
    assert pair.client.active_requests == 0 and pair.app.active_requests == 0


PARAMS = {"REQUEST_METHOD": "POST", "REQUEST_URI": "/caf\xc3\xa9", "CONTENT_TYPE": "text/plain"}


def test_round_trip_whole() -> None:
    round_trip(ConnectionPair(), PARAMS, b"name=value" * 10000, b"Status: 200 OK\r\n\r\n" + b"r" * 150_000, b"warn\n")


def test_round_trip_byte_at_a_time() -> None:
    pair = ConnectionPair(to_app_cut=bytewise, to_client_cut=bytewise)
    round_trip(pair, PARAMS, b"x" * 3000, b"Status: 204 No Content\r\n\r\n", b"")


def test_round_trip_empty_body_and_empty_response() -> None:
    round_trip(ConnectionPair(), {}, b"", b"", b"")


# CGI variables as PEP 3333 native strings: UTF-8 bytes seen as latin-1, names up to 4-byte lengths
native_text = st.text(max_size=200).map(lambda t: t.encode("utf-8").decode("latin-1"))


@settings(max_examples=80, deadline=None)
@given(
    st.data(),
    st.dictionaries(native_text, native_text, max_size=5),
    st.binary(max_size=3000),
    st.binary(max_size=3000),
    st.binary(max_size=200),
)
def test_round_trip_random_cuts(
    data: st.DataObject, params: dict[str, str], body: bytes, response: bytes, errors: bytes
) -> None:
    pair = ConnectionPair(to_app_cut=cutter_from(data), to_client_cut=cutter_from(data))
    round_trip(pair, params, body, response, errors)


# ------------------------------------------------------------------ multiplexing


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(1, 6))
def test_multiplexed_requests_answered_in_any_order(data: st.DataObject, n: int) -> None:
    """Spec appendix B, example 4, generalised: n requests on one connection, their records
    interleaved both ways, answered out of order; each side attributes every byte right."""
    pair = ConnectionPair(to_app_cut=cutter_from(data), to_client_cut=cutter_from(data))
    bodies: dict[int, bytes] = {}
    wire = b""
    for i in range(n):
        request_id, begin = pair.client.begin_request({"N": str(i)})
        bodies[request_id] = data.draw(st.binary(max_size=500), label="body")
        wire += begin
    # the client sends the bodies in interleaved pieces
    pending = {rid: [body[j : j + 97] for j in range(0, len(body), 97)] for rid, body in bodies.items()}
    while pending:
        rid = data.draw(st.sampled_from(sorted(pending)), label="stdin of")
        if pending[rid]:
            wire += pair.client.send_stdin(rid, pending[rid].pop(0))
        else:
            wire += pair.client.end_stdin(rid)
            del pending[rid]
    events = pair.to_app(wire)
    assert sorted(e.request_id for e in events if isinstance(e, RequestStarted)) == sorted(bodies)
    assert sorted(e.request_id for e in events if isinstance(e, RequestBodyEnd)) == sorted(bodies)
    for rid, body in bodies.items():
        assert merge_body(events, rid) == body
        started = next(e for e in events if isinstance(e, RequestStarted) and e.request_id == rid)
        assert started.keep_conn and started.params == {"N": str(rid - 1)}
    # the app answers in pieces, interleaved, ending in an order hypothesis picks
    responses = {rid: b"<%d>" % rid * data.draw(st.integers(0, 300), label="response size") for rid in bodies}
    out = b""
    open_ids = sorted(bodies)
    sent = {rid: 0 for rid in bodies}
    while open_ids:
        rid = data.draw(st.sampled_from(open_ids), label="stdout of")
        step = data.draw(st.integers(0, 400), label="step")
        if sent[rid] + step < len(responses[rid]):
            out += pair.app.send_stdout(rid, responses[rid][sent[rid] : sent[rid] + step])
            sent[rid] += step
        else:
            out += pair.app.end_request(rid, rid, stdout=responses[rid][sent[rid] :])
            open_ids.remove(rid)
    got = pair.to_client(out)
    for rid, response in responses.items():
        assert merge_stdout(got, rid) == response
        assert RequestEnded(rid, rid, 0) in got
    assert not pair.app.should_close
    assert pair.app.active_requests == 0 and pair.client.active_requests == 0


def test_keep_conn_connection_serves_many_requests_with_id_one() -> None:
    pair = ConnectionPair(app=ApplicationConnection(mpxs_conns=False))
    for i in range(20):
        request_id, data = pair.client.begin_request({"I": str(i)})
        assert request_id == 1
        events = pair.to_app(data + pair.client.end_stdin(request_id))
        assert events == [RequestStarted(1, Role.RESPONDER, True, {"I": str(i)}), RequestBodyEnd(1)]
        got = pair.to_client(pair.app.end_request(1, stdout=b"%d" % i))
        assert got == [Stdout(1, b"%d" % i), RequestEnded(1, 0, 0)]
        assert not pair.app.should_close


# --------------------------------------------------------- the app's own answers


def test_get_values_round_trip() -> None:
    pair = ConnectionPair(app=ApplicationConnection(max_conns=4, max_reqs=16, mpxs_conns=False))
    assert pair.to_app(pair.client.get_values([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS])) == []
    assert pair.app_replies() == [ValuesResult({FCGI_MAX_CONNS: "4", FCGI_MAX_REQS: "16", FCGI_MPXS_CONNS: "0"})]


def test_rejected_request_frees_its_id_on_both_sides() -> None:
    """Spec 5.5: FCGI_CANT_MPX_CONN rejects a concurrent request with END_REQUEST."""
    pair = ConnectionPair(app=ApplicationConnection(max_reqs=4, mpxs_conns=False))
    one, data = pair.client.begin_request(PARAMS)
    two, more = pair.client.begin_request(PARAMS)
    events = pair.to_app(data + more + pair.client.end_stdin(two, b"ignored"))
    assert without_data(events) == [
        RequestStarted(one, Role.RESPONDER, True, PARAMS),
        RequestRejected(two, ProtocolStatus.CANT_MPX_CONN, Role.RESPONDER),
    ]
    assert pair.app_replies() == [RequestEnded(two, 0, ProtocolStatus.CANT_MPX_CONN)]
    assert not pair.client.is_active(two) and pair.client.is_active(one)


def test_unknown_role_round_trip() -> None:
    pair = ConnectionPair(app=ApplicationConnection(roles=[Role.RESPONDER]))
    request_id, data = pair.client.begin_request(PARAMS, role=Role.AUTHORIZER)
    assert pair.to_app(data) == [RequestRejected(request_id, ProtocolStatus.UNKNOWN_ROLE, Role.AUTHORIZER)]
    assert pair.app_replies() == [RequestEnded(request_id, 0, ProtocolStatus.UNKNOWN_ROLE)]


def test_authorizer_round_trip_without_stdin() -> None:
    """Spec 6.3: an Authorizer gets PARAMS only; it answers, and the connection can close."""
    pair = ConnectionPair()
    request_id, data = pair.client.begin_request(PARAMS, role=Role.AUTHORIZER, keep_conn=False)
    assert pair.to_app(data) == [RequestStarted(request_id, Role.AUTHORIZER, False, PARAMS)]
    got = pair.to_client(pair.app.end_request(request_id, stdout=b"Status: 200 OK\r\nVariable-USER: ann\r\n\r\n"))
    assert got[-1] == RequestEnded(request_id, 0, 0)
    assert pair.app.should_close


def test_abort_round_trip() -> None:
    """Spec 5.4: the app answers ABORT_REQUEST with END_REQUEST, and the id is free again."""
    pair = ConnectionPair()
    request_id, data = pair.client.begin_request(PARAMS)
    pair.to_app(data + pair.client.send_stdin(request_id, b"partial"))
    assert pair.to_app(pair.client.abort_request(request_id)) == [RequestAborted(request_id)]
    assert pair.app.send_stdout(request_id, b"dropped") == b""
    assert pair.to_client(pair.app.end_request(request_id, 1)) == [RequestEnded(request_id, 1, 0)]
    assert pair.client.active_requests == 0 and pair.app.active_requests == 0
    assert pair.client.begin_request(PARAMS)[0] == request_id


def test_early_answer_then_the_id_is_reused_on_the_same_connection() -> None:
    """The app answers before the body is complete. The client stops sending it (the request
    is over for it) and reuses id 1 at once; the app, draining the old body, starts the new one."""
    pair = ConnectionPair(app=ApplicationConnection(mpxs_conns=False))
    request_id, data = pair.client.begin_request(PARAMS)
    pair.to_app(data + pair.client.send_stdin(request_id, b"first half"))
    got = pair.to_client(pair.app.end_request(request_id, stdout=b"Status: 413 Payload Too Large\r\n\r\n"))
    assert got[-1] == RequestEnded(request_id, 0, 0)
    assert pair.app.state_of(request_id) is RequestState.DRAINING
    with pytest.raises(LocalProtocolError, match="not active"):
        pair.client.end_stdin(request_id)
    again, data = pair.client.begin_request(PARAMS)
    assert again == request_id
    events = pair.to_app(data + pair.client.end_stdin(again, b"second"))
    assert events == [
        RequestStarted(again, Role.RESPONDER, True, PARAMS),
        RequestBody(again, b"second"),
        RequestBodyEnd(again),
    ]
    assert pair.app_replies() == []
