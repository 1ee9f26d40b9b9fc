"""The seed corpus: real FastCGI traffic, made with the protocol core's own writers.

A web server's side (what the app target reads) comes from ``ClientConnection``, the
way fcgibridge's client and nginx send it; an application's side (what the client
target reads) is what ``ApplicationConnection`` answers to those requests. Each seed
starts with the two bytes the targets read first (``fuzz/targets.py``): the config
byte and the seed that cuts the stream into reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fcgibridge.protocol import (
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    ApplicationConnection,
    ClientConnection,
    RecordType,
    RequestAborted,
    RequestBodyEnd,
    Role,
    encode_pairs,
    pack_record,
    pack_stream,
)

#: What nginx's fastcgi_params and a browser make of ``GET /index.php?q=1`` (the cookie
#: is long enough for a 4-byte length).
NGINX_PARAMS = {
    "QUERY_STRING": "q=1",
    "REQUEST_METHOD": "GET",
    "CONTENT_TYPE": "",
    "CONTENT_LENGTH": "",
    "SCRIPT_NAME": "/index.php",
    "REQUEST_URI": "/index.php?q=1",
    "DOCUMENT_URI": "/index.php",
    "DOCUMENT_ROOT": "/srv/www",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http",
    "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_SOFTWARE": "nginx/1.22.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "51234",
    "SERVER_ADDR": "127.0.0.1",
    "SERVER_PORT": "8080",
    "SERVER_NAME": "localhost",
    "REDIRECT_STATUS": "200",
    "SCRIPT_FILENAME": "/srv/www/index.php",
    "PATH_INFO": "",
    "HTTP_HOST": "localhost:8080",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.5",
    "HTTP_COOKIE": "session=" + "0123456789abcdef" * 10 + "; theme=dark",
    "HTTP_CONNECTION": "keep-alive",
}
POST_PARAMS = {**NGINX_PARAMS, "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded",
               "CONTENT_LENGTH": "27", "QUERY_STRING": ""}


def web_server_request(client: ClientConnection, params: dict[str, str], body: bytes = b"", *,
                       role: Role = Role.RESPONDER, keep_conn: bool = True) -> tuple[int, bytes]:
    request_id, head = client.begin_request(params, role=role, keep_conn=keep_conn)
    if role is Role.AUTHORIZER:
        return request_id, head
    return request_id, head + client.end_stdin(request_id, body)


def app_streams() -> dict[str, bytes]:
    """What web servers send: one request, a body, keep-alive, multiplexing, management."""
    streams: dict[str, bytes] = {}
    client = ClientConnection()
    streams["nginx-get"] = web_server_request(client, NGINX_PARAMS, keep_conn=False)[1]

    client = ClientConnection()
    request_id, head = client.begin_request(POST_PARAMS)
    body = client.send_stdin(request_id, b"quantity=100") + client.end_stdin(request_id, b"&item=3047936xx")
    streams["post-body-in-records"] = head + body

    # One kept connection, three requests one after the other: each reuses id 1.
    streams["keep-alive-three"] = b"".join(web_server_request(ClientConnection(), NGINX_PARAMS, b"x" * n)[1]
                                           for n in (0, 5, 300))

    client = ClientConnection()
    streams["get-values"] = (client.get_values([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, "OTHER"])
                             + pack_record(42, 0, bytes(8)) + client.get_values([FCGI_MPXS_CONNS]))

    client = ClientConnection()
    one, begin_one = client.begin_request(NGINX_PARAMS)
    two, begin_two = client.begin_request(POST_PARAMS)
    three, begin_three = client.begin_request({"REQUEST_METHOD": "GET"}, keep_conn=False)
    streams["multiplexed"] = b"".join((
        begin_one[:16], begin_two, begin_one[16:], client.send_stdin(two, b"a=1"), begin_three,
        client.end_stdin(one), client.abort_request(three), client.end_stdin(two, b"&b=2"), client.end_stdin(three),
    ))

    client = ClientConnection()
    streams["authorizer"] = web_server_request(client, NGINX_PARAMS, role=Role.AUTHORIZER)[1]
    # A FILTER request (spec 6.4): its body, then the file to filter as the DATA stream.
    client = ClientConnection()
    request_id, head = web_server_request(client, {**NGINX_PARAMS, "FCGI_DATA_LENGTH": "11"}, b"q=1",
                                          role=Role.FILTER)
    streams["filter"] = head + client.send_data(request_id, b"<html>") + client.end_data(request_id, b"</x>")
    # A GET_VALUES too large to be one (the core refuses it).
    streams["huge-get-values"] = client.get_values(["FCGI_MAX_REQS"] * 400)

    # PARAMS cut inside a pair, padding that is not the minimum, a DATA record, an abort.
    encoded = encode_pairs(NGINX_PARAMS)
    odd = [pack_record(RecordType.BEGIN_REQUEST, 5, bytes((0, 1, 1, 0, 0, 0, 0, 0)))]
    odd += [pack_record(RecordType.PARAMS, 5, encoded[i : i + 37]) for i in range(0, len(encoded), 37)]
    odd += [pack_record(RecordType.PARAMS, 5), bytes((1, RecordType.STDIN, 0, 5, 0, 3, 5, 0)) + b"abc" + bytes(5),
            pack_record(RecordType.DATA, 5, b"data"), pack_record(RecordType.ABORT_REQUEST, 5)]
    streams["params-in-pieces"] = b"".join(odd)

    big = ClientConnection()
    request_id, head = big.begin_request(NGINX_PARAMS)
    streams["large-body"] = head + big.send_stdin(request_id, bytes(3000)) + big.end_stdin(request_id)
    return streams


def app_seeds() -> dict[str, bytes]:
    """The streams under a few configs: one request at a time, multiplexed, small limits."""
    seeds: dict[str, bytes] = {}
    for name, stream in app_streams().items():
        for config in (0b000_0_0_1_01, 0b001_0_0_1_11, 0b010_1_1_0_00, 0b101_0_1_1_10, 0b111_0_0_0_11):
            seeds[f"{name}-{config:02x}"] = bytes((config, 7)) + stream
    return seeds


def app_answers(config: int) -> bytes:
    """An application's answers to the requests ``check_client`` sends for ``config``."""
    count = 1 + (config & 3)
    client = ClientConnection()
    wire = b"".join(web_server_request(client, {"REQUEST_METHOD": "POST", "N": str(n)}, b"body")[1]
                    for n in range(count))
    if config & 8:
        wire += client.get_values([FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS])
    wire += pack_record(33, 0, bytes(8))
    app = ApplicationConnection(max_reqs=10)
    out = [b""]
    for event in app.receive_data(wire):
        if isinstance(event, (RequestBodyEnd, RequestAborted)):
            request_id = event.request_id
            if request_id % 2:
                out.append(app.send_stderr(request_id, b"PHP Notice: something\n"))
            out.append(app.send_stdout(request_id, b"Status: 200 OK\r\nContent-Type: text/html\r\n\r\n"))
            out.append(app.end_request(request_id, request_id - 1, stdout=b"<p>hello %d</p>" % request_id))
    out.append(app.data_to_send())
    return b"".join(out)


