"""The FILTER role's ``data=`` in the clients' shared core (the spec, the order of the
writes) against the protocol core in memory, and ``fcgibridge request --data-file``
against a real fcgibridge server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import serve

from fcgibridge.cli import main
from fcgibridge.client import FastCGIClient
from fcgibridge.client._base import SMALL_BODY, Channel, Upload
from fcgibridge.protocol import (
    ApplicationConnection,
    Event,
    RequestBody,
    RequestBodyEnd,
    RequestData,
    RequestDataEnd,
    RequestStarted,
    Role,
)

ADDRESS = "127.0.0.1:9000"
ROLES = (Role.RESPONDER, Role.AUTHORIZER, Role.FILTER)


def events_of(upload: Upload) -> tuple[list[bytes], list[Event]]:
    app = ApplicationConnection(roles=ROLES)
    writes = list(upload.writes())
    events: list[Event] = []
    for data in writes:
        events += app.receive_data(data)
    return writes, events


def streams(events: list[Event]) -> tuple[bytes, bytes, list[Event]]:
    body = b"".join(e.data for e in events if isinstance(e, RequestBody))
    data = b"".join(e.data for e in events if isinstance(e, RequestData))
    return body, data, [e for e in events if not isinstance(e, RequestBody | RequestData)]


# ----------------------------------------------------------------------- the spec


def test_data_makes_a_filter_request_with_its_params(tmp_path: Path) -> None:
    client = FastCGIClient(ADDRESS)
    spec = client._spec("GET", "/page.html", data=b"<p>hi</p>")
    assert (spec.role, spec.data, spec.params["FCGI_DATA_LENGTH"]) == (Role.FILTER, b"<p>hi</p>", "9")
    assert "FCGI_DATA_LAST_MOD" not in spec.params
    page = tmp_path / "page.html"
    page.write_bytes(b"0123456789")
    with page.open("rb") as handle:
        spec = client._spec("GET", "/page.html", data=handle, params={"FCGI_DATA_LAST_MOD": "7"})
        assert spec.params["FCGI_DATA_LENGTH"] == "10"
        assert spec.params["FCGI_DATA_LAST_MOD"] == "7"  # params win, as for every variable
        assert client._spec("GET", "/", data=handle).params["FCGI_DATA_LAST_MOD"] == str(int(page.stat().st_mtime))
    assert "FCGI_DATA_LENGTH" not in client._spec("GET", "/", data=iter([b"x"])).params


def test_a_filter_without_data_sends_an_empty_stream_and_other_roles_take_none() -> None:
    client = FastCGIClient(ADDRESS)
    spec = client._spec("GET", "/", role=Role.FILTER)
    assert (spec.data, spec.params["FCGI_DATA_LENGTH"]) == (b"", "0")
    assert client._spec("GET", "/").data is None
    with pytest.raises(ValueError, match="data= is the FILTER role's data stream; a RESPONDER request has none"):
        client._spec("GET", "/", role=Role.RESPONDER, data=b"x")


# ---------------------------------------------------------------------- the writes


def begin(body: Any, data: Any) -> Upload:
    client = FastCGIClient(ADDRESS)
    spec = client._spec("POST", "/", body=body, data=data)
    return Channel(ADDRESS).begin(spec, keep_conn=True)[1]


def test_small_body_and_data_go_out_in_one_write() -> None:
    writes, events = events_of(begin(b"form", b"file"))
    assert len(writes) == 1
    body, data, rest = streams(events)
    assert (body, data) == (b"form", b"file")
    assert [type(e) for e in rest] == [RequestStarted, RequestBodyEnd, RequestDataEnd]


def gen(*pieces: bytes) -> Iterator[bytes]:
    yield from pieces


BIG_BODY = b"z" * (SMALL_BODY + 5)
BIG_DATA = b"d" * (SMALL_BODY + 7)


@pytest.mark.parametrize(("body", "data", "sent_body", "sent_data"), [
    (b"small", lambda: gen(b"a", b"", b"b"), b"small", b"ab"),
    (lambda: gen(b"x", b"y"), b"small", b"xy", b"small"),
    (lambda: io.BytesIO(BIG_BODY), lambda: io.BytesIO(BIG_DATA), BIG_BODY, BIG_DATA),
    (b"", BIG_DATA, b"", BIG_DATA),
])
def test_large_or_streamed_body_and_data_are_sent_in_order(body: Any, data: Any, sent_body: bytes,
                                                           sent_data: bytes) -> None:
    upload = begin(body() if callable(body) else body, data() if callable(data) else data)
    writes, events = events_of(upload)
    assert len(writes) > 1
    assert streams(events) == (sent_body, sent_data, [RequestStarted(1, Role.FILTER, True, events[0].params),
                                                      RequestBodyEnd(1), RequestDataEnd(1)])
    first_data = next(i for i, e in enumerate(events) if isinstance(e, RequestData))
    assert events.index(RequestBodyEnd(1)) < first_data  # spec 6.4: the data follows the whole body
    assert upload.exchange.body_sent


def test_the_data_is_not_sent_once_the_server_answered() -> None:
    upload = begin(b"", gen(b"one", b"two"))
    writes = upload.writes()
    next(writes)
    upload.exchange.ended = object()  # type: ignore[assignment]  # as if END_REQUEST had come
    assert list(writes) == []
    assert not upload.exchange.body_sent and not upload.channel.reusable


# ------------------------------------------------------------- fcgibridge request


def test_request_command_sends_the_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        data = environ["fcgi.data"].read()
        return [environ["FCGI_ROLE"].encode(), b" ", environ["FCGI_DATA_LENGTH"].encode(), b" ", data.upper()]

    page = tmp_path / "page.txt"
    page.write_bytes(b"hello filter")
    with serve(app) as server:
        assert main(["request", server.address, "/page.txt", "--data-file", str(page)]) == 0
        assert capsys.readouterr().out == "FILTER 12 HELLO FILTER"
        assert main(["request", server.address, "--role", "filter", "-d", "b"]) == 0
        assert capsys.readouterr().out == "FILTER 0 "


@pytest.mark.parametrize(("argv", "message"), [
    (["--data-file", "/nonexistent/page"], "request: --data-file /nonexistent/page: not a readable file"),
    (["--role", "responder", "--data-file", "x"], "request: --data-file is the FILTER role's data stream, not for "
                                                  "--role responder"),
    (["--role", "nope"], "request: argument --role: invalid choice: 'nope'"),
])
def test_request_command_mistakes(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["request", "127.0.0.1:1", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"fcgibridge: error: {message}")
