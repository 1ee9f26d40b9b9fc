"""A FastCGI authorizer, as WSGI (``wsgi``) and as ASGI (``asgi``), that is also a small
responder showing what it was sent — for the lighttpd ``"mode" => "authorizer"`` tests.

Serve it with ``python -m fcgibridge tests/apps/authorizer_app.py:wsgi`` (or ``:asgi``).

In the AUTHORIZER role (WSGI ``environ["FCGI_ROLE"]``, ASGI
``scope["extensions"]["fastcgi"]["role"]``) it decides on the request's token, sent as
the ``X-Token`` header or the ``token`` cookie:

- :data:`TOKEN`: ``200`` with no body and ``Variable-*`` headers (:func:`variables`),
  which the web server may pass on to the responder as variables;
- none: ``401`` with ``WWW-Authenticate`` and a JSON body (:func:`seen`) saying what the
  authorizer saw (its role, the length of the body it could read, the method and URI);
- any other: ``403`` with that JSON body too.

In the RESPONDER role it answers JSON: every string CGI variable it got (WSGI environ, or
ASGI's raw ``params``), the mount point and path it routes on (``script_name`` and
``path_info``: WSGI SCRIPT_NAME and PATH_INFO, ASGI ``root_path`` and ``path`` minus it),
its role, the length of the body it read and its user id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

TOKEN = "letmein"
USER = "alice"


def token_of(params: MutableMapping[str, Any]) -> str | None:
    """The token of a request: its ``X-Token`` header, else its ``token`` cookie."""
    if "HTTP_X_TOKEN" in params:
        return str(params["HTTP_X_TOKEN"])
    cookie = SimpleCookie()
    cookie.load(str(params.get("HTTP_COOKIE", "")))
    return cookie["token"].value if "token" in cookie else None


def seen(role: str, params: MutableMapping[str, Any], body_length: int) -> dict[str, Any]:
    """What a request looked like to this app."""
    return {"role": role, "body_length": body_length, "method": params.get("REQUEST_METHOD"),
            "uri": params.get("REQUEST_URI"), "content_length": params.get("CONTENT_LENGTH")}


def variables(role: str, body_length: int) -> list[tuple[str, str]]:
    """``Variable-*`` headers of an allowing answer: the user, and what the authorizer saw."""
    return [("Variable-AUTH_USER", USER), ("Variable-AUTH_ROLE_SEEN", role),
            ("Variable-AUTH_BODY_SEEN", str(body_length)), ("X-Authorizer", "allowed")]


def decide(role: str, params: MutableMapping[str, Any], body_length: int) -> tuple[int, list[tuple[str, str]], bytes]:
    """The authorizer's answer: status, headers, body."""
    token = token_of(params)
    if token == TOKEN:
        return 200, variables(role, body_length), b""
    body = json.dumps(seen(role, params, body_length)).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if token is None:
        return 401, [*headers, ("WWW-Authenticate", 'Token realm="test"')], body
    return 403, headers, body


def respond(role: str, params: MutableMapping[str, Any], body_length: int, script_name: str, path_info: str) -> bytes:
    shown = {name: value for name, value in params.items() if isinstance(value, str)}
    return json.dumps({"role": role, "body_length": body_length, "uid": os.getuid(), "script_name": script_name,
                       "path_info": path_info, "params": shown}).encode()


_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden"}


# --------------------------------------------------------------------------- WSGI


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    role = environ.get("FCGI_ROLE", "RESPONDER")
    body_length = len(environ["wsgi.input"].read())
    if role == "AUTHORIZER":
        status, headers, body = decide(role, environ, body_length)
        start_response(f"{status} {_REASONS[status]}", headers)
        return [body]
    body = respond(role, environ, body_length, environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


# --------------------------------------------------------------------------- ASGI

Message = MutableMapping[str, Any]


async def asgi(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
               send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    fastcgi = scope["extensions"]["fastcgi"]
    role, params = fastcgi["role"], fastcgi["params"]
    body_length = 0
    while True:
        message = await receive()
        body_length += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    if role == "AUTHORIZER":
        status, headers, body = decide(role, params, body_length)
    else:
        root_path, path = scope.get("root_path", ""), scope["path"]
        rest = path[len(root_path):] if path.startswith(root_path) else path
        body = respond(role, params, body_length, root_path, rest)
        status, headers = 200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    await send({"type": "http.response.start", "status": status,
                "headers": [(name.lower().encode(), value.encode()) for name, value in headers]})
    await send({"type": "http.response.body", "body": body})
