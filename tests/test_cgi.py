"""cgi.py on its own: where a head ends, the lenient summary for logs, the error response."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fcgibridge.cgi import (
    CGIResponseError,
    error_response,
    find_head_end,
    head_size,
    parse_head,
    split_response,
    summarize_head,
)


def earliest_blank_line(data: bytes) -> tuple[int, int] | None:
    """The rule find_head_end implements, written the slow and obvious way."""
    candidates = [(pos, pos + len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (pos := data.find(sep)) >= 0]
    if data.startswith(b"\r\n"):
        candidates.append((0, 2))
    elif data.startswith(b"\n"):
        candidates.append((0, 1))
    return min(candidates) if candidates else None


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b": ", b"Status: 200"]), max_size=12))
def test_find_head_end_is_the_first_blank_line(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert find_head_end(data) == earliest_blank_line(data)
    assert find_head_end(bytearray(data)) == earliest_blank_line(data)


@pytest.mark.parametrize(("data", "size"), [
    (b"", None),
    (b"Status: 200 OK\r\nX: y\r\n", None),
    (b"Status: 200 OK\r\n\r\nbody", 18),
    (b"Status: 200 OK\n\nbody\r\n\r\n", 16),
    (b"X: y\r\n\r\nbody\n\n", 8),
    (b"\r\nbody", 2),
    (b"\nbody", 1),
])
def test_head_size(data: bytes, size: int | None) -> None:
    assert head_size(data) == size


@pytest.mark.parametrize(("data", "status", "headers"), [
    (b"", None, {}),
    (b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope", 404, {"status": "404 Not Found",
                                                                          "content-type": "text/plain"}),
    (b"Location: /else\r\n\r\n", 302, {"location": "/else"}),
    (b"Status: 201\r\nLocation: /new\r\n\r\n", 201, {"status": "201", "location": "/new"}),
    (b"Content-Type: a\r\ncontent-type: b\r\n\r\n", 200, {"content-type": "a"}),  # the first value wins
    (b"Status: 200 OK\r\nX-Cut: sho", 200, {"status": "200 OK", "x-cut": "sho"}),  # cut short: all of it
    (b"Status: 200 OK\r\n\r\nBody: not a header", 200, {"status": "200 OK"}),
    (b"garbage line\r\n Status : 500\r\n\r\n", 500, {"status": "500"}),
    (b"Status: abc\r\nLocation: /x\r\n\r\n", 302, {"status": "abc", "location": "/x"}),
    (b"Status: \xb2\xb2\xb2\r\n\r\n", 200, {"status": "\xb2\xb2\xb2"}),  # "²²²" is no number
])
def test_summarize_head(data: bytes, status: int | None, headers: dict[str, str]) -> None:
    assert summarize_head(data) == (status, headers)


def test_summarize_head_agrees_with_the_parser_on_a_valid_head() -> None:
    data = b"Status: 418 I'm a teapot\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nbody"
    head, body = split_response(data)
    status, headers = summarize_head(data)
    assert (status, headers["set-cookie"]) == (head.status, head.get("Set-Cookie"))
    assert body == b"body"


def test_parse_head_implied_status() -> None:
    assert (parse_head(b"Location: /x").status, parse_head(b"Location: /x").reason) == (302, "Found")
    assert (parse_head(b"X: y").status, parse_head(b"X: y").reason) == (200, "OK")
    with pytest.raises(CGIResponseError):
        parse_head(b"Status: 2000")


def test_error_response() -> None:
    assert error_response(500) == (b"Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                   b"\r\nInternal Server Error\n")
    head, body = split_response(error_response(413, "Request body too large"))
    assert (head.status, head.reason, head.get("content-type"), body) == (
        413, "Request Entity Too Large", "text/plain; charset=utf-8", b"Request body too large\n")
