"""The clients' shared core (fcgibridge.client._base) in memory, without sockets: the
request spec from the arguments and the client's defaults, the order of a request's
writes (Upload), the passthrough exchange of CGI mode, GET_VALUES answers, and the pool's
keep-or-close decisions. The application side is the protocol core's ApplicationConnection."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import pytest

from fcgibridge.client import ConnectionClosed, FastCGIClient
from fcgibridge.client._base import (
    CHUNK_SIZE,
    SMALL_BODY,
    Channel,
    ClientBase,
    Exchange,
    RequestSpec,
    Timeout,
    Upload,
)
from fcgibridge.protocol import (
    FCGI_MPXS_CONNS,
    ApplicationConnection,
    RequestBody,
    RequestBodyEnd,
    RequestStarted,
    Role,
)

ADDRESS = "127.0.0.1:9000"


class App:
    """The server's end of one in-memory connection."""

    def __init__(self) -> None:
        self.core = ApplicationConnection()
        self.started: list[RequestStarted] = []
        self.body = bytearray()
        self.body_ended = False

    def receive(self, data: bytes) -> None:
        for event in self.core.receive_data(data):
            if isinstance(event, RequestStarted):
                self.started.append(event)
            elif isinstance(event, RequestBody):
                self.body += event.data
            elif isinstance(event, RequestBodyEnd):
                self.body_ended = True


def begin(body: object, *, keep_conn: bool = True, parse_head: bool = True) -> tuple[Channel, Exchange, Upload]:
    channel = Channel(ADDRESS)
    exchange, upload = channel.begin(RequestSpec({"REQUEST_METHOD": "POST"}, Role.RESPONDER, body),
                                     keep_conn=keep_conn, parse_head=parse_head)
    return channel, exchange, upload


def send_all(upload: Upload, app: App) -> list[bytes]:
    writes = list(upload.writes())
    for data in writes:
        app.receive(data)
    return writes


# ----------------------------------------------------------------------- the spec


def test_the_spec_takes_the_clients_defaults_and_the_requests_own() -> None:
    client = FastCGIClient(ADDRESS, timeout=3, root="/srv/www", params={"HTTPS": "on", "A": "client"})
    spec = client._spec("post", "/index.php?x=1", body=b"abc", params={"A": "request"})
    assert (spec.role, spec.body, spec.timeout) == (Role.RESPONDER, b"abc", Timeout(3, 3, None))
    assert spec.params["SCRIPT_FILENAME"] == "/srv/www/index.php"
    assert (spec.params["HTTPS"], spec.params["A"], spec.params["CONTENT_LENGTH"]) == ("on", "request", "3")
    spec = client._spec("GET", "/", root="/other", script_filename="/app/front.php", role=Role.AUTHORIZER,
                        timeout=Timeout(1, 2, 5))
    assert (spec.params["SCRIPT_FILENAME"], spec.params["DOCUMENT_ROOT"]) == ("/app/front.php", "/other")
    assert "CONTENT_LENGTH" not in spec.params  # an empty body has no length to tell
    assert (spec.role, spec.timeout) == (Role.AUTHORIZER, Timeout(1, 2, 5))


def test_a_seekable_file_tells_its_length_from_where_it_stands() -> None:
    handle = io.BytesIO(b"0123456789")
    handle.seek(4)
    assert FastCGIClient(ADDRESS)._spec("PUT", "/", body=handle).params["CONTENT_LENGTH"] == "6"


def test_an_unknown_request_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="nope"):
        FastCGIClient(ADDRESS)._spec("GET", "/", nope=1)  # type: ignore[call-arg]


# --------------------------------------------------------------------- the upload


def test_a_small_body_of_bytes_goes_out_with_the_params_in_one_write() -> None:
    app = App()
    _, exchange, upload = begin(b"x" * SMALL_BODY)
    assert send_all(upload, app) == [upload.first]
    assert (bytes(app.body), app.body_ended, exchange.body_sent) == (b"x" * SMALL_BODY, True, True)


