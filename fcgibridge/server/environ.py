"""CGI variables from the web server, made consistent, as a WSGI environ or an ASGI scope.

Web servers disagree on SCRIPT_NAME and PATH_INFO (the table in docs/deployment.md):
nginx with plain ``fastcgi_params`` and Apache mod_proxy_fcgi send the whole path as
SCRIPT_NAME and no PATH_INFO; h2o and Caddy send an empty SCRIPT_NAME; lighttpd splits
at the mount point.
:func:`fix_script_name` turns each into the WSGI meaning: SCRIPT_NAME is the mount
point (``""`` at the root), PATH_INFO the rest. ``--root-path`` fixes the mount point
when it cannot be told from the variables.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from ..protocol import Role

#: ``Role.RESPONDER`` -> ``"RESPONDER"`` (a dict lookup is cheaper than ``Enum.name``).
_ROLE_NAMES = {role: role.name for role in Role}


def _uri_path(params: dict[str, str]) -> str:
    """The decoded path of REQUEST_URI (PEP 3333: bytes as latin-1)."""
    uri = params.get("REQUEST_URI") or params.get("DOCUMENT_URI") or ""
    raw = uri.partition("?")[0]
    return unquote_to_bytes(raw).decode("latin-1") if "%" in raw else raw


def fix_script_name(params: dict[str, str], root_path: str) -> tuple[str, str]:
    """``(SCRIPT_NAME, PATH_INFO)`` in their WSGI meaning."""
    script_name = params.get("SCRIPT_NAME", "")
    path_info = params.get("PATH_INFO", "")
    if root_path:
        mount = root_path.rstrip("/")
        full = _uri_path(params) or (script_name + path_info)
        if full == mount or full.startswith(mount + "/"):
            full = full[len(mount) :]
        return mount, full
    if not path_info:
        # Only SCRIPT_NAME (nginx plain fastcgi_params, Apache mod_proxy_fcgi): it is the
        # whole path; or neither: take the path from REQUEST_URI.
        return "", script_name or _uri_path(params) or "/"
    if script_name.endswith("/") and path_info.startswith("/"):
        script_name = script_name.rstrip("/")
    return script_name, path_info


def _is_length(text: str) -> bool:
    """A decimal number of ASCII digits (``str.isdigit`` also takes ``"²"``)."""
    return text.isascii() and text.isdigit()


def _host_name(host: str) -> str:
    """The name part of a Host header: ``example.com:8080`` -> ``example.com``,
    ``[::1]:8080`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.partition(":")[0]


def is_https(params: dict[str, str]) -> bool:
    https = params.get("HTTPS", "").lower()
    return https in ("on", "1", "yes", "true") or params.get("REQUEST_SCHEME", "").lower() == "https"


def wsgi_environ(params: dict[str, str], role: Role, root_path: str) -> dict[str, Any]:
    """A WSGI environ built straight from the params (the wsgi.* keys are the caller's)."""
    environ: dict[str, Any] = dict(params)
    # nginx passes every request header, so Content-Type and Content-Length arrive twice;
    # PEP 3333 wants them only without the HTTP_ prefix.
    content_type = environ.pop("HTTP_CONTENT_TYPE", None)
    content_length = environ.pop("HTTP_CONTENT_LENGTH", None)
    if content_type is not None and "CONTENT_TYPE" not in environ:
        environ["CONTENT_TYPE"] = content_type
    if content_length is not None and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = content_length
    length = environ.get("CONTENT_LENGTH")
    if length is not None and not _is_length(length):
        # "" (nginx, chunked upload) or "-1" (Caddy): the length is unknown; read to the end.
        del environ["CONTENT_LENGTH"]
    environ["SCRIPT_NAME"], environ["PATH_INFO"] = fix_script_name(params, root_path)
    environ.setdefault("REQUEST_METHOD", "GET")
    environ.setdefault("QUERY_STRING", "")
    environ.setdefault("SERVER_NAME", _host_name(environ.get("HTTP_HOST", "")) or "localhost")
    environ.setdefault("SERVER_PORT", "443" if is_https(params) else "80")
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
    environ["FCGI_ROLE"] = _ROLE_NAMES[role]
    return environ


_HTTP_VERSIONS = {"2.0": "2", "3.0": "3"}


def http_version(protocol: str) -> str:
    version = protocol.partition("/")[2] or "1.1"
    return _HTTP_VERSIONS.get(version, version)


_SKIPPED_HEADERS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})

#: ``HTTP_ACCEPT_ENCODING`` -> ``b"accept-encoding"``: the same few names come with every
#: request. Bounded, since clients choose the names.
_HEADER_NAMES: dict[str, bytes] = {}
_MAX_HEADER_NAMES = 512


def _header_name(variable: str) -> bytes:
    name = _HEADER_NAMES.get(variable)
    if name is None:
        name = variable[5:].lower().replace("_", "-").encode("latin-1")
        if len(_HEADER_NAMES) < _MAX_HEADER_NAMES:
            _HEADER_NAMES[variable] = name
    return name


def asgi_headers(params: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """HTTP_* variables as ASGI header pairs; Content-Type and Content-Length from their
    CGI variables, else from the HTTP_ ones (a web server configured to send only those)."""
    headers = [
        (_header_name(name), value.encode("latin-1"))
        for name, value in params.items()
        if name.startswith("HTTP_") and name not in _SKIPPED_HEADERS
    ]
    content_type = params.get("CONTENT_TYPE") or params.get("HTTP_CONTENT_TYPE")
    if content_type:
        headers.append((b"content-type", content_type.encode("latin-1")))
    length = params.get("CONTENT_LENGTH") or params.get("HTTP_CONTENT_LENGTH", "")
    if _is_length(length):
        headers.append((b"content-length", length.encode("latin-1")))
    return headers


def _utf8(text: str) -> str:
    """A latin-1 CGI string (raw bytes) as the UTF-8 text ASGI wants in ``path``."""
    return text.encode("latin-1").decode("utf-8", "replace") if not text.isascii() else text


def _port(value: str | None) -> int | None:
    return int(value) if value and _is_length(value) else None


def asgi_scope(params: dict[str, str], role: Role, root_path: str, state: dict[str, Any] | None) -> dict[str, Any]:
    """An ASGI HTTP connection scope (spec 2.4) built from the params."""
    script_name, path_info = fix_script_name(params, root_path)
    raw_uri = params.get("REQUEST_URI", "").partition("?")[0]
    client_port = _port(params.get("REMOTE_PORT"))
    server_port = _port(params.get("SERVER_PORT"))
    server_host = params.get("SERVER_ADDR") or params.get("SERVER_NAME")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version(params.get("SERVER_PROTOCOL", "HTTP/1.1")),
        "method": params.get("REQUEST_METHOD", "GET").upper(),
        "scheme": "https" if is_https(params) else "http",
        "path": _utf8(script_name + path_info),
        "raw_path": raw_uri.encode("latin-1") if raw_uri else (script_name + path_info).encode("latin-1"),
        "query_string": params.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": _utf8(script_name),
        "headers": asgi_headers(params),
        "client": (params["REMOTE_ADDR"], client_port or 0) if params.get("REMOTE_ADDR") else None,
        "server": (server_host, server_port) if server_host else None,
        "extensions": {"fastcgi": {"role": _ROLE_NAMES[role], "params": params}},
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope
