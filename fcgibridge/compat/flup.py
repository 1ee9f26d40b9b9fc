"""flup's FastCGI API served by fcgibridge: ``WSGIServer`` and ``FCGIApp``.

A flup ``.fcgi`` script switches by changing its import line, and nothing else::

    from flup.server.fcgi import WSGIServer          # before
    from fcgibridge.compat.flup import WSGIServer    # after

    WSGIServer(application).run()

:class:`WSGIServer` takes flup's arguments with flup's meanings and serves with
fcgibridge's own server (:func:`fcgibridge.process.run`): one process, one event loop,
the WSGI app in a thread pool, as flup's threaded server runs it in one process with
threads. Where it listens: the socket on fd 0 that a web server or spawn-fcgi passed
(``bindAddress=None``), a ``(host, port)`` tuple, or a unix socket path; with
``bindAddress=None`` and no socket on fd 0 (or ``forceCGI``, or ``FCGI_FORCE_CGI=Y``) it
answers the one CGI request of the environment (:mod:`fcgibridge.cgi_mode`) and exits.

:class:`FCGIApp` is flup's ``flup.client.fcgi_app.FCGIApp``: a WSGI app forwarding each
request to a FastCGI server, on fcgibridge's client (:func:`fcgibridge.proxy.forward_wsgi`).

What maps, what differs and what is refused: docs/migrating-from-flup.md.
"""

from __future__ import annotations

import asyncio
import html
import os
import signal
import stat
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from .. import cgi_mode
from ..addresses import TcpAddress, UnixAddress
from ..client import FastCGIClient
from ..config import Config
from ..importer import Interface, LoadedApp
from ..process import run as serve
from ..protocol import Role
from ..proxy import forward_wsgi

__all__ = ["FCGI_AUTHORIZER", "FCGI_FILTER", "FCGI_RESPONDER", "FCGIApp", "WSGIServer"]

#: The FastCGI roles, under flup's names.
FCGI_RESPONDER = int(Role.RESPONDER)
FCGI_AUTHORIZER = int(Role.AUTHORIZER)
FCGI_FILTER = int(Role.FILTER)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: flup's thread pool arguments, which its threaded WSGIServer passes on. ``maxThreads``
#: sizes fcgibridge's pool; the pool keeps no spare threads, so the others change nothing.
THREAD_POOL_ARGUMENTS = frozenset({"maxThreads", "minSpare", "maxSpare"})

#: Arguments of flup's prefork server (``flup.server.fcgi_fork``), refused: forking
#: workers is the ``fcgibridge`` command's job.
PREFORK_ARGUMENTS = frozenset({"maxChildren", "maxRequests", "sockTimeout", "timeout"})

#: Seconds FCGIApp waits to connect, and between two pieces of the backend's answer.
FCGIAPP_TIMEOUT = 30.0


class WSGIServer:
    """flup's ``flup.server.fcgi.WSGIServer``: serve ``application`` over FastCGI.

    - ``environ``: entries added to every request's environ (overriding the CGI ones);
    - ``multithreaded=False``: one request at a time (a pool of one thread);
      ``multiprocess``: what ``wsgi.multiprocess`` says;
    - ``bindAddress``: None for the socket on fd 0 (else CGI), ``(host, port)`` for TCP,
      a path for a unix socket, whose mode is what the ``umask`` (or the process's
      umask) leaves of 0777, as flup's;
    - ``debug=True``: an app error before the response began answers a page with the
      traceback; else a plain 500 (and the traceback in the log either way);
    - ``forceCGI``: answer one CGI request even when fd 0 is a socket;
    - ``multiplexed``, ``roles``: accepted; fcgibridge always multiplexes
      (``FCGI_MPXS_CONNS=1``) and serves every role;
    - ``maxThreads`` (and flup's ``minSpare``/``maxSpare``, which change nothing here).

    Any other keyword argument is a :class:`TypeError` naming it.
    """

    def __init__(self, application: WSGIApp, environ: Mapping[str, Any] | None = None,
                 multithreaded: bool = True, multiprocess: bool = False,
                 bindAddress: str | tuple[Any, ...] | None = None,
                 umask: int | None = None, multiplexed: bool = False, debug: bool = False,
                 roles: Iterable[int] = (FCGI_RESPONDER,), forceCGI: bool = False,
                 **kw: Any) -> None:
        _check_keywords(kw)
        if not callable(application):
            raise TypeError(f"WSGIServer(): the application must be a WSGI callable, not {application!r}")
        self.application = application
        self.environ = dict(environ or {})
        self.multithreaded = multithreaded
        self.multiprocess = multiprocess
        self.multiplexed = multiplexed
        self.debug = debug
        self.roles = tuple(_role(r) for r in roles)
        self.forceCGI = forceCGI
        self.bind = _bind_text(bindAddress)
        if umask is not None and not (isinstance(umask, int) and 0 <= umask <= 0o777):
            raise ValueError(f"WSGIServer(): umask must be permission bits such as 0o007, not {umask!r}")
        self.umask = umask
        threads = kw.get("maxThreads")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"WSGIServer(): maxThreads must be a number of threads (1 or more), not {threads!r}")
        self.threads = 1 if not multithreaded else threads

    def run(self) -> bool:
        """Serve until SIGTERM, SIGINT or SIGHUP (SIGTERM and SIGHUP let the requests in
        flight finish; SIGINT or a second signal stops at once); True when it was SIGHUP,
        as flup's run() returns.

        Not under FastCGI (no socket on fd 0 and no ``bindAddress``), or with
        ``forceCGI``: answer the one CGI request and exit, as flup does.
        """
        config = self.config()
        loaded = LoadedApp(self.app(), Interface.WSGI, config.app)
        if self.bind is None and _cgi_requested(self.forceCGI):
            raise SystemExit(cgi_mode.run(config, app=loaded))
        hangup = _Hangup()
        code = serve(config, app=loaded, hook_functions={"when_ready": hangup.install})
        if code:
            raise SystemExit(code)
        return hangup.received

    def config(self) -> Config:
        """The fcgibridge configuration these arguments make."""
        options: dict[str, Any] = {"bind": [self.bind or "fd://0"]}
        if self.threads is not None:
            options["threads"] = self.threads
        if self.bind is not None and self.bind.startswith("unix:"):
            umask = self.umask if self.umask is not None else _process_umask()
            options["socket_mode"] = f"{0o777 & ~umask:o}"
        name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        return Config(app=f"{name} (flup WSGIServer)", **options)

    def app(self) -> WSGIApp:
        """The application with this server's environ entries, and the debug page if asked."""
        app: WSGIApp = _Environ(self.application, self.environ, self.multiprocess)
        return _DebugPage(app) if self.debug else app


def _check_keywords(kw: Mapping[str, Any]) -> None:
    for name in kw:
        if name in PREFORK_ARGUMENTS:
            raise TypeError(
                f"WSGIServer(): {name}= is an argument of flup's prefork server (flup.server.fcgi_fork); "
                "this WSGIServer serves in one process with threads. For worker processes, run the app "
                "with the fcgibridge command instead, such as: fcgibridge -w 4 --max-requests 1000 "
                "myapp:application (see docs/migrating-from-flup.md)"
            )
        if name not in THREAD_POOL_ARGUMENTS:
            raise TypeError(f"WSGIServer() got an unexpected keyword argument {name!r}")


def _role(value: int) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"WSGIServer(): roles: {value!r} is not a FastCGI role "
                         "(FCGI_RESPONDER 1, FCGI_AUTHORIZER 2, FCGI_FILTER 3)") from None


def _bind_text(address: str | tuple[Any, ...] | None) -> str | None:
    """flup's ``bindAddress`` in fcgibridge's address grammar: a path is a unix socket, a
    tuple ``(host, port)`` (four items for IPv6) a TCP one, ``''`` as host every address."""
    if address is None:
        return None
    if isinstance(address, str):
        if not address:
            raise ValueError("WSGIServer(): bindAddress is an empty path; give a unix socket path or (host, port)")
        return str(UnixAddress(address))
    if (isinstance(address, tuple) and len(address) in (2, 4) and isinstance(address[0], str)
            and isinstance(address[1], int) and not isinstance(address[1], bool) and 0 <= address[1] <= 65535):
        host = address[0] or ("::" if len(address) == 4 else "0.0.0.0")
        return str(TcpAddress(host, address[1]))
    raise TypeError(f"WSGIServer(): bindAddress must be a unix socket path (str) or a (host, port) tuple, "
                    f"not {address!r}")


def _process_umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    current = os.umask(0o077)
    os.umask(current)
    return current


def _cgi_requested(force: bool) -> bool:
    """flup's test: forced (argument or ``FCGI_FORCE_CGI=Y``), or fd 0 is no socket."""
    if force or os.environ.get("FCGI_FORCE_CGI", "N").upper().startswith("Y"):
        return True
    try:
        return not stat.S_ISSOCK(os.fstat(0).st_mode)
    except OSError:  # fd 0 closed
        return True


class _Hangup:
    """SIGHUP stops the server as SIGTERM does, and is remembered: flup's run() returns
    True after it. (A lone fcgibridge process otherwise ignores SIGHUP.)"""

    def __init__(self) -> None:
        self.received = False

    def install(self, config: Config) -> None:
        """The ``when_ready`` hook: on the server's loop, once it serves."""
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)

    def _hangup(self) -> None:
        self.received = True
        signal.raise_signal(signal.SIGTERM)


class _Environ:
    """The app, with ``WSGIServer(environ=...)``'s entries in every environ (they win over
    the CGI variables, as flup's do), and ``wsgi.multiprocess`` when the server says so."""

    def __init__(self, app: WSGIApp, extra: Mapping[str, Any], multiprocess: bool) -> None:
        self.app = app
        self.extra = dict(extra)
        self.multiprocess = multiprocess

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.update(self.extra)
        if self.multiprocess:
            environ["wsgi.multiprocess"] = True
        return self.app(environ, start_response)


class _DebugPage:
    """``debug=True``: an exception before the first body byte answers a 500 page showing
    the traceback (flup shows one too), also written to ``wsgi.errors``.

    The app's status line and headers are held back until its first body byte (or its
    end), so that an error while it makes that byte still gets the page. After that the
    response is on its way, and the error goes on to the server, which cuts it short.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        head = _HeldHead(start_response)
        try:
            result = self.app(environ, head.start_response)
            try:
                for chunk in result:
                    if chunk:
                        head.send()
                        yield chunk
                head.send()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            if head.sent:
                raise
            text = traceback.format_exc()
            environ["wsgi.errors"].write(text)
            start_response("500 Internal Server Error", [("Content-Type", "text/html; charset=utf-8")],
                           sys.exc_info())
            yield _traceback_page(sys.exc_info()[1], text)


class _HeldHead:
    """The app's ``start_response``, passed on only at :meth:`send`."""

    def __init__(self, start_response: Callable[..., Any]) -> None:
        self.real = start_response
        self.head: tuple[str, list[tuple[str, str]]] | None = None
        self.sent = False
        self.write: Callable[[bytes], Any] | None = None

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and self.sent:
            raise exc_info[1].with_traceback(exc_info[2])
        if self.head is not None and exc_info is None:
            raise AssertionError("start_response called a second time without exc_info")
        self.head = (status, headers)
        return self._write

    def send(self) -> None:
        if not self.sent:
            if self.head is None:
                raise AssertionError("the application returned a body without calling start_response")
            self.sent = True
            self.write = self.real(*self.head)

    def _write(self, data: bytes) -> None:
        self.send()
        assert self.write is not None
        self.write(data)


def _traceback_page(error: BaseException | None, text: str) -> bytes:
    title = html.escape(f"{type(error).__name__}: {error}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>500 Internal Server Error</title></head>\n"
        f"<body><h1>Internal Server Error</h1>\n<p>The application raised <strong>{title}</strong>.</p>\n"
        f"<pre>{html.escape(text)}</pre>\n"
        "<p>This page shows because the server was started with <code>WSGIServer(..., debug=True)</code>; "
        "without it the client gets a plain 500.</p>\n</body></html>\n"
    ).encode()


