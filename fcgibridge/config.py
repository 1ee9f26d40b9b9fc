"""Every option of the server, in one dataclass, and the loader that fills it.

Each field's metadata (an :class:`Option`) is the single source from which the CLI
flags, the TOML keys (``fcgibridge.toml`` or ``[tool.fcgibridge]``) and the
``FCGIBRIDGE_<NAME>`` environment variables are generated. Nothing else lists options.

:func:`load_config` reads all three, in this order of precedence::

    defaults < config file < environment < command line
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, build
from .errors import UserError
from .protocol.connection import DEFAULT_MAX_PARAMS_SIZE

__all__ = [
    "Config",
    "INTERFACES",
    "Option",
    "build_parser",
    "load_config",
    "option",
    "parse_socket_mode",
]

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
    #: Smallest accepted value of a number.
    minimum: float | None = None
    #: Checks a converted value; raises ValueError with a message that says what is accepted.
    validate: Callable[[Any], object] | None = None


def option(default: Any, help: str, *flags: str, **kwargs: Any) -> Any:
    """A dataclass field carrying its :class:`Option`; a list default becomes a factory."""
    meta = {"option": Option(help=help, flags=flags, **kwargs)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


INTERFACES = ("auto", "wsgi", "asgi3", "asgi2", "accept", "lua")

#: ``--lua-version`` choices: auto is the newest runtime lupa ships.
LUA_VERSIONS = ("auto", "5.1", "5.2", "5.3", "5.4", "5.5", "luajit2.0", "luajit2.1")


def parse_socket_mode(text: str) -> int:
    """Permission bits from an octal string such as ``"660"``, ``"0660"`` or ``"0o660"``."""
    digits = text.strip().removeprefix("0o").removeprefix("0O")
    if not re.fullmatch(r"[0-7]{1,4}", digits) or int(digits, 8) > 0o777:
        raise ValueError(f"must be octal permission bits such as 660 or 600, got {text!r}")
    return int(digits, 8)


#: gunicorn's default access log line.
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def _check_url_path(text: str) -> None:
    if text and not text.startswith("/"):
        raise ValueError(f"must be a path starting with /, got {text!r}")


def _check_env(text: str) -> None:
    name, eq, _ = text.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"must be NAME=VALUE, got {text!r}")


def _check_network(text: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"must be an IP address or a CIDR range such as 10.0.0.0/8 or ::1, got {text!r}") from None


@dataclass
class Config:
    """The server's options. Sizes are bytes, times seconds."""

    app: str = option(
        "",
        "The application: module:attr, module:factory(args), or path/to/file.py:attr.",
        positional=True,
        metavar="APP",
    )
    args: list[str] = option(  # noqa: RUF009
        [],
        "Arguments for an accept-style script: Lua's arg table, sys.argv[1:] of a Python script.",
        positional=True,
        metavar="ARG",
    )
    bind: list[str] = option(  # noqa: RUF009 (option() gives a list default a default_factory)
        [],
        "Listen on HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable. Default: fd 0 when it is a "
        "listening socket (spawn-fcgi, lighttpd bin-path), else 127.0.0.1:9000.",
        "-b",
        "--bind",
        metavar="ADDRESS",
    )
    workers: int = option(1, "Worker processes (default: $WEB_CONCURRENCY or 1).", "-w", "--workers",
                          env_alias="WEB_CONCURRENCY", minimum=1)
    threads: int = option(8, "Threads per worker that run WSGI apps.", "--threads", minimum=1)
    sync: bool = option(False, "WSGI sync mode: each worker runs one request at a time, on its event loop "
                        "thread once the body has arrived (like a gunicorn sync worker or a PHP-FPM child). "
                        "Fastest for quick apps. A response still streaming after 2 ms goes on in a helper "
                        "thread, so an abort ends it at once; an abort or a stop during one step of the app "
                        "on the loop (the call, or one chunk) waits for that step. --threads is then 1.",
                        "--sync")
    inline: str = option("never", "WSGI thread-pool mode: always run calls in the pool (never), or on the "
                         "event loop thread itself while the app answers fast, saving two thread hand-offs "
                         "(auto: after 50 calls under 1 ms, until one takes over 2 ms and waited). auto is "
                         "new: see docs/configuration.md.", "--inline", choices=("auto", "never"))
    interface: str = option("auto", "The app's interface; detected unless given.", "--interface", choices=INTERFACES)
    lifespan: str = option("auto", "ASGI lifespan protocol: auto (use it if the app supports it), on, off.",
                           "--lifespan", choices=("auto", "on", "off"))
    root_path: str = option("", "Mount point of the app (SCRIPT_NAME / ASGI root_path), overriding what the "
                            "web server sends.", "--root-path", metavar="PATH")
    backlog: int = option(1024, "Listen queue length.", "--backlog", minimum=1)
    socket_mode: str = option("660", "Permission bits (octal) of unix sockets: connecting needs write "
                              "permission, so 660 lets the owner and the group in (give the web server's "
                              "group with --socket-group).", "--socket-mode", metavar="MODE",
                              validate=parse_socket_mode)
    max_connections: int = option(1024, "Connections each worker serves at once (FCGI_MAX_CONNS is this times "
                                  "the workers).", "--max-connections", minimum=1)
    max_params_size: int = option(DEFAULT_MAX_PARAMS_SIZE, "Largest PARAMS stream (CGI variables) of one request.",
                                  "--max-params-size", metavar="BYTES", minimum=1)
    max_body_size: int = option(0, "Largest request body (with a filter's data); 0 means no limit. "
                                "Larger bodies get 413.",
                                "--max-body-size", metavar="BYTES", minimum=0)
    header_timeout: float = option(30.0, "A connection that has not sent a whole request head (BEGIN_REQUEST and "
                                   "PARAMS) this many seconds after it opened, or after its request began, is "
                                   "closed. 0: no limit.", "--header-timeout", minimum=0)
    idle_timeout: float = option(90.0, "A kept-alive connection with no request in flight for this many seconds "
                                 "is closed (keep it above the web server's own, nginx's is 60). 0: no limit.",
                                 "--idle-timeout", minimum=0)
    body_timeout: float = option(60.0, "A request whose body stops arriving for this many seconds fails (408, "
                                 "or its response is cut) and frees what it held. 0: no limit.", "--body-timeout",
                                 minimum=0)
    send_timeout: float = option(60.0, "A connection whose web server takes none of a pending response for this "
                                 "many seconds is closed. 0: no limit.", "--send-timeout", minimum=0)
    request_buffering: bool = option(True, "WSGI: start the app once its whole body has arrived (in memory up to "
                                     "--spool-threshold, spooled beyond), so a slow upload holds no thread. "
                                     "--no-request-buffering streams bodies into the running app.",
                                     "--request-buffering")
    spool_threshold: int = option(1024 * 1024, "Request body bytes held in memory before the rest spools to a "
                                  "temporary file.", "--spool-threshold", metavar="BYTES", minimum=0)
    graceful_timeout: float = option(30.0, "Seconds a stopping worker waits for requests in flight.",
                                     "--graceful-timeout", minimum=0)
    loop: str = option("auto", "Event loop: uvloop when installed (auto), or asyncio.", "--loop",
                       choices=("auto", "asyncio", "uvloop"))
    log_level: str = option("info", "Logging level.", "--log-level",
                            choices=("critical", "error", "warning", "info", "debug"))
    error_log: str = option("", "Append the log (and what scripts print) to this file instead of stderr.",
                            "--error-log", metavar="FILE", env_alias="ERRLOG")
    cgi: bool = option(False, "CGI mode: serve the one request in the environment and stdin, write the CGI "
                       "response to stdout, and exit. Automatic when GATEWAY_INTERFACE is set and stdin is not "
                       "a socket.", "--cgi")
    lua_version: str = option("auto", "Lua runtime for .lua scripts, among those lupa ships (auto: lupa's "
                              "default).", "--lua-version", choices=LUA_VERSIONS)
    config: str = option("", "TOML config file (default: fcgibridge.toml, or [tool.fcgibridge] in "
                         "pyproject.toml, in the current directory).", "-c", "--config", metavar="FILE")
    # Operations: status, logs, socket ownership, peers, config commands.
    status_path: str = option("", "Path (such as /status) answered by the server itself with its status, "
                              "aggregated across workers: text, ?json, ?prometheus (off when empty).",
                              "--status-path", metavar="PATH", validate=_check_url_path)
    ping_path: str = option("", "Path (such as /ping) answered by the server itself with --ping-response "
                            "(off when empty).", "--ping-path", metavar="PATH", validate=_check_url_path)
    ping_response: str = option("pong", "Body of the answer to --ping-path.", "--ping-response", metavar="TEXT")
    access_log: str = option("", "Access log file; - for stdout (off when empty).", "--access-log", metavar="FILE")
    access_log_format: str = option(DEFAULT_ACCESS_LOG_FORMAT, "Access log line, with gunicorn's atoms "
                                    "(%(h)s %(r)s %(s)s %(b)s %(D)s ...; see docs/operations.md).",
                                    "--access-log-format", metavar="FORMAT")
    log_config: str = option("", "Logging configuration: a .json or .toml dictConfig, or an ini fileConfig, "
                             "applied after the built-in setup.", "--log-config", metavar="FILE")
    socket_owner: str = option("", "Owner (user name or uid) of unix sockets.", "--socket-owner", metavar="USER")
    socket_group: str = option("", "Group (name or gid) of unix sockets.", "--socket-group", metavar="GROUP")
    allow_from: list[str] = option(  # noqa: RUF009
        [], "TCP peers allowed to connect: IP addresses and CIDR ranges, IPv4 or IPv6; repeatable "
        "(default: $FCGI_WEB_SERVER_ADDRS, else every peer). Unix socket peers are always allowed.",
        "--allow-from", metavar="ADDRESS", validate=_check_network)
    check_config: bool = option(False, "Load the configuration and import the app, print OK, and exit "
                                "(status 2 on a mistake).", "--check-config")
    print_config: bool = option(False, "Print the effective configuration as TOML and exit.", "--print-config")
    # Process management: recycling, timeouts, slow log, preload, reload on change.
    max_requests: int = option(0, "A worker retires (gracefully, once its replacement is ready) after about "
                               "this many requests; 0: never.", "--max-requests", minimum=0)
    max_requests_jitter: int = option(0, "Adds 0 to this many requests, at random per worker, to "
                                      "--max-requests, so workers do not all retire together.",
                                      "--max-requests-jitter", minimum=0)
    timeout: float = option(0.0, "A request running longer than this many seconds is ended (504, or its "
                            "connection closed) and logged; a WSGI worker then gets replaced, and one whose "
                            "event loop the request holds is killed past --timeout-grace. 0: no limit.",
                            "--timeout", minimum=0)
    slowlog_timeout: float = option(0.0, "A request running longer than this many seconds gets the stack of its "
                                    "thread written to --slowlog (PHP-FPM's request_slowlog_timeout); 0: off.",
                                    "--slowlog-timeout", minimum=0)
    slowlog: str = option("", "Slow log file (default: the error log).", "--slowlog", metavar="FILE")
    preload: bool = option(False, "Import the app once in the parent, before forking the workers (a reload then "
                           "keeps the old code).", "--preload")
    reload: bool = option(False, "Development: restart the workers when a Python file (or a --reload-include "
                          "file) under the current directory (or the --reload-dir ones) changes (needs the "
                          "reload extra: pip install fcgibridge[reload]).", "--reload")
    reload_dir: list[str] = option(  # noqa: RUF009
        [], "--reload: watch this directory instead of the current one (repeatable).", "--reload-dir",
        metavar="DIR")
    reload_include: list[str] = option(  # noqa: RUF009
        [], "--reload: file names matching this glob (such as *.html or *.toml) reload too; Python files always "
        "do (repeatable).", "--reload-include", metavar="GLOB")
    reload_exclude: list[str] = option(  # noqa: RUF009
        [], "--reload: a change to a file whose name, a directory on its path, or its path below a watched "
        "directory matches this glob (such as *.log, node_modules or tests/*) never reloads (repeatable).",
        "--reload-exclude", metavar="GLOB")
    timeout_grace: float = option(5.0, "Seconds past --timeout after which the supervisor kills a worker whose "
                                  "request is still running (its stack goes to the slow log) and starts "
                                  "another: a call that blocks the event loop (--sync, time.sleep in ASGI) cannot "
                                  "be ended otherwise.",
                                  "--timeout-grace", minimum=0)
    limit_concurrency: int = option(0, "Requests in flight per worker past which new ones are answered at once "
                                    "with 503 and Retry-After (not FCGI_OVERLOADED, which web servers turn into "
                                    "a bare 502); the status and ping pages still answer; 0: no limit.",
                                    "--limit-concurrency", minimum=0)
    # Dynamic workers (PHP-FPM's pm): -w is how many start.
    pm: str = option("static", "Worker count: static (-w), dynamic (between --min-workers and --max-workers, "
                     "by the spare bounds), ondemand (none until a connection comes; idle ones stop).",
                     "--pm", choices=("static", "dynamic", "ondemand"))
    min_workers: int = option(1, "dynamic: the fewest workers.", "--min-workers", minimum=0)
    max_workers: int = option(0, "dynamic, ondemand: the most workers (default: 4 x the CPUs).", "--max-workers",
                              minimum=0)
    min_spare_workers: int = option(1, "dynamic: start workers while fewer than this many are idle.",
                                    "--min-spare-workers", minimum=0)
    max_spare_workers: int = option(3, "dynamic: stop workers while more than this many are idle.",
                                    "--max-spare-workers", minimum=1)
    worker_idle_timeout: float = option(10.0, "dynamic, ondemand: seconds a spare worker stays idle before it "
                                        "stops.", "--worker-idle-timeout", minimum=0)
    # The process itself.
    user: str = option("", "Run the workers as this user (name or uid; needs root): each drops to it right after "
                       "the fork, a single process once the sockets are bound; our unix socket files become "
                       "its.", "--user", metavar="USER")
    group: str = option("", "Run the workers as this group (name or gid; default: the --user's primary group), "
                        "with the --user's supplementary groups.", "--group", metavar="GROUP")
    pidfile: str = option("", "Write the server's pid to this file once the sockets are bound (removed on exit); "
                          "a file naming a live process refuses the start.", "-p", "--pid", metavar="FILE")
    chdir: str = option("", "Change to this directory first, before binding and loading the app (relative paths "
                        "are then taken from it).", "--chdir", metavar="DIR")
    umask: str = option("", "The process umask (octal, such as 022); empty: inherited.", "--umask",
                        metavar="MASK", validate=lambda text: text and parse_socket_mode(text))
    env_file: str = option("", "Read NAME=VALUE lines (# comments, optional quotes) from this file into the "
                           "environment before the hooks and the app load (-e beats it).", "--env-file",
                           metavar="FILE")
    env: list[str] = option(  # noqa: RUF009
        [], "Set an environment variable for the app, NAME=VALUE (repeatable).", "-e", "--env",
        metavar="NAME=VALUE", validate=lambda text: _check_env(text))
    proc_name: str = option("", "Name in the process titles (default: the app), shown by ps and top when "
                            "setproctitle is installed (pip install fcgibridge[setproctitle]).", "--name",
                            metavar="NAME")
    # Server hooks: a dotted path module:function (or module.function) each.
    hooks: str = option("", "A module (dotted name or .py file) whose functions named after the hooks below "
                        "are the hooks.", "--hooks", metavar="MODULE")
    on_starting: str = option("", "Hook: on_starting(config), in the master before the sockets are bound.",
                              "--on-starting", metavar="PATH")
    when_ready: str = option("", "Hook: when_ready(config), in the master once the first worker serves.",
                             "--when-ready", metavar="PATH")
    post_fork: str = option("", "Hook: post_fork(config, worker), in a worker right after the fork (as --user).",
                            "--post-fork", metavar="PATH")
    post_worker_init: str = option("", "Hook: post_worker_init(config, worker), in a worker once the app is "
                                   "loaded, before it serves; if it raises, the worker does not serve.",
                                   "--post-worker-init", metavar="PATH")
    pre_request: str = option("", "Hook: pre_request(worker, request), before the app gets a request.",
                              "--pre-request", metavar="PATH")
    post_request: str = option("", "Hook: post_request(worker, request), once a request is over.",
                               "--post-request", metavar="PATH")
    worker_exit: str = option("", "Hook: worker_exit(config, worker), in a worker about to exit.",
                              "--worker-exit", metavar="PATH")
    child_exit: str = option("", "Hook: child_exit(config, worker), in the master once a worker exited.",
                             "--child-exit", metavar="PATH")
    on_reload: str = option("", "Hook: on_reload(config), in the master when a reload begins.", "--on-reload",
                            metavar="PATH")
    on_exit: str = option("", "Hook: on_exit(config), in the master before it exits.", "--on-exit",
                          metavar="PATH")
    # Status for supervisors.
    status_bind: str = option("", "An address (HOST:PORT or unix:PATH) where the master itself answers FastCGI "
                              "status and ping requests from the scoreboard, even while every worker is busy: "
                              "any path is the status page (?json, ?prometheus) but --ping-path. Implies a "
                              "supervisor.",
                              "--status-bind", metavar="ADDRESS")


