"""Real frameworks served in-process through a real socket: Starlette (ASGI 3) and
Django, once as WSGI and once as ASGI.

Django settings are process-wide: the ``django_project`` fixture configures the test
project (tests/apps/djangoproject) once per session, and both the WSGI and the ASGI
tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from support import RawConnection, ServerThread, serve

from fcgibridge.client import FastCGIClient, Response

DJANGO_SETTINGS = "tests.apps.djangoproject.settings"


def get(server: ServerThread, method: str = "GET", path: str = "/", **kwargs: Any) -> Response:
    return FastCGIClient(server.address, timeout=10).request(method, path, **kwargs)


def as_json(response: Response) -> Any:
    assert response.header("Content-Type", "").startswith("application/json"), response.headers
    return json.loads(response.body)


# -------------------------------------------------------------------- Starlette


class StarletteSite:
    """A Starlette app with the features apps use, and what it saw."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.background import BackgroundTask
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
        from starlette.routing import Mount, Route

        self.go = threading.Event()
        self.events: list[str] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
            self.events.append("startup")
            yield {"greeting": "hello from lifespan"}
            self.events.append("shutdown")

        async def home(request: Request) -> PlainTextResponse:
            return PlainTextResponse(request.state.greeting)

        async def item(request: Request) -> JSONResponse:
            return JSONResponse({
                "id": request.path_params["item_id"],
                "query": dict(request.query_params),
                "url": str(request.url),
                "url_for": str(request.url_for("item", item_id=5)),
                "root_path": request.scope["root_path"],
                "client": list(request.client or ()),
                "agent": request.headers.get("user-agent"),
            })

        async def echo(request: Request) -> JSONResponse:
            if request.headers.get("content-type") == "application/json":
                return JSONResponse({"json": await request.json()})
            size, digest, chunks = 0, hashlib.sha256(), 0
            async for chunk in request.stream():
                size += len(chunk)
                digest.update(chunk)
                chunks += 1
            return JSONResponse({"length": size, "sha256": digest.hexdigest(), "chunks": chunks})

        async def stream(request: Request) -> StreamingResponse:
            async def pieces() -> AsyncIterator[bytes]:
                yield b"first,"
                for _ in range(2000):
                    if self.go.is_set():
                        break
                    await asyncio.sleep(0.005)
                yield b"second"

            return StreamingResponse(pieces(), media_type="text/plain", headers={"X-Accel-Buffering": "no"})

        async def later(request: Request) -> PlainTextResponse:
            async def work() -> None:
                await asyncio.sleep(0.2)
                self.events.append("background done")

            return PlainTextResponse("accepted", status_code=202, background=BackgroundTask(work))

        async def cookies(request: Request) -> Response:
            response = Response(b"", status_code=204)
            response.set_cookie("a", "1")
            response.set_cookie("b", "2")
            return response

        async def crash(request: Request) -> PlainTextResponse:
            raise RuntimeError("route crashed")

        self.app = Starlette(lifespan=lifespan, routes=[
            Route("/", home),
            Route("/items/{item_id:int}", item, name="item"),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
            Route("/later", later),
            Route("/cookies", cookies),
            Route("/crash", crash),
            Mount("/sub", routes=[Route("/inner", home)]),
        ])


@pytest.fixture
def starlette_site() -> Iterator[tuple[StarletteSite, ServerThread]]:
    site = StarletteSite()
    with serve(site.app, "asgi3") as server:
        yield site, server
    assert site.events[-1] == "shutdown"


def test_starlette_lifespan_state_and_text(starlette_site: tuple[StarletteSite, ServerThread]) -> None:
    site, server = starlette_site
    response = get(server)
    assert (response.status, response.body) == (200, b"hello from lifespan")
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert get(server, path="/sub/inner").body == b"hello from lifespan"
    assert site.events == ["startup"]


def test_starlette_routes_and_json(starlette_site: tuple[StarletteSite, ServerThread]) -> None:
    _, server = starlette_site
    response = get(server, path="/items/42?colour=r%C3%A9d", headers=[("User-Agent", "pytest")],
                   params={"REMOTE_ADDR": "192.0.2.7", "REMOTE_PORT": "40000", "HTTP_HOST": "example.org"})
    assert response.status == 200
    assert as_json(response) == {
        "id": 42,
        "query": {"colour": "réd"},
        "url": "http://example.org/items/42?colour=r%C3%A9d",
        "url_for": "http://example.org/items/5",
        "root_path": "",
        "client": ["192.0.2.7", 40000],
        "agent": "pytest",
    }
    assert get(server, path="/nowhere").status == 404
    assert get(server, "DELETE", "/echo").status == 405


def test_starlette_mounted_below_a_prefix(starlette_site: tuple[StarletteSite, ServerThread]) -> None:
    """lighttpd-style SCRIPT_NAME=/app: routing ignores the prefix, URLs keep it."""
    _, server = starlette_site
    response = get(server, path="/app/items/7", params={"SCRIPT_NAME": "/app", "PATH_INFO": "/items/7",
                                                         "HTTPS": "on", "SERVER_PORT": "443"})
    data = as_json(response)
    assert data["id"] == 7
    assert data["root_path"] == "/app"
    assert data["url"] == "https://localhost/app/items/7"
    assert data["url_for"] == "https://localhost/app/items/5"


