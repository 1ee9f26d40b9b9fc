"""environ.py: CGI variables from each front end, made consistent (no sockets here).

The parameter sets are what each web server sends for an app mounted at ``/P`` and the
request ``/P/items/7?x=1`` (docs/deployment.md, "SCRIPT_NAME and PATH_INFO", and the
pages in docs/servers/ say what each sent in the end-to-end tests).
"""

from __future__ import annotations

import pytest

from fcgibridge.protocol import Role
from fcgibridge.server.environ import (
    asgi_headers,
    asgi_scope,
    fix_script_name,
    http_version,
    is_https,
    wsgi_environ,
)

URI = "/P/items/7?x=1"

FRONT_ENDS: dict[str, dict[str, str]] = {
    # fastcgi_split_path_info ^(/P)(/.*)$
    "nginx split": {"SCRIPT_NAME": "/P", "PATH_INFO": "/items/7", "REQUEST_URI": URI, "DOCUMENT_URI": "/P/items/7"},
    # include fastcgi_params, nothing else: SCRIPT_NAME=$fastcgi_script_name, no PATH_INFO
    "nginx plain": {"SCRIPT_NAME": "/P/items/7", "REQUEST_URI": URI, "DOCUMENT_URI": "/P/items/7"},
    "nginx plain, empty PATH_INFO": {"SCRIPT_NAME": "/P/items/7", "PATH_INFO": "", "REQUEST_URI": URI},
    "apache mod_proxy_fcgi": {
        "SCRIPT_NAME": "/P/items/7",
        "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:9000/P/items/7",
        "REQUEST_URI": URI,
    },
    "h2o": {"SCRIPT_NAME": "", "PATH_INFO": "/P/items/7", "REQUEST_URI": URI},
    "caddy": {"SCRIPT_NAME": "", "PATH_INFO": "/P/items/7", "REQUEST_URI": URI},
    "lighttpd split": {"SCRIPT_NAME": "/P", "PATH_INFO": "/items/7", "REQUEST_URI": URI},
    "mod_fcgid alias": {"SCRIPT_NAME": "/P", "PATH_INFO": "/items/7", "REQUEST_URI": URI},
}

#: Without --root-path: split front ends keep their split; the others cannot tell the
#: mount point, so the app sees the whole path at the root.
EXPECTED = {
    "nginx split": ("/P", "/items/7"),
    "nginx plain": ("", "/P/items/7"),
    "nginx plain, empty PATH_INFO": ("", "/P/items/7"),
    "apache mod_proxy_fcgi": ("", "/P/items/7"),
    "h2o": ("", "/P/items/7"),
    "caddy": ("", "/P/items/7"),
    "lighttpd split": ("/P", "/items/7"),
    "mod_fcgid alias": ("/P", "/items/7"),
}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_script_name_and_path_info_per_front_end(front_end: str) -> None:
    assert fix_script_name(FRONT_ENDS[front_end], "") == EXPECTED[front_end]


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("root_path", ["/P", "/P/"])
def test_root_path_overrides_every_front_end(front_end: str, root_path: str) -> None:
    assert fix_script_name(FRONT_ENDS[front_end], root_path) == ("/P", "/items/7")


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_script_name_plus_path_info_is_the_request_path(front_end: str) -> None:
    script_name, path_info = fix_script_name(FRONT_ENDS[front_end], "")
    assert script_name + path_info == "/P/items/7"
    assert script_name == "" or (script_name.startswith("/") and not script_name.endswith("/"))
    assert path_info.startswith("/")


def test_lighttpd_at_root_without_fix_root_scriptname() -> None:
    # The first segment lands in SCRIPT_NAME; only --root-path can tell.
    params = {"SCRIPT_NAME": "/items", "PATH_INFO": "/7", "REQUEST_URI": "/items/7"}
    assert fix_script_name(params, "") == ("/items", "/7")
    assert fix_script_name(params, "/") == ("", "/items/7")


def test_root_script_name_slash_is_dropped() -> None:
    assert fix_script_name({"SCRIPT_NAME": "/", "PATH_INFO": "/x"}, "") == ("", "/x")
    assert fix_script_name({"SCRIPT_NAME": "/P/", "PATH_INFO": "/x"}, "") == ("/P", "/x")


def test_nothing_at_all_is_the_root() -> None:
    assert fix_script_name({}, "") == ("", "/")
    assert fix_script_name({"REQUEST_URI": "/only/uri?q"}, "") == ("", "/only/uri")


def test_root_path_request_at_the_mount_point() -> None:
    assert fix_script_name({"SCRIPT_NAME": "/P", "REQUEST_URI": "/P?x"}, "/P") == ("/P", "")
    assert fix_script_name({"SCRIPT_NAME": "/P/", "REQUEST_URI": "/P/"}, "/P") == ("/P", "/")


def test_root_path_decodes_request_uri_as_latin1() -> None:
    params = {"SCRIPT_NAME": "", "PATH_INFO": "/ignored", "REQUEST_URI": "/P/a%20b/caf%C3%A9"}
    assert fix_script_name(params, "/P") == ("/P", "/a b/caf\xc3\xa9")


def test_root_path_without_request_uri_uses_the_variables() -> None:
    assert fix_script_name({"SCRIPT_NAME": "", "PATH_INFO": "/P/x"}, "/P") == ("/P", "/x")


# ------------------------------------------------------------------------ environ


def environ(params: dict[str, str], root_path: str = "", role: Role = Role.RESPONDER) -> dict[str, object]:
    return wsgi_environ(params, role, root_path)


def test_http_content_headers_are_not_in_the_environ() -> None:
    env = environ({"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3",
                   "HTTP_CONTENT_TYPE": "text/plain", "HTTP_CONTENT_LENGTH": "3", "HTTP_ACCEPT": "*/*"})
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert env["HTTP_ACCEPT"] == "*/*"


