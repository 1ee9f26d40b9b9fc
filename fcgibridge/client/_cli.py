"""``fcgibridge request``: one request from the command line, printed like curl does."""

from __future__ import annotations

import contextlib
import sys
from typing import IO, Any

from ..protocol import Role
from ._base import FastCGIError, Timeout
from ._sync import FastCGIClient


def main_request(args: Any) -> int:
    """Run ``fcgibridge request`` with the namespace of :func:`fcgibridge.cli.request_parser`.

    Prints the body to stdout (with ``-i`` the status line and headers first), streamed as
    it arrives. Exit status 1, with a one-line message, on a connection or protocol error
    and on a 5xx status; 0 otherwise.
    """
    timeout = Timeout(args.timeout, args.timeout, None)
    client = FastCGIClient(args.addr, timeout=timeout, root=getattr(args, "root", None))
    try:
        if getattr(args, "values", False):
            for name, value in client.get_values().items():
                print(f"{name}={value}")
            return 0
        return _request(client, args)
    except (FastCGIError, ValueError) as exc:
        print(f"fcgibridge: error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def request_head(args: Any) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    """The method, headers and extra params that ``-X``, ``-H``, ``--param`` and the data
    options describe (for ``fcgibridge request`` and ``fcgibridge bench``): POST when there
    is data, and form data is sent as ``application/x-www-form-urlencoded`` unless a
    ``Content-Type`` header says otherwise."""
    headers = [_split_header(h) for h in args.header or ()]
    params = dict(p.split("=", 1) for p in args.param or ())
    method = args.method or ("POST" if args.data is not None else "GET")
    if args.data is not None and not any(k.lower() == "content-type" for k, _ in headers) \
            and method in ("POST", "PUT", "PATCH") and not args.data.startswith("@"):
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    return method, headers, params


def _request(client: FastCGIClient, args: Any) -> int:
    method, headers, params = request_head(args)
    with contextlib.ExitStack() as stack:
        body: bytes | IO[bytes] = b""
        if args.data is not None and args.data.startswith("@"):
            body = stack.enter_context(open(args.data[1:], "rb"))
        elif args.data is not None:
            body = args.data.encode()
        data_file = getattr(args, "data_file", None)
        data = stack.enter_context(open(data_file, "rb")) if data_file is not None else None
        role_name = getattr(args, "role", None)
        role = Role[role_name.upper()] if role_name else None
        out = sys.stdout.buffer
        with client.stream(method, args.path or "/", headers=headers, body=body, params=params,
                           script_filename=args.script_filename, role=role, data=data) as response:
            if args.include:
                out.write(f"Status: {response.status} {response.reason}\r\n".encode("latin-1"))
                out.write(b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in response.headers) + b"\r\n")
            for chunk in response.iter_bytes():
                out.write(chunk)
                out.flush()
            stderr = response.stderr
    out.flush()
    if stderr and getattr(args, "stderr", False):
        sys.stderr.buffer.write(stderr)
        sys.stderr.buffer.flush()
    if response.status >= 500:
        print(f"fcgibridge: error: {client.address} answered {response.status} {response.reason}".rstrip(),
              file=sys.stderr)
        return 1
    return 0


def _split_header(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return name.strip(), value.strip()
