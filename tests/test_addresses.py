"""The one address grammar (fcgibridge.addresses): each form, read by the server's -b and
by the client, where they agree and the two places where they differ (":PORT", port 0)."""

from __future__ import annotations

import socket

import pytest

from fcgibridge.addresses import AddressError, FdAddress, TcpAddress, UnixAddress, parse_bind, parse_connect
from fcgibridge.client import FastCGIClient, parse_address
from fcgibridge.errors import UserError
from fcgibridge.process.listeners import parse_bind as listeners_parse_bind

# The forms both sides read alike.
SHARED = [
    ("127.0.0.1:9000", TcpAddress("127.0.0.1", 9000)),
    (" app.internal:65535 ", TcpAddress("app.internal", 65535)),
    ("[::1]:9000", TcpAddress("::1", 9000)),
    ("[fe80::1%eth0]:9000", TcpAddress("fe80::1%eth0", 9000)),
    ("unix:/run/app.sock", UnixAddress("/run/app.sock")),
    ("unix:///run/app.sock", UnixAddress("/run/app.sock")),
    ("unix://run/app.sock", UnixAddress("run/app.sock")),
    ("unix:run/app.sock", UnixAddress("run/app.sock")),
]


@pytest.mark.parametrize(("text", "expected"), SHARED)
def test_both_sides_read_a_form_alike(text: str, expected: object) -> None:
    assert parse_bind(text) == expected
    assert parse_connect(text) == expected


def test_the_server_reads_the_shared_grammar() -> None:
    assert listeners_parse_bind is parse_bind


@pytest.mark.parametrize(
    ("text", "family", "sockaddr"),
    [
        ("127.0.0.1:9000", socket.AF_INET, ("127.0.0.1", 9000)),
        ("localhost:9000", socket.AF_INET, ("localhost", 9000)),
        ("[::1]:9000", socket.AF_INET6, ("::1", 9000)),
        ("unix:///run/php/fpm.sock", socket.AF_UNIX, "/run/php/fpm.sock"),
        (":9000", socket.AF_INET, ("127.0.0.1", 9000)),
    ],
)
def test_the_client_connects_where_the_address_says(text: str, family: int, sockaddr: object) -> None:
    assert parse_address(text) == (family, sockaddr)
    client = FastCGIClient(text)
    assert (client.family, client.sockaddr) == (family, sockaddr)


def test_no_host_is_this_machine_for_a_client_and_a_question_for_the_server() -> None:
    assert parse_connect(":9000") == TcpAddress("127.0.0.1", 9000)
    with pytest.raises(AddressError, match=r"':9000' has no host; write 127.0.0.1:9000 \(this machine only\) "
                                           r"or 0.0.0.0:9000 \(every interface\)"):
        parse_bind(":9000")


def test_port_0_is_a_free_port_for_the_server_and_an_error_for_a_client() -> None:
    assert parse_bind("127.0.0.1:0") == TcpAddress("127.0.0.1", 0)
    with pytest.raises(ValueError) as info:
        parse_connect("127.0.0.1:0")
    assert str(info.value) == ("bad FastCGI address '127.0.0.1:0': port 0 means any free port, which only a server "
                               "can bind; give the port the server listens on")
    with pytest.raises(ValueError, match="port 0 means any free port"):
        FastCGIClient("[::1]:0")


def test_fd_is_for_the_server_only() -> None:
    assert parse_bind("fd://3") == FdAddress(3)
    with pytest.raises(ValueError, match="'fd://3': fd://N names a socket a server inherited"):
        parse_connect("fd://3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty FastCGI address; use HOST:PORT, [IPv6]:PORT or unix:PATH"),
        ("9000", "bad FastCGI address '9000' has no port; write 127.0.0.1:9000, for example"),
        ("php-fpm", "bad FastCGI address 'php-fpm' has no port; write php-fpm:9000, for example"),
        ("host:", "bad FastCGI address 'host:': the port must be a number from 1 to 65535"),
        ("h:99999", "the port must be a number from 1 to 65535"),
        ("h:\uff19\uff10", "the port must be a number from 1 to 65535"),
        ("::1:9000", "IPv6 addresses go in brackets, as in [::1]:9000"),
        ("[::1", "lacks the closing ']'"),
        ("[::1]", "has no port; write [::1]:9000"),
        ("[localhost]:9000", "'localhost' is not an IPv6 address"),
        ("unix:", "bad FastCGI address 'unix:' has no path; write unix:/run/app.sock"),
        ("unix:a\0b", "contains a NUL character"),
        ("tcp://127.0.0.1:9000", "has an unknown scheme; use HOST:PORT, [IPv6]:PORT or unix:PATH"),
        ("/run/php/fpm.sock", "looks like a path; write unix:/run/php/fpm.sock"),
    ],
)
def test_client_address_mistakes(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert message in str(info.value)
    assert isinstance(info.value, UserError)  # the same error class as the server's -b


@pytest.mark.parametrize(("text", "message"), [("[::1]:0", "port 0"), ("unix:", "has no path"),
                                              ("9000", "has no port")])
def test_a_bad_address_in_fcgibridge_request_is_one_line(text: str, message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A usage mistake like the other bad arguments of fcgibridge request: status 2, no traceback."""
    from fcgibridge.cli import main

    assert main(["request", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fcgibridge: error: bad FastCGI address {text!r}") and message in err
    assert err.count("\n") == 1