def test_http_content_headers_fill_in_missing_cgi_ones() -> None:
    env = environ({"HTTP_CONTENT_TYPE": "application/json", "HTTP_CONTENT_LENGTH": "12"})
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "12"
    assert "HTTP_CONTENT_TYPE" not in env


def test_cgi_content_headers_win_over_http_ones() -> None:
    env = environ({"CONTENT_TYPE": "a/b", "HTTP_CONTENT_TYPE": "c/d"})
    assert env["CONTENT_TYPE"] == "a/b"


@pytest.mark.parametrize("value", ["", "-1", "abc", "\xb2", " 5", "1e3"])
def test_unknown_content_length_is_removed(value: str) -> None:
    # "" from nginx (chunked, request buffering off), -1 from Caddy: read to the end.
    assert "CONTENT_LENGTH" not in environ({"CONTENT_LENGTH": value})


@pytest.mark.parametrize("value", ["0", "17", "1048576"])
def test_numeric_content_length_is_kept(value: str) -> None:
    assert environ({"CONTENT_LENGTH": value})["CONTENT_LENGTH"] == value


def test_missing_content_length_stays_missing() -> None:
    assert "CONTENT_LENGTH" not in environ({})


def test_defaults_for_a_minimal_request() -> None:
    env = environ({})
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == ""
    assert env["SERVER_NAME"] == "localhost"
    assert env["SERVER_PORT"] == "80"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/"
    assert env["FCGI_ROLE"] == "RESPONDER"


def test_server_name_from_host_header() -> None:
    assert environ({"HTTP_HOST": "example.com:8080"})["SERVER_NAME"] == "example.com"
    assert environ({"HTTP_HOST": "[::1]:8080"})["SERVER_NAME"] == "[::1]"
    assert environ({"HTTP_HOST": "[::1]"})["SERVER_NAME"] == "[::1]"
    assert environ({"HTTP_HOST": "example.com", "SERVER_NAME": "given"})["SERVER_NAME"] == "given"


def test_https_default_port() -> None:
    assert environ({"HTTPS": "on"})["SERVER_PORT"] == "443"
    assert environ({"HTTPS": "on", "SERVER_PORT": "8443"})["SERVER_PORT"] == "8443"


def test_given_values_are_kept_and_role_is_named() -> None:
    env = environ({"REQUEST_METHOD": "POST", "QUERY_STRING": "a=1", "SERVER_PROTOCOL": "HTTP/2.0"},
                  role=Role.AUTHORIZER)
    assert (env["REQUEST_METHOD"], env["QUERY_STRING"], env["SERVER_PROTOCOL"]) == ("POST", "a=1", "HTTP/2.0")
    assert env["FCGI_ROLE"] == "AUTHORIZER"


def test_environ_applies_the_script_name_fix_and_root_path() -> None:
    env = environ(FRONT_ENDS["nginx plain"])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/P/items/7")
    env = environ(FRONT_ENDS["nginx plain"], root_path="/P")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/P", "/items/7")


def test_environ_does_not_change_the_params() -> None:
    params = {"HTTP_CONTENT_TYPE": "a/b", "CONTENT_LENGTH": "", "SCRIPT_NAME": "/x"}
    before = dict(params)
    environ(params)
    assert params == before


@pytest.mark.parametrize(
    ("params", "https"),
    [
        ({"HTTPS": "on"}, True),
        ({"HTTPS": "ON"}, True),
        ({"HTTPS": "1"}, True),
        ({"HTTPS": "off"}, False),
        ({"HTTPS": ""}, False),
        ({"REQUEST_SCHEME": "https"}, True),
        ({"REQUEST_SCHEME": "HTTPS"}, True),
        ({"REQUEST_SCHEME": "http"}, False),
        ({}, False),
    ],
)
def test_is_https(params: dict[str, str], https: bool) -> None:
    assert is_https(params) is https


# --------------------------------------------------------------------- ASGI scope


def test_asgi_headers_skip_duplicates_and_bad_lengths() -> None:
    headers = asgi_headers({"HTTP_CONTENT_TYPE": "a/b", "HTTP_CONTENT_LENGTH": "3", "HTTP_X_THING": "v",
                            "CONTENT_TYPE": "a/b", "CONTENT_LENGTH": "3"})
    assert sorted(headers) == [(b"content-length", b"3"), (b"content-type", b"a/b"), (b"x-thing", b"v")]
    assert (b"content-length", b"\xb2") not in asgi_headers({"CONTENT_LENGTH": "\xb2"})
    assert asgi_headers({"CONTENT_LENGTH": "-1"}) == []


def test_asgi_scope_with_odd_ports_does_not_fail() -> None:
    scope = asgi_scope({"REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "\xb2", "SERVER_NAME": "s", "SERVER_PORT": "x"},
                       Role.RESPONDER, "", None)
    assert scope["client"] == ("10.0.0.1", 0)
    assert scope["server"] == ("s", None)


def test_asgi_scope_paths_follow_the_fix() -> None:
    scope = asgi_scope(FRONT_ENDS["nginx plain"], Role.RESPONDER, "/P", None)
    assert (scope["root_path"], scope["path"]) == ("/P", "/P/items/7")
    assert scope["raw_path"] == b"/P/items/7"
    assert scope["query_string"] == b""  # the params carry no QUERY_STRING


@pytest.mark.parametrize(("protocol", "version"), [("HTTP/1.0", "1.0"), ("HTTP/1.1", "1.1"), ("HTTP/2.0", "2"),
                                                   ("HTTP/3.0", "3"), ("", "1.1")])
def test_http_version(protocol: str, version: str) -> None:
    assert http_version(protocol) == version