def test_a_larger_body_goes_in_pieces_then_the_end_of_stdin() -> None:
    app = App()
    body = bytes(range(256)) * (SMALL_BODY // 256 + 1)
    _, exchange, upload = begin(body)
    writes = send_all(upload, app)
    assert len(writes) == 1 + -(-len(body) // CHUNK_SIZE) + 1  # params, each piece, the end
    assert (bytes(app.body), app.body_ended, exchange.body_sent) == (body, True, True)


def test_an_iterable_body_skips_empty_pieces_and_no_body_is_an_empty_stdin() -> None:
    app = App()
    _, _, upload = begin(iter([b"ab", b"", bytearray(b"cd")]))
    send_all(upload, app)
    assert (bytes(app.body), app.body_ended) == (b"abcd", True)
    app = App()
    _, _, upload = begin(None)
    assert send_all(upload, app) == [upload.first]
    assert (app.started[0].params, bytes(app.body), app.body_ended) == ({"REQUEST_METHOD": "POST"}, b"", True)


def test_sending_stops_once_the_server_answered_and_the_connection_is_not_reused() -> None:
    app = App()
    channel, exchange, upload = begin(iter([b"a", b"b", b"c"]))
    writes = upload.writes()
    app.receive(next(writes))
    app.receive(next(writes))  # the first piece
    (rid,) = (event.request_id for event in app.started)
    channel.feed(app.core.end_request(rid, stdout=b"Status: 413 Too Large\r\n\r\n"))
    assert exchange.done and list(writes) == []  # nothing more: neither pieces nor the end
    assert bytes(app.body) == b"a" and not exchange.body_sent
    assert not channel.reusable and not channel.keepable(exchange, keep_alive=True)


# ------------------------------------------------------------------ the exchange


def test_a_passthrough_exchange_keeps_stdout_as_it_came() -> None:
    app = App()
    channel, exchange, upload = begin(None, parse_head=False)
    send_all(upload, app)
    rid = app.started[0].request_id
    channel.feed(app.core.send_stdout(rid, b"Status: not a number\r\n"))
    assert not exchange.head_ready and exchange.pop_body() == b"Status: not a number\r\n"
    channel.feed(app.core.end_request(rid, stdout=b"\r\nbody"))
    assert exchange.head is None and exchange.error is None and exchange.head_ready
    assert exchange.pop_body() == b"\r\nbody"


def test_a_parsed_exchange_is_ready_at_its_head() -> None:
    app = App()
    channel, exchange, upload = begin(None)
    send_all(upload, app)
    rid = app.started[0].request_id
    channel.feed(app.core.send_stdout(rid, b"Content-Type: text/plain\r\n"))
    assert not exchange.head_ready
    channel.feed(app.core.send_stdout(rid, b"\r\nhello"))
    assert exchange.head_ready and not exchange.done
    assert exchange.head is not None and exchange.head.status == 200 and exchange.pop_body() == b"hello"


# ------------------------------------------------------------------- GET_VALUES


def test_values_answer_is_none_until_the_result_and_an_error_after_a_close_without_one() -> None:
    app = App()
    channel = Channel(ADDRESS)
    app.receive(channel.ask_values([FCGI_MPXS_CONNS]))
    assert channel.values_answer() is None
    channel.feed(app.core.data_to_send())
    assert channel.values_answer() == {FCGI_MPXS_CONNS: "1"}
    channel = Channel(ADDRESS)
    channel.eof()
    with pytest.raises(ConnectionClosed, match="without answering FCGI_GET_VALUES"):
        channel.values_answer()


# -------------------------------------------------------------- keep or close


def finished(*, keep_conn: bool = True) -> tuple[Channel, Exchange]:
    app = App()
    channel, exchange, upload = begin(None, keep_conn=keep_conn)
    send_all(upload, app)
    channel.feed(app.core.end_request(app.started[0].request_id, stdout=b"\r\n"))
    return channel, exchange


def test_abort_first_only_on_a_connection_worth_keeping() -> None:
    channel, exchange, _ = begin(None)
    assert channel.abort_first(exchange, keeping=True)
    assert not channel.abort_first(exchange, keeping=False)
    channel.reusable = False
    assert not channel.abort_first(exchange, keeping=True)
    channel, exchange = finished()
    assert not channel.abort_first(exchange, keeping=True)  # it ended: nothing to abort


@dataclass
class Conn:
    channel: Channel = field(default_factory=lambda: Channel(ADDRESS))
    idle_since: float = 0.0
    alive: bool = True


def pool(**options: object) -> ClientBase[Conn]:
    return ClientBase(ADDRESS, keep_alive=True, **options)  # type: ignore[arg-type]


def test_the_pool_keeps_finished_connections_up_to_its_size() -> None:
    client = pool(pool_size=1)
    one, two = Conn(), Conn()
    one.channel, exchange = finished()
    assert client._keep(one, exchange) and client.idle_connections == 1
    two.channel, exchange = finished()
    assert not client._keep(two, exchange)  # full: the caller closes it
    three = Conn()
    three.channel, exchange = finished(keep_conn=False)
    assert not pool()._keep(three, exchange)  # no KEEP_CONN: never pooled
    assert client._take_all_idle() == [one] and client.idle_connections == 0


def test_taking_from_the_pool_passes_over_expired_and_dead_connections() -> None:
    client = pool(idle_timeout=10.0)
    now = time.monotonic()
    fresh, dead, expired = Conn(idle_since=now), Conn(idle_since=now, alive=False), Conn(idle_since=now - 11)
    client._pool.extend([fresh, expired, dead])  # the newest is taken first
    conn, stale = client._take_idle(lambda c: c.alive)
    assert (conn, stale) == (fresh, [dead, expired])
    assert client._take_idle(lambda c: c.alive) == (None, [])
