"""Every option of the server, in one dataclass.

Each field's metadata (an :class:`Option`) is the single source from which the CLI
flags, the TOML keys (``fcgibridge.toml`` or ``[tool.fcgibridge]``) and the
``FCGIBRIDGE_<NAME>`` environment variables are generated. Nothing else lists options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """How one config field appears to users."""

    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    #: Extra environment variable honoured for compatibility (besides FCGIBRIDGE_<NAME>).
    env_alias: str | None = None
    positional: bool = False


def option(default: Any, help: str, *flags: str, **kwargs: Any) -> Any:
    """A dataclass field carrying its :class:`Option`; a list default becomes a factory."""
    meta = {"option": Option(help=help, flags=flags, **kwargs)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


INTERFACES = ("auto", "wsgi", "asgi3", "asgi2")


@dataclass
class Config:
    """The server's options. Sizes are bytes, times seconds."""

    app: str = option(
        "",
        "The application: module:attr, module:factory(args), or path/to/file.py:attr.",
        positional=True,
        metavar="APP",
    )
    bind: list[str] = option(
        [],
        "Listen on HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable. Default: fd 0 when it is a "
        "listening socket (spawn-fcgi, lighttpd bin-path), else 127.0.0.1:9000.",
        "-b",
        "--bind",
        metavar="ADDRESS",
    )
    workers: int = option(1, "Worker processes (default: $WEB_CONCURRENCY or 1).", "-w", "--workers",
                          env_alias="WEB_CONCURRENCY")
    threads: int = option(8, "Threads per worker that run WSGI apps.", "--threads")
    interface: str = option("auto", "The app's interface; detected unless given.", "--interface", choices=INTERFACES)
    lifespan: str = option("auto", "ASGI lifespan protocol: auto (use it if the app supports it), on, off.",
                           "--lifespan", choices=("auto", "on", "off"))
    root_path: str = option("", "Mount point of the app (SCRIPT_NAME / ASGI root_path), overriding what the "
                            "web server sends.", "--root-path", metavar="PATH")
    backlog: int = option(1024, "Listen queue length.", "--backlog")
    socket_mode: str = option("666", "Permission bits (octal) of unix sockets.", "--socket-mode", metavar="MODE")
    max_connections: int = option(1024, "Connections each worker serves at once (FCGI_MAX_CONNS is this times "
                                  "the workers).", "--max-connections")
    max_params_size: int = option(1024 * 1024, "Largest PARAMS stream (CGI variables) of one request.",
                                  "--max-params-size", metavar="BYTES")
    max_body_size: int = option(0, "Largest request body; 0 means no limit. Larger bodies get 413.",
                                "--max-body-size", metavar="BYTES")
    spool_threshold: int = option(1024 * 1024, "Request body bytes held in memory before the rest spools to a "
                                  "temporary file.", "--spool-threshold", metavar="BYTES")
    graceful_timeout: float = option(30.0, "Seconds a stopping worker waits for requests in flight.",
                                     "--graceful-timeout")
    loop: str = option("auto", "Event loop: uvloop when installed (auto), or asyncio.", "--loop",
                       choices=("auto", "asyncio", "uvloop"))
    log_level: str = option("info", "Logging level.", "--log-level",
                            choices=("critical", "error", "warning", "info", "debug"))
    config: str = option("", "TOML config file (default: fcgibridge.toml, or [tool.fcgibridge] in "
                         "pyproject.toml, in the current directory).", "-c", "--config", metavar="FILE")
