"""The checks every front end passes, against ``tests/apps/frontend_app.py`` behind it.

A test module for one web server builds a :class:`Site` (the server, the mount point of
the app, the interface it serves) and runs every function in :data:`CHECKS` on it, usually
through ``pytest.mark.parametrize("check", CHECKS, ids=check_id)``::

    @pytest.mark.parametrize("check", CHECKS, ids=check_id)
    def test_frontend(site: Site, check: Check) -> None:
        check(site)

:func:`check_flask_urls` is apart: it needs the Flask example mounted at ``/app``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from apps.frontend_app import COOKIES, SECRET, pattern
from webserver import Reply

MiB = 1024 * 1024
UPLOAD_SIZE = 1 * MiB
BIG_RESPONSE = 5_000_000
CLIENTS = 50
REQUESTS_PER_CLIENT = 20


class Server(Protocol):
    """What the checks need of a web server: :class:`webserver.WebServer` and :class:`nginx.Nginx` have it."""

    port: int

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                headers: Mapping[str, str] | None = None, **kwargs: Any) -> Reply: ...


@dataclass
class Site:
    """``frontend_app`` (``interface`` ``"wsgi"`` or ``"asgi"``) reached through ``server`` at ``mount``."""

    server: Server
    interface: str
    #: Where the app is mounted: ``""`` for the root, ``"/app"`` for a prefix.
    mount: str = ""
    #: A directory the backend can read (for the streaming gate files).
    scratch: Path = field(default_factory=Path)

    def url(self, path: str) -> str:
        return self.mount + path

    def request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                headers: Mapping[str, str] | None = None, **kwargs: Any) -> Reply:
        return self.server.request(method, self.url(path), body, headers, **kwargs)


Check = Callable[[Site], None]


def check_get(site: Site) -> None:
    reply = site.request("GET", "/hello")
    assert reply.status == 200, reply.body[:500]
    assert reply.body == f"Hello from {site.interface.upper()}".encode()
    assert reply.header("Content-Type") == "text/plain"


def check_head(site: Site) -> None:
    reply = site.request("HEAD", "/hello")
    assert reply.status == 200
    assert reply.body == b""
    length = reply.header("Content-Length")
    assert length in (None, str(len("Hello from WSGI"))), length


def _echo(site: Site, body: bytes | Iterable[bytes], data: bytes, **kwargs: Any) -> None:
    reply = site.request("POST", "/echo", body, {"Content-Type": "application/octet-stream"}, **kwargs)
    assert reply.status == 200, reply.body[:500]
    assert json.loads(reply.body) == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_post_1mib(site: Site) -> None:
    data = random.Random(1).randbytes(UPLOAD_SIZE)
    _echo(site, data, data)


def _pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def check_chunked_upload(site: Site) -> None:
    data = random.Random(2).randbytes(UPLOAD_SIZE)
    _echo(site, _pieces(data), data, encode_chunked=True)


def check_big_response(site: Site) -> None:
    reply = site.request("GET", f"/big?n={BIG_RESPONSE}")
    assert reply.status == 200, reply.body[:500]
    assert len(reply.body) == BIG_RESPONSE
    assert hashlib.sha256(reply.body).digest() == hashlib.sha256(pattern(BIG_RESPONSE)).digest()


def check_streaming(site: Site) -> None:
    """The first piece arrives while the app still waits to produce the last."""
    gate = site.scratch / f"gate-{uuid.uuid4().hex}"
    conn = http.client.HTTPConnection("127.0.0.1", site.server.port, timeout=30)
    started = time.monotonic()
    try:
        conn.request("GET", site.url(f"/stream?gate={gate}"), headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.status == 200
        received = b""
        while b"first\n" not in received:
            piece = response.read1(65536)
            assert piece, f"the response ended before its first piece: {received!r}"
            received += piece
        waited = time.monotonic() - started
        gate.touch()
        received += response.read()
    finally:
        conn.close()
    assert b"gate timed out" not in received, f"the front end held the first piece back until the end ({waited:.1f} s)"
    assert received == b"first\nlast\n", received


def check_app_error(site: Site) -> None:
    reply = site.request("GET", "/boom")
    assert reply.status == 500
    assert SECRET.encode() not in reply.body
    assert b"Traceback" not in reply.body


def check_two_cookies(site: Site) -> None:
    reply = site.request("GET", "/cookies")
    assert reply.status == 200
    assert reply.headers.get_all("Set-Cookie") == list(COOKIES)


def _client_run(site: Site, client: int) -> list[str]:
    """One client's requests on one keep-alive connection; the problems it saw."""
    problems: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", site.server.port, timeout=30)
    expected = f"Hello from {site.interface.upper()}".encode()
    try:
        for number in range(REQUESTS_PER_CLIENT):
            try:
                reply = site.request("GET", f"/hello?client={client}&n={number}", conn=conn)
            except (OSError, http.client.HTTPException) as exc:
                problems.append(f"client {client} request {number}: {exc!r}")
                conn.close()
                continue
            if reply.status != 200 or reply.body != expected:
                problems.append(f"client {client} request {number}: {reply.status} {reply.body[:200]!r}")
    finally:
        conn.close()
    return problems


def check_concurrent_clients(site: Site) -> None:
    """50 clients at once, 20 requests each: every one answered."""
    barrier = threading.Barrier(CLIENTS)

    def client(number: int) -> list[str]:
        barrier.wait(30)
        return _client_run(site, number)

    with ThreadPoolExecutor(CLIENTS) as pool:
        problems = [problem for found in pool.map(client, range(CLIENTS)) for problem in found]
    assert not problems, f"{len(problems)} of {CLIENTS * REQUESTS_PER_CLIENT} failed:\n" + "\n".join(problems[:20])


def check_mount(site: Site) -> None:
    """The app sees its mount point as SCRIPT_NAME (root_path) and the rest as PATH_INFO."""
    reply = site.request("GET", "/where")
    assert reply.status == 200, reply.body[:500]
    assert json.loads(reply.body) == {"script_name": site.mount, "path_info": "/where"}


CHECKS: list[Check] = [
    check_get, check_head, check_post_1mib, check_chunked_upload, check_big_response, check_streaming,
    check_app_error, check_two_cookies, check_concurrent_clients, check_mount,
]


def check_id(check: Check) -> str:
    return check.__name__.removeprefix("check_")


def flask_env(directory: Path) -> dict[str, str]:
    """The environment the Flask example needs: its database and uploads in ``directory``."""
    return {"FLASK_APP_DB": str(directory / "guestbook.sqlite3"), "FLASK_APP_UPLOADS": str(directory / "uploads")}


def check_flask_urls(server: Server, mount: str = "/app") -> None:
    """The Flask example mounted at ``mount``: its ``url_for`` links and redirects carry the prefix."""
    reply = server.request("GET", f"{mount}/")
    assert reply.status == 200, reply.body[:500]
    links = {link.decode() for link in re.findall(rb'(?:href|action)="(/[^"]*)"', reply.body)}
    assert {f"{mount}/", f"{mount}/upload", f"{mount}/entries"} <= links, links
    assert all(link.startswith(f"{mount}/") for link in links), links
    assert server.request("GET", f"{mount}/upload").status == 200
    form = f"name=front+end&text=entry+{uuid.uuid4().hex}".encode()
    posted = server.request("POST", f"{mount}/entries", form,
                            {"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status == 303, posted.body[:500]
    assert (posted.header("Location") or "").endswith(f"{mount}/"), posted.header("Location")