class FCGIApp:
    """flup's ``flup.client.fcgi_app.FCGIApp``: a WSGI app that forwards each request to
    the FastCGI server at ``connect`` (a ``(host, port)`` tuple or a unix socket path;
    or ``host`` and ``port``), streaming the body both ways.

    ``filterEnviron=True`` sends what flup sends: the environ's ``SERVER_*``, ``HTTP_*``,
    ``REQUEST_*``, ``REMOTE_*``, ``PATH_*`` and ``CONTENT_*`` entries, ``SCRIPT_NAME``,
    ``QUERY_STRING`` and ``AUTH_TYPE``; ``False`` sends every upper-case string entry
    (``SCRIPT_FILENAME``, ``DOCUMENT_ROOT`` and the app's own too). The client adds the
    CGI basics that are missing (``GATEWAY_INTERFACE``, ``REQUEST_URI``...).

    Connections are kept alive and pooled (flup opens one per request); an unreachable
    backend answers 502, one silent for :data:`FCGIAPP_TIMEOUT` seconds 504.
    ``command=`` (flup raises NotImplementedError for it on the first request) is refused
    at once. Call :meth:`close` to close the pooled connections.
    """

    #: flup's ``filterEnviron=True`` rule.
    PREFIXES = ("SERVER_", "HTTP_", "REQUEST_", "REMOTE_", "PATH_", "CONTENT_")
    COPIES = frozenset({"SCRIPT_NAME", "QUERY_STRING", "AUTH_TYPE"})

    def __init__(self, command: object = None, connect: str | tuple[str, int] | None = None,
                 host: str | None = None, port: int | None = None,
                 filterEnviron: bool = True, **kw: Any) -> None:
        for name in kw:
            raise TypeError(f"FCGIApp() got an unexpected keyword argument {name!r}")
        if command is not None:
            raise NotImplementedError(
                "FCGIApp(command=...): starting the FastCGI program is not supported (flup does not either); "
                "start it yourself (spawn-fcgi, systemd, the fcgibridge command) and pass connect="
            )
        if host is not None or port is not None:
            if host is None or port is None or connect is not None:
                raise TypeError("FCGIApp(): give host= and port= together, or connect= alone")
            connect = (host, port)
        if connect is None:
            raise TypeError("FCGIApp(): connect= is missing: a (host, port) tuple or a unix socket path")
        self.filterEnviron = filterEnviron
        self.client = FastCGIClient(_connect_text(connect), timeout=FCGIAPP_TIMEOUT, keep_alive=True)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        params = self.params(environ)
        if "REQUEST_URI" not in params:
            query = environ.get("QUERY_STRING", "")
            path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
            params["REQUEST_URI"] = path + ("?" + query if query else "")
        return forward_wsgi(self.client, environ, start_response, params)

    def params(self, environ: Mapping[str, Any]) -> dict[str, str]:
        """The CGI variables sent for *environ*, as ``filterEnviron`` says."""
        if self.filterEnviron:
            return {name: value for name, value in environ.items() if isinstance(value, str)
                    and (name.startswith(self.PREFIXES) or name in self.COPIES)}
        return {name: value for name, value in environ.items() if isinstance(value, str) and name.isupper()}

    def close(self) -> None:
        """Close the pooled backend connections."""
        self.client.close()


def _connect_text(connect: str | tuple[str, int]) -> str:
    if isinstance(connect, str) and connect:
        return str(UnixAddress(connect))
    if (isinstance(connect, tuple) and len(connect) == 2 and isinstance(connect[0], str) and connect[0]
            and isinstance(connect[1], int) and 0 < connect[1] <= 65535):
        return str(TcpAddress(*connect))
    raise TypeError(f"FCGIApp(): connect must be a (host, port) tuple or a unix socket path, not {connect!r}")