# --------------------------------------------------------------------------------------
# Loading: everything below is generated from the fields above.

ENV_PREFIX = "FCGIBRIDGE_"
CONFIG_FILE = "fcgibridge.toml"
PYPROJECT_FILE = "pyproject.toml"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class _Field:
    """A config field with its annotation reduced to what the loaders need."""

    name: str
    kind: type  # int, float, str or bool; for lists, the item type
    is_list: bool
    default: Any
    option: Option

    @property
    def key(self) -> str:
        """The name users write in TOML (dashes and underscores are both accepted)."""
        return self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flags(self) -> tuple[str, ...]:
        return self.option.flags or ("--" + self.name.replace("_", "-"),)


@functools.cache
def _fields() -> tuple[_Field, ...]:
    hints = typing.get_type_hints(Config)
    result = []
    for f in dataclasses.fields(Config):
        opt = f.metadata["option"]
        hint = hints[f.name]
        is_list = typing.get_origin(hint) is list
        if is_list:
            (kind,) = typing.get_args(hint)
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            raise TypeError(f"Config.{f.name}: optional fields are not supported by the loader")
        else:
            kind = hint
        if kind not in (int, float, str, bool):
            raise TypeError(f"Config.{f.name}: the loader cannot handle the annotation {hint!r}")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        result.append(_Field(f.name, kind, is_list, default, opt))
    return tuple(result)


