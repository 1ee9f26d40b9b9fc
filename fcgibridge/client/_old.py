"""A blocking FastCGI client: talk to PHP-FPM, another fcgibridge, or any FastCGI app.

It drives the protocol core's client role over a socket. ``fcgibridge request`` uses it.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .cgi import CGIResponseError, split_response
from .protocol import (
    ClientConnection,
    RemoteProtocolError,
    RequestEnded,
    Role,
    Stderr,
    Stdout,
    ValuesResult,
)

_CHUNK = 64 * 1024


class FastCGIError(Exception):
    """Base class of client errors; the message names the address."""


class ConnectError(FastCGIError):
    """Could not connect to the FastCGI server."""


class RequestTimeout(FastCGIError):
    """The server did not answer in time."""


class ConnectionClosed(FastCGIError):
    """The server closed the connection before END_REQUEST."""


class ProtocolFailure(FastCGIError):
    """The server's bytes were not valid FastCGI, or its response not valid CGI."""


@dataclass
class Response:
    """A whole FastCGI response."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    stderr: bytes = b""
    app_status: int = 0
    protocol_status: int = 0
    raw: bytes = field(default=b"", repr=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), default)


def parse_address(text: str) -> tuple[int, Any]:
    """``(family, sockaddr)`` for ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:PATH``."""
    if text.startswith("unix:"):
        return socket.AF_UNIX, text[5:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad FastCGI address {text!r}: use HOST:PORT, [IPv6]:PORT or unix:PATH")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host or "127.0.0.1", int(port))


def build_params(
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    content_length: int | None = None,
    script_filename: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """CGI variables for an HTTP request, the way nginx's ``fastcgi_params`` sends them."""
    parts = urlsplit(target)
    path = parts.path or "/"
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "fcgibridge",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": method.upper(),
        "REQUEST_URI": target if target.startswith("/") else "/" + target,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": parts.query,
        "SERVER_NAME": "localhost",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "HTTP_HOST": "localhost",
    }
    if script_filename is not None:
        params["SCRIPT_FILENAME"] = script_filename
        params["SCRIPT_NAME"], params["PATH_INFO"] = path, ""
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            params[key] = value
        else:
            params["HTTP_" + key] = value
    if content_length is not None:
        params["CONTENT_LENGTH"] = str(content_length)
    if extra:
        params.update(extra)
    return params


class FastCGIClient:
    """One blocking connection at a time to one FastCGI server."""

    def __init__(self, address: str, *, timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.family, self.sockaddr = parse_address(address)

    def _connect(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.sockaddr)
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot connect to {self.address}: {exc.strerror or exc}") from None
        return sock

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        params: Mapping[str, str] | None = None,
        script_filename: str | None = None,
        role: Role = Role.RESPONDER,
    ) -> Response:
        """Send one request and read the whole response."""
        all_params = build_params(method, path, headers=headers, content_length=len(body) if body else None,
                                  script_filename=script_filename, extra=params)
        core = ClientConnection()
        request_id, data = core.begin_request(all_params, role=role, keep_conn=False)
        view = memoryview(body)
        pieces = [core.send_stdin(request_id, view[i : i + _CHUNK]) for i in range(0, len(body), _CHUNK)]
        data += b"".join(pieces) + core.end_stdin(request_id)
        with self._connect() as sock:
            self._send_all(sock, data)
            stdout, stderr, ended = self._read_until_end(sock, core, request_id)
        try:
            head, content = split_response(b"".join(stdout))
        except CGIResponseError as exc:
            raise ProtocolFailure(f"{self.address} sent an invalid CGI response: {exc}") from None
        return Response(head.status, head.reason, head.headers, content, b"".join(stderr), ended.app_status,
                        ended.protocol_status, raw=b"".join(stdout))

    def get_values(
        self, names: Iterable[str] = ("FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS")
    ) -> dict[str, str]:
        """Ask the server for its FCGI_GET_VALUES variables."""
        core = ClientConnection()
        with self._connect() as sock:
            self._send_all(sock, core.get_values(names))
            while True:
                for event in core.receive_data(self._recv(sock)):
                    if isinstance(event, ValuesResult):
                        return event.values

    def _send_all(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except TimeoutError:
            raise RequestTimeout(f"{self.address} did not take the request within {self.timeout} s") from None
        except OSError as exc:
            raise ConnectionClosed(f"{self.address} closed the connection while we sent: {exc}") from None

    def _recv(self, sock: socket.socket) -> bytes:
        try:
            data = sock.recv(_CHUNK)
        except TimeoutError:
            raise RequestTimeout(f"{self.address} did not answer within {self.timeout} s") from None
        except OSError as exc:
            raise ConnectionClosed(f"{self.address} dropped the connection: {exc}") from None
        if not data:
            raise ConnectionClosed(f"{self.address} closed the connection before END_REQUEST")
        return data

    def _read_until_end(
        self, sock: socket.socket, core: ClientConnection, request_id: int
    ) -> tuple[list[bytes], list[bytes], RequestEnded]:
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        deadline = time.monotonic() + self.timeout * 10
        while time.monotonic() < deadline:
            try:
                events = core.receive_data(self._recv(sock))
            except RemoteProtocolError as exc:
                raise ProtocolFailure(f"{self.address} broke the FastCGI protocol: {exc}") from None
            for event in events:
                if isinstance(event, Stdout) and event.request_id == request_id:
                    stdout.append(event.data)
                elif isinstance(event, Stderr) and event.request_id == request_id:
                    stderr.append(event.data)
                elif isinstance(event, RequestEnded) and event.request_id == request_id:
                    return stdout, stderr, event
        raise RequestTimeout(f"{self.address} did not finish the response in time")


def main_request(args: Any) -> int:
    """``fcgibridge request``: print the response; non-zero on errors and 5xx."""
    headers = [_split_header(h) for h in args.header or ()]
    body = _data(args.data)
    params = dict(p.split("=", 1) for p in args.param or ())
    client = FastCGIClient(args.addr, timeout=args.timeout)
    method = args.method or ("POST" if body else "GET")
    try:
        response = client.request(method, args.path or "/", headers=headers, body=body, params=params,
                                  script_filename=args.script_filename)
    except (FastCGIError, ValueError) as exc:
        print(f"fcgibridge: error: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    if args.include:
        out.write(f"Status: {response.status} {response.reason}\r\n".encode("latin-1"))
        out.write(b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in response.headers) + b"\r\n")
    out.write(response.body)
    out.flush()
    if response.stderr:
        sys.stderr.buffer.write(response.stderr)
    return 1 if response.status >= 500 else 0


def _split_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise SystemExit(f"fcgibridge: error: header {text!r} must look like 'Name: value'")
    return name.strip(), value.strip()


def _data(data: str | None) -> bytes:
    if not data:
        return b""
    if data.startswith("@"):
        with open(data[1:], "rb") as handle:
            return handle.read()
    return data.encode()
