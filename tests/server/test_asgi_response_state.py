"""The ASGI response state (Rules 1-5 of fcgibridge.server.asgi) on a fake request stream:
every message in every state, and how a failed call ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fcgibridge.protocol import Role
from fcgibridge.server.asgi import REFUSALS, ASGIAdapter, ASGIRequest, Response
from fcgibridge.server.connection import ClientDisconnected, FastCGIProtocol, RequestStream, WorkerState

START = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]}
HEAD = b"Status: 200 OK\r\na: b\r\n\r\n"


async def no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app is not called here")


ADAPTER = ASGIAdapter(no_app, lifespan="off")


class FakeStream(RequestStream):
    """A request stream that keeps what it is given instead of sending it."""

    def __init__(self) -> None:
        super().__init__(FastCGIProtocol(WorkerState(ADAPTER)), 1, Role.RESPONDER, True, {"REQUEST_URI": "/x"})
        self.out: list[tuple[str, bytes, int]] = []

    def write(self, data: bytes) -> None:
        self.out.append(("write", data, 0))

    def end(self, data: bytes = b"", app_status: int = 0, head: bytes = b"") -> None:
        self.out.append(("end", head + data, app_status))

    async def drain(self) -> None:
        return None


def request() -> tuple[ASGIRequest, FakeStream]:
    stream = FakeStream()
    return ASGIRequest(ADAPTER, stream), stream


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def in_state(state: Response) -> tuple[ASGIRequest, FakeStream]:
    req, stream = request()
    steps = {Response.WAITING: [], Response.HELD: [START], Response.STREAMING: [START, body(b"x", True)],
             Response.COMPLETE: [START, body(b"x")], Response.GONE: []}[state]
    for message in steps:
        asyncio.run(req.send(message))
    if state is Response.GONE:
        req.disconnect()
    assert req.response is state
    return req, stream


def test_a_streamed_response_goes_through_every_state_and_the_head_leaves_with_the_first_body() -> None:
    req, stream = request()
    asyncio.run(req.send(START))
    assert (req.response, stream.out) == (Response.HELD, [])
    asyncio.run(req.send(body(b"one", True)))
    asyncio.run(req.send(body(b"", True)))  # nothing to write
    asyncio.run(req.send(body(b"two")))
    assert req.response is Response.COMPLETE
    assert stream.out == [("write", HEAD + b"one", 0), ("end", b"two", 0)]
    assert asyncio.run(req.receive()) == {"type": "http.disconnect"}


@pytest.mark.parametrize(("state", "kind"), sorted(REFUSALS, key=str))
def test_a_message_its_state_does_not_take_is_refused_and_changes_nothing(state: Response, kind: str) -> None:
    req, stream = in_state(state)
    before = list(stream.out)
    with pytest.raises(RuntimeError) as caught:
        asyncio.run(req.send({"type": kind, "status": 200}))
    assert str(caught.value) == REFUSALS[(state, kind)]
    assert (req.response, stream.out) == (state, before)


def test_the_refusals_are_todays_messages() -> None:
    assert set(REFUSALS.values()) == {
        "ASGI app sent 'http.response.body' before 'http.response.start'",
        "ASGI app sent 'http.response.start' twice",
        "ASGI app sent 'http.response.body' after the response was complete",
    }


@pytest.mark.parametrize("state", [s for s in Response if s is not Response.GONE])
def test_an_unknown_message_type_is_unexpected_in_any_state(state: Response) -> None:
    req, _ = in_state(state)
    kind: object
    for kind in ("websocket.accept", None, "", ["unhashable"]):
        with pytest.raises(RuntimeError, match="unexpected message type"):
            asyncio.run(req.send({"type": kind}))


@pytest.mark.parametrize("state", list(Response))
def test_after_a_disconnect_every_message_raises_client_disconnected(state: Response) -> None:
    req, stream = in_state(state)
    before = list(stream.out)
    req.disconnect()
    for message in (START, body(b"x"), {"type": "websocket.accept"}):
        with pytest.raises(ClientDisconnected):
            asyncio.run(req.send(message))
    assert stream.out == before
    assert asyncio.run(req.receive()) == {"type": "http.disconnect"}


@pytest.mark.parametrize(("state", "ending"), [
    (Response.WAITING, [("end", b"Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8"
                               b"\r\n\r\nInternal Server Error\n", 1)]),
    (Response.HELD, [("end", b"Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8"
                            b"\r\n\r\nInternal Server Error\n", 1)]),
    (Response.STREAMING, [("end", b"", 1)]),
    (Response.COMPLETE, []),
    (Response.GONE, []),
])
def test_a_failed_call_ends_with_a_500_or_cut_short_or_not_at_all(state: Response,
                                                                   ending: list[tuple[str, bytes, int]]) -> None:
    req, stream = in_state(state)
    before = list(stream.out)
    req._finish_failed()
    assert stream.out == before + ending
    assert req.response is (Response.GONE if state is Response.GONE else Response.COMPLETE)