def _fields_by_key() -> dict[str, _Field]:
    return {f.key: f for f in _fields()}


# Conversion and checks, shared by all three sources. Each raises ValueError with a message
# that reads well after "<where>: " ("must be an integer, got 'abc'").


def _scalar_from_text(fld: _Field, text: str) -> Any:
    text = text.strip() if fld.kind is not str else text
    if fld.kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
    if fld.kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
    if fld.kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"must be true or false, got {text!r}")
    return text


def _scalar_from_toml(fld: _Field, value: object) -> Any:
    if isinstance(value, str) and fld.kind is not str:
        return _scalar_from_text(fld, value)
    ok = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        bool: lambda v: isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[fld.kind](value)
    if not ok:
        wanted = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[fld.kind]
        hint = "; put it in quotes" if fld.kind is str and isinstance(value, int | float) else ""
        raise ValueError(f"must be {wanted}, got {value!r}{hint}")
    return float(value) if fld.kind is float else value  # type: ignore[arg-type]


def _check(fld: _Field, value: Any) -> Any:
    opt = fld.option
    if opt.choices is not None and value not in opt.choices:
        raise ValueError(f"must be one of {', '.join(opt.choices)}; got {value!r}")
    if opt.minimum is not None and value < opt.minimum:
        minimum = int(opt.minimum) if fld.kind is int else opt.minimum
        raise ValueError(f"must be at least {minimum}, got {value!r}")
    if opt.validate is not None:
        opt.validate(value)
    return value


