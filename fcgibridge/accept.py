"""Accept-style scripts as a WSGI app.

An accept-style script provides ``accept()`` returning a whole CGI response (header
lines, a blank line, the body) as ``str`` or ``bytes``, and optionally ``start()``,
``restart()`` and ``stop()``. :class:`AcceptApp` wraps such a script (a module, or any
object with those attributes) into a plain WSGI app, so it runs under fcgibridge next to
WSGI and ASGI apps, under any other WSGI server, or mounted beside a Flask app.

Legacy scripts read the request through ``os.getenv("REQUEST_URI")`` and its body from
``sys.stdin``. Both are process-wide, so the adapter runs **one accept call at a time per
process** (a lock), and for the duration of the call:

- ``os.environ`` is the process environment plus the request's CGI variables, without
  ``HTTP_PROXY`` (a ``Proxy:`` request header must never look like a proxy setting:
  "httpoxy");
- ``sys.stdin`` reads the request body (``sys.stdin.buffer`` gives bytes);
- ``sys.stdout`` (so ``print``) goes to the log (logger ``fcgibridge.app``), never into
  the response.

Scale with processes (``-w N``), as the style always did. ``accept(environ)`` receives the
WSGI environ instead, with the body in ``environ["wsgi.input"]``.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any

from .cgi import CGIResponseError, split_response

__all__ = ["AcceptApp", "AcceptError", "HOOKS", "ScriptError", "LogWriter", "cgi_variables", "hook_code"]

log = logging.getLogger("fcgibridge.app")

#: The optional lifecycle functions of an accept-style script.
HOOKS = ("start", "restart", "stop")

_ERROR_BODY = b"Internal Server Error\n"


class ScriptError(Exception):
    """The script failed; the message (with the script's own traceback) says how."""


class AcceptError(Exception):
    """``accept()`` gave something that is not a CGI response; the message says what."""


def cgi_variables(environ: dict[str, Any]) -> dict[str, str]:
    """The request's CGI variables from a WSGI environ, without ``HTTP_PROXY`` (httpoxy)."""
    return {key: value for key, value in environ.items()
            if isinstance(value, str) and "." not in key and key != "HTTP_PROXY"}


def hook_code(name: str, value: object) -> int:
    """The exit code a hook's return value stands for: nothing, 0 or false is success."""
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    log.error("%s function returned %r, not a number; taken as 1", name, value)
    return 1


class LogWriter(io.TextIOBase):
    """A text stream whose lines go to a logger: ``print`` in a script ends up in the error log."""

    def __init__(self, logger: logging.Logger = log, level: int = logging.INFO, prefix: str = "") -> None:
        super().__init__()
        self._logger = logger
        self._level = level
        self._prefix = prefix
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._logger.log(self._level, "%s%s", self._prefix, line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._logger.log(self._level, "%s%s", self._prefix, line)


class _BodyRaw(io.RawIOBase):
    """``wsgi.input`` as a raw stream, so that ``sys.stdin`` can be a text stream over it.

    PEP 3333: an app must not read past CONTENT_LENGTH unless the server says the input
    ends by itself (``wsgi.input_terminated``, as fcgibridge does); other servers hand
    over the socket, where reading on would block.
    """

    def __init__(self, environ: dict[str, Any]) -> None:
        super().__init__()
        self._source = environ["wsgi.input"]
        self._left: int | None = None
        if not environ.get("wsgi.input_terminated"):
            try:
                self._left = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                self._left = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer) if self._left is None else min(len(buffer), self._left)
        data = self._source.read(size) if size else b""
        buffer[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
        return len(data)


class AcceptApp:
    """A WSGI app running an accept-style *script* (a module or any object with ``accept``).

    ``start()``, ``restart()`` and ``stop()`` call the script's hooks of those names (a
    missing hook does nothing and returns 0) under the same lock as ``accept``, so a hook
    never runs in the middle of a request. The server calls them (see
    :mod:`fcgibridge.process.worker`); under another WSGI server, call them yourself.
    """

    def __init__(self, script: Any, *, name: str | None = None) -> None:
        accept = getattr(script, "accept", None)
        if not callable(accept):
            raise TypeError(f"{script!r} has no accept function")
        self.script = script
        self.name = name or getattr(script, "__name__", type(script).__name__)
        self._accept: Callable[..., Any] = accept
        self._takes_environ = _takes_an_argument(accept)
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ hooks

    def has_hook(self, name: str) -> bool:
        return callable(getattr(self.script, name, None))

    def call_hook(self, name: str) -> int:
        """Run hook *name* (start, restart or stop) between requests; its exit code."""
        hook = getattr(self.script, name, None)
        if not callable(hook):
            return 0
        with self.lock, self._redirected_stdout():
            return hook_code(name, self._call_hook(name, hook))

    def _call_hook(self, name: str, hook: Callable[[], Any]) -> Any:
        return hook()

    def start(self) -> int:
        return self.call_hook("start")

    def restart(self) -> int:
        return self.call_hook("restart")

    def stop(self) -> int:
        return self.call_hook("stop")

    # ---------------------------------------------------------------- requests

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            with self.lock:
                result = self._call_accept(environ)
            head, body = _parse(result)
        except AcceptError as exc:
            log.error("%s: accept returned a bad response: %s (%s %s)", self.name, exc,
                      environ.get("REQUEST_METHOD", "GET"), environ.get("REQUEST_URI", environ.get("PATH_INFO", "")))
            return _error(start_response)
        except ScriptError as exc:
            log.error("%s: accept failed (%s %s): %s", self.name, environ.get("REQUEST_METHOD", "GET"),
                      environ.get("REQUEST_URI", environ.get("PATH_INFO", "")), exc)
            return _error(start_response)
        except Exception:
            log.exception("%s: accept raised an error (%s %s)", self.name, environ.get("REQUEST_METHOD", "GET"),
                          environ.get("REQUEST_URI", environ.get("PATH_INFO", "")))
            return _error(start_response)
        start_response(f"{head.status} {head.reason}".rstrip(), head.headers)
        return [body]

    def _call_accept(self, environ: dict[str, Any]) -> object:
        """Run accept with the request in os.environ and sys.stdin; call with the lock held."""
        saved_environ, saved_stdin = os.environ, sys.stdin
        request_env = {key: value for key, value in saved_environ.items() if key != "HTTP_PROXY"}
        request_env.update(cgi_variables(environ))
        stdin = io.TextIOWrapper(io.BufferedReader(_BodyRaw(environ)), encoding="utf-8",
                                 errors="surrogateescape")
        os.environ = request_env  # type: ignore[assignment]  # noqa: B003 (deliberate: os.getenv reads it)
        sys.stdin = stdin
        try:
            with self._redirected_stdout():
                return self._accept(environ) if self._takes_environ else self._accept()
        finally:
            os.environ = saved_environ  # noqa: B003
            sys.stdin = saved_stdin
            stdin.close()

    def _redirected_stdout(self) -> _Redirect:
        return _Redirect()


class _Redirect:
    """``sys.stdout`` to the log for the duration of a ``with`` block."""

    def __enter__(self) -> None:
        self._saved: IO[str] = sys.stdout
        self._writer = LogWriter()
        sys.stdout = self._writer

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self._saved
        self._writer.flush()


def _takes_an_argument(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _parse(result: object) -> tuple[Any, bytes]:
    if isinstance(result, str):
        data = result.encode("utf-8", "surrogateescape")
    elif isinstance(result, bytes | bytearray):
        data = bytes(result)
    else:
        raise AcceptError(f"expected a string, got {type(result).__name__} {_short(result)}")
    try:
        return split_response(data)
    except CGIResponseError as exc:
        raise AcceptError(f"{exc}; the response starts {data[:60]!r}") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error(start_response: Callable[..., Any]) -> list[bytes]:
    start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                 ("Content-Length", str(len(_ERROR_BODY)))])
    return [_ERROR_BODY]