def client_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for config in (0x00, 0x05, 0x0B, 0x1F, 0x3E, 0x83):
        seeds[f"answers-{config:02x}"] = bytes((config, 3)) + app_answers(config)
    # A large response split over records, then the end; an unknown-role rejection.
    large = pack_stream(RecordType.STDOUT, 1, b"Content-Type: text/plain\r\n\r\n" + bytes(5000))
    seeds["large-stdout"] = b"\x00\x09" + large + pack_record(RecordType.STDOUT, 1) + bytes(
        (1, RecordType.END_REQUEST, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    seeds["rejected"] = b"\x01\x01" + bytes((1, RecordType.END_REQUEST, 0, 2, 0, 8, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0))
    return seeds


def records_seeds() -> dict[str, bytes]:
    seeds = {f"pairs-{i}": bytes((i,)) + encode_pairs(params)
             for i, params in enumerate((NGINX_PARAMS, {"A": "B"}, {"LONG": "v" * 200, "": ""}))}
    for name, stream in list(app_streams().items())[:4]:
        seeds[f"records-{name}"] = b"\x02" + stream
    return seeds


SEEDS = {"app": app_seeds, "client": client_seeds, "records": records_seeds}


def write(target: str, directory: Path) -> int:
    """Write the seeds of ``target`` into ``directory`` (named by content, as libFuzzer
    names its corpus files); returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for data in seeds.values():
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(seeds)