def _from_text(fld: _Field, text: str) -> Any:
    """A value from an environment variable; list items are split on whitespace and commas."""
    if fld.is_list:
        return [_check(fld, _scalar_from_text(fld, item)) for item in re.split(r"[\s,]+", text) if item]
    return _check(fld, _scalar_from_text(fld, text))


def _from_toml(fld: _Field, value: object) -> Any:
    """A value from the config file; a list field also takes a single item."""
    if fld.is_list:
        items = value if isinstance(value, list) else [value]
        return [_check(fld, _scalar_from_toml(fld, item)) for item in items]
    return _check(fld, _scalar_from_toml(fld, value))


def _closest(word: str, candidates: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


# The command line.


class _Parser(argparse.ArgumentParser):
    """Raises :class:`UserError` instead of printing usage and exiting."""

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message} (see fcgibridge --help)")


def _arg_type(fld: _Field) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return _check(fld, _scalar_from_text(fld, text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = fld.kind.__name__
    return convert


def _help(fld: _Field) -> str:
    text = fld.option.help
    if fld.default not in ("", [], None) and "default" not in text.lower():
        shown = fld.default if not isinstance(fld.default, bool) else str(fld.default).lower()
        text = f"{text} (default: {shown})"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The ``fcgibridge`` argument parser, one argument per :class:`Config` field.

    Arguments that are not given are absent from the namespace (their default is
    ``argparse.SUPPRESS``), so that the command line only overrides what it names.
    """
    parser = _Parser(
        prog="fcgibridge",
        description="Serve a WSGI or ASGI application over FastCGI. "
        "(To talk to a FastCGI server instead, see: fcgibridge request --help; to load one "
        "and time it, fcgibridge bench --help.)",
        epilog=f"Every option can also be set in {CONFIG_FILE} (or under [tool.fcgibridge] in "
        f"{PYPROJECT_FILE}) as name = value, and in the environment as {ENV_PREFIX}NAME. "
        "The command line beats the environment, which beats the file.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"fcgibridge {__version__} ({build()})")
    for fld in _fields():
        opt = fld.option
        kwargs: dict[str, Any] = {"help": _help(fld), "default": argparse.SUPPRESS, "dest": fld.name}
        if opt.choices is not None:
            kwargs["choices"] = opt.choices
        if opt.metavar is not None:
            kwargs["metavar"] = opt.metavar
        elif fld.kind in (int, float):
            kwargs["metavar"] = "N"
        if fld.kind is bool and not fld.is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _arg_type(fld)
            if fld.is_list:
                kwargs["action"] = "append"
        if opt.positional:
            del kwargs["dest"]
            kwargs.pop("action", None)  # nargs="*" collects the list itself
            kwargs["nargs"] = "*" if fld.is_list else "?"
            parser.add_argument(fld.name, **kwargs)
        else:
            parser.add_argument(*fld.flags, **kwargs)
    return parser


def _from_argv(argv: Sequence[str]) -> dict[str, Any]:
    parser = build_parser()
    namespace, extra = parser.parse_known_args(list(argv))
    if extra:
        unknown = extra[0]
        flags = [flag for action in parser._actions for flag in action.option_strings]
        close = _closest(unknown.split("=", 1)[0], flags) if unknown.startswith("-") else None
        if close is not None:
            raise UserError(f"unrecognized argument {unknown!r}; did you mean {close}?")
        raise UserError(f"unrecognized argument {unknown!r} (see fcgibridge --help)")
    return vars(namespace)


# The environment.


#: What Kubernetes (for a Service) and Docker links (for a linked container) set in every
#: container when the service is named ``fcgibridge``: FCGIBRIDGE_SERVICE_HOST,
#: FCGIBRIDGE_PORT=tcp://10.0.0.7:9000, FCGIBRIDGE_PORT_9000_TCP_ADDR, FCGIBRIDGE_NAME, ...
_SERVICE_VARIABLE = re.compile(rf"{ENV_PREFIX}(SERVICE_\w+|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?|NAME|ENV_\w+)")


#: Variables of the package that are not options: how setup.py builds it.
_BUILD_VARIABLES = frozenset({f"{ENV_PREFIX}COMPILE"})


def _from_environ(environ: Mapping[str, str], warn: Callable[[str], None]) -> dict[str, Any]:
    by_env = {fld.env: fld for fld in _fields()}
    values: dict[str, Any] = {}
    # Compatibility aliases first, so that FCGIBRIDGE_<NAME> beats them.
    for fld in _fields():
        alias = fld.option.env_alias
        if alias is not None and environ.get(alias, "").strip():
            values[fld.name] = _env_value(fld, alias, environ[alias])
    unknown: list[str] = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        fld_or_none = by_env.get(var)
        if fld_or_none is None:
            if var not in _BUILD_VARIABLES:
                unknown.append(var)
        elif environ[var].strip():  # set but empty counts as unset, as shells and compose files produce it
            values[fld_or_none.name] = _env_value(fld_or_none, var, environ[var])
    _warn_unknown(unknown, by_env, warn)
    return values


def _warn_unknown(unknown: list[str], by_env: Mapping[str, _Field], warn: Callable[[str], None]) -> None:
    """One line per unknown variable, and one for all the service variables an orchestrator set.

    They are not errors: the environment belongs to the whole container, and an unrelated
    Service named ``fcgibridge`` must not crash-loop every pod beside it.
    """
    service = [var for var in unknown if _SERVICE_VARIABLE.fullmatch(var)]
    if service:
        warn(f"ignoring {', '.join(service)}: not fcgibridge options (Kubernetes and Docker set such variables "
             "for a service named fcgibridge)")
    for var in unknown:
        if var in service:
            continue
        close = _closest(var.removeprefix(ENV_PREFIX), [fld.name.upper() for fld in by_env.values()])
        hint = f"did you mean {ENV_PREFIX}{close}?" if close else f"the known ones are {', '.join(sorted(by_env))}"
        warn(f"ignoring unknown environment variable {var}; {hint}")


def _env_value(fld: _Field, var: str, text: str) -> Any:
    try:
        return _from_text(fld, text)
    except ValueError as exc:
        raise UserError(f"{var}: {exc}") from None


# The config file.


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None


def _find_file(explicit: str, cwd: Path) -> tuple[Path, dict[str, Any]] | None:
    """The config file and its fcgibridge table, or None when there is none."""
    if explicit:
        path = cwd / explicit
        data = _read_toml(path)
        if path.name == PYPROJECT_FILE:
            return path, _tool_table(path, data) or {}
        return path, data
    path = cwd / CONFIG_FILE
    if path.is_file():
        return path, _read_toml(path)
    path = cwd / PYPROJECT_FILE
    if path.is_file():
        table = _tool_table(path, _read_toml(path))
        if table is not None:
            return path, table
    return None


def _tool_table(path: Path, data: dict[str, Any]) -> dict[str, Any] | None:
    tool = data.get("tool", {})
    table = tool.get("fcgibridge") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise UserError(f"{path}: tool.fcgibridge must be a table ([tool.fcgibridge])")
    return table


def _from_file(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    by_key = _fields_by_key()
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        fld = by_key.get(key)
        if fld is None or fld.name == "config":
            if fld is not None:
                raise UserError(f"{where}: 'config' cannot be set inside a config file; use -c FILE")
            close = _closest(key, [k for k in by_key if k != "config"])
            hint = f"did you mean {close!r}?" if close else f"the known ones are {', '.join(sorted(by_key))}"
            raise UserError(f"{where}: unknown option {raw_key!r}; {hint}")
        try:
            values[fld.name] = _from_toml(fld, value)
        except ValueError as exc:
            raise UserError(f"{where}: {raw_key}: {exc}") from None
    return values


def load_config(argv: Sequence[str], environ: Mapping[str, str], cwd: Path,
                warn: Callable[[str], None] = lambda message: None) -> Config:
    """Build the :class:`Config` from the command line, the environment and the config file.

    Precedence is defaults < file < environment < command line. The file is the one named
    by ``-c`` (or ``FCGIBRIDGE_CONFIG``), else ``fcgibridge.toml`` in *cwd*, else the
    ``[tool.fcgibridge]`` table of ``pyproject.toml`` in *cwd*. Every mistake (unknown
    key or flag, bad value, missing file, no app) raises :class:`UserError`. An unknown
    ``FCGIBRIDGE_*`` environment variable is no mistake: *warn* gets one line about it.
    """
    from_argv = _from_argv(argv)
    from_env = _from_environ(environ, warn)
    values: dict[str, Any] = {}
    found = _find_file(from_argv.get("config") or from_env.get("config") or "", cwd)
    if found is not None:
        path, table = found
        values.update(_from_file(str(path), table))
    values.update(from_env)
    values.update(from_argv)
    if found is not None:
        values["config"] = str(found[0])
    if values.get("args") and not str(values.get("app", "")).endswith((".lua", ".py")):
        raise UserError(f"unrecognized argument {values['args'][0]!r} (see fcgibridge --help); only a script "
                        "(path/to/app.lua or app.py) takes arguments")
    if not values.get("app"):
        raise UserError("no application given; run fcgibridge MODULE:APP, for example fcgibridge myproject.wsgi:app")
    return Config(**values)


def options_reference() -> str:
    """Every option as a markdown table: flag, config-file key, environment variable,
    default and meaning. ``docs/configuration.md`` embeds it (a test keeps them equal)."""
    rows = ["| flag | file key | environment | default | meaning |", "|---|---|---|---|---|"]
    for fld in _fields():
        opt = fld.option
        if opt.positional:
            continue
        env = f"`{fld.env}`" + (f", `{opt.env_alias}`" if opt.env_alias else "")
        default = fld.default if not fld.is_list else ", ".join(fld.default)
        default_text = f"`{default}`" if default not in ("", []) else "—"
        meaning = opt.help + (f" One of: {', '.join(opt.choices)}." if opt.choices else "")
        rows.append(f"| `{' / '.join(opt.flags or fld.flags)}` | `{fld.key}` | {env} | {default_text} | {meaning} |")
    return "\n".join(rows) + "\n"