def test_starlette_request_body(starlette_site: tuple[StarletteSite, ServerThread]) -> None:
    _, server = starlette_site
    body = os.urandom(3 * 1024 * 1024 + 17)
    data = as_json(get(server, "POST", "/echo", body=body, headers=[("Content-Type", "application/octet-stream")]))
    assert data["length"] == len(body)
    assert data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["chunks"] > 1  # streamed in pieces, not buffered whole
    posted = as_json(get(server, "POST", "/echo", body=b'{"a": [1, 2]}',
                         headers=[("Content-Type", "application/json")]))
    assert posted == {"json": {"a": [1, 2]}}
    assert as_json(get(server, "POST", "/echo"))["length"] == 0


def test_starlette_streaming_response(starlette_site: tuple[StarletteSite, ServerThread]) -> None:
    site, server = starlette_site
    with RawConnection(server.address) as conn:
        rid = conn.begin(path="/stream", body=b"")
        conn.wait_for(lambda: b"first," in conn.stdout[rid], timeout=5)
        assert rid not in conn.ended
        site.go.set()
        assert conn.wait_end(rid).app_status == 0
        head, body = conn.response(rid)
    assert head.status == 200
    assert head.get("Content-Type") == "text/plain; charset=utf-8"
    assert body == b"first,second"


def test_starlette_repeated_headers_and_background_task(starlette_site: tuple[StarletteSite, ServerThread]) -> None:
    site, server = starlette_site
    response = get(server, path="/cookies")
    assert response.status == 204
    assert [v.split(";")[0] for k, v in response.headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]
    response = get(server, path="/later")
    assert (response.status, response.body) == (202, b"accepted")
    server.stop()  # graceful: the background task still runs to its end
    assert site.events == ["startup", "background done", "shutdown"]


def test_starlette_error_is_a_500_and_logged(starlette_site: tuple[StarletteSite, ServerThread],
                                             caplog: pytest.LogCaptureFixture) -> None:
    _, server = starlette_site
    response = get(server, path="/crash")
    assert response.status == 500
    assert b"route crashed" not in response.raw
    deadline = time.monotonic() + 5
    while not any(r.exc_info for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
    assert get(server).status == 200  # and it goes on serving


# ----------------------------------------------------------------------- Django


@pytest.fixture(scope="session")
def django_project() -> None:
    """Configure the test Django project, once for the whole session."""
    import django
    from django.conf import settings

    if settings.configured:
        if settings.SETTINGS_MODULE != DJANGO_SETTINGS:
            pytest.fail(f"Django is already configured with {settings.SETTINGS_MODULE!r} in this process")
        return
    previous = os.environ.get("DJANGO_SETTINGS_MODULE")
    os.environ["DJANGO_SETTINGS_MODULE"] = DJANGO_SETTINGS
    try:
        django.setup()  # reads the settings now; the variable is not needed afterwards
    finally:
        if previous is None:
            del os.environ["DJANGO_SETTINGS_MODULE"]
        else:
            os.environ["DJANGO_SETTINGS_MODULE"] = previous


@pytest.fixture(params=["wsgi", "asgi3"])
def django_server(request: pytest.FixtureRequest, django_project: None) -> Iterator[ServerThread]:
    if request.param == "wsgi":
        from django.core.wsgi import get_wsgi_application

        app: Any = get_wsgi_application()
    else:
        from django.core.asgi import get_asgi_application

        app = get_asgi_application()
    # lifespan "auto": Django's ASGI handler raises on the lifespan scope; serving goes on
    with serve(app, request.param) as server:
        yield server


def test_django_text_view(django_server: ServerThread) -> None:
    response = get(django_server)
    assert (response.status, response.body) == (200, b"Hello from Django\n")
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert response.app_status == 0


def test_django_post_body_length(django_server: ServerThread) -> None:
    body = os.urandom(2 * 1024 * 1024 + 3)
    data = as_json(get(django_server, "POST", "/echo", body=body,
                       headers=[("Content-Type", "application/octet-stream")]))
    assert data == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "name": None}
    form = as_json(get(django_server, "POST", "/echo", body=b"name=J%C3%BCrgen&x=1",
                       headers=[("Content-Type", "application/x-www-form-urlencoded")]))
    assert (form["length"], form["name"]) == (20, "Jürgen")
    assert get(django_server, "GET", "/echo").status == 405


def test_django_json_view(django_server: ServerThread) -> None:
    response = get(django_server, path="/info/12?a=b&c=%C3%A9", headers=[("User-Agent", "pytest")])
    assert response.status == 200
    assert as_json(response) == {
        "number": 12,
        "method": "GET",
        "path": "/info/12",
        "path_info": "/info/12",
        "script_name": "",
        "query": {"a": "b", "c": "é"},
        "secure": False,
        "host": "localhost",
        "user_agent": "pytest",
    }
    assert [v.split(";")[0] for k, v in response.headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]


def test_django_mounted_below_a_prefix_over_https(django_server: ServerThread) -> None:
    response = get(django_server, path="/shop/info/3", params={"SCRIPT_NAME": "/shop", "PATH_INFO": "/info/3",
                                                              "HTTPS": "on", "SERVER_PORT": "443"})
    data = as_json(response)
    assert (data["path"], data["path_info"], data["script_name"]) == ("/shop/info/3", "/info/3", "/shop")
    assert data["secure"] is True


def test_django_errors(django_server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    assert get(django_server, path="/missing").status == 404
    response = get(django_server, path="/boom")
    assert response.status == 500
    assert b"view crashed" not in response.raw  # DEBUG is off
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
    assert get(django_server).status == 200
