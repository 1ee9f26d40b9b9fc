"""The ``fcgibridge`` command.

``fcgibridge [OPTIONS] APP`` serves an application (the options come from
:class:`fcgibridge.config.Config`); ``fcgibridge request ADDR [PATH]`` sends one request
to a FastCGI server and prints the response, in the spirit of ``cgi-fcgi`` and ``curl``;
``fcgibridge bench ADDR [PATH]`` loads a FastCGI server with that request and reports
how fast it answered, in the spirit of ``ab`` and ``wrk``; ``fcgibridge probe ADDR ...``
is a health check of PHP-FPM pools and fcgibridge servers (their ping and status pages).

A user mistake anywhere (:class:`~fcgibridge.errors.UserError`) ends the command with
``fcgibridge: error: <message>`` on stderr and exit status 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .config import Config, load_config
from .errors import UserError
from .logs import LOG_FORMAT, configure_logging, redirect_stderr, setup_logging

__all__ = ["LOG_FORMAT", "bench_parser", "configure_logging", "main", "probe_parser", "redirect_stderr",
           "request_parser"]


#: Exit status for a user mistake, as argparse uses for a usage error.
USER_ERROR_STATUS = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with *argv* (default: ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["request"]:
            return _request(args[1:])
        if args[:1] == ["bench"]:
            return _bench(args[1:])
        if args[:1] == ["probe"]:
            return _probe(args[1:])
        return _serve(args)
    except UserError as exc:
        print(f"fcgibridge: error: {exc}", file=sys.stderr)
        return USER_ERROR_STATUS
    except SystemExit as exc:  # --help, --version
        return _exit_status(exc)
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        return 130


def _warn(message: str) -> None:
    print(f"fcgibridge: warning: {message}", file=sys.stderr)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


# Serving.


def _serve(argv: list[str]) -> int:
    config = load_config(argv, os.environ, Path.cwd(), warn=_warn)
    if config.print_config:
        print(config_as_toml(config), end="")
        return 0
    setup_logging(config.log_level, config.error_log, config.log_config)
    if config.check_config:
        return _check_config(config)
    # Imported only now: neither --help nor a config mistake should pay for the server's imports.
    cgi_mode = importlib.import_module("fcgibridge.cgi_mode")
    if config.cgi or cgi_mode.is_cgi_invocation(os.environ):
        run_cgi: Callable[[Config], int] = cgi_mode.run
        return run_cgi(config)
    # Until a worker handles HUP (restart hook, or logged and ignored), it must not kill the
    # server while the app loads. A Python-level handler, unlike SIG_IGN, is not inherited
    # by programs the app runs.
    signal.signal(signal.SIGHUP, lambda *_: None)
    run: Callable[[Config], int] = importlib.import_module("fcgibridge.process").run
    return run(config)


def _check_config(config: Config) -> int:
    """``--check-config``: the config loaded (that is done), the socket owner and group
    exist, the access log format works, ``--chdir``, ``--env-file``, ``--user`` and
    ``--group`` work, the ``--reload-dir`` directories exist, the hooks and the app import; prints OK. Any mistake is a
    :class:`UserError` (exit status 2). A unix socket every local user could connect to,
    or none of the web server accounts could, is a ``WARNING:`` line on stderr, not a
    mistake: the exit status stays 0 (the mode may be deliberate)."""
    from .importer import load
    from .process.accesslog import AccessLog
    from .process.hooks import Hooks
    from .process.identity import Identity, prepare, socket_defaults
    from .process.listeners import socket_owner, socket_warnings
    from .process.reloader import check_reload, reload_roots

    socket_owner(config.socket_owner, config.socket_group)
    prepare(config)
    identity = Identity.from_config(config)
    Hooks.load(config)
    if config.reload:
        check_reload(reload_roots(config))
    for warning in socket_warnings(socket_defaults(config, identity)):
        print(f"WARNING: {warning}", file=sys.stderr)

    try:
        AccessLog(config.access_log_format, logging.getLogger("fcgibridge.access")).check()
    except ValueError as exc:
        raise UserError(f"--access-log-format: {exc}") from None
    interface = load(config).interface
    print(f"OK: {config.app} ({interface.upper()} app)" + (f", config file {config.config}" if config.config else ""))
    return 0


def config_as_toml(config: Config) -> str:
    """``--print-config``: every option's effective value, as a TOML file that ``-c``
    takes back (``config`` itself, and the two config commands, left out)."""
    lines = [f"# fcgibridge {__version__}: the effective configuration"]
    for fld in dataclasses.fields(config):
        if fld.name in ("config", "check_config", "print_config"):
            continue
        lines.append(f"{fld.name} = {_toml_value(getattr(config, fld.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


# fcgibridge request and fcgibridge bench


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: a mistake is a one-line :class:`UserError` naming the command."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("fcgibridge ")
        raise UserError(f"{command}: {message} (see {self.prog} --help)")


def _seconds(text: str, *, zero: bool = False) -> float:
    """A number of seconds: more than 0 (with ``zero``, 0 or more)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (value >= 0 if zero else value > 0):
        bound = "0 seconds or more" if zero else "more than 0 seconds"
        raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
    return value


def _timeout(text: str) -> float:
    return _seconds(text)


def _warmup(text: str) -> float:
    return _seconds(text, zero=True)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _add_request_arguments(parser: argparse.ArgumentParser, *, data_flags: Sequence[str]) -> None:
    """The arguments that describe the request, shared by ``request`` and ``bench``: the
    address, the path, ``-X``, ``-H``, the data (``data_flags``), ``--param``,
    ``--script-filename``, ``--root`` and ``--timeout``."""
    parser.add_argument("addr", metavar="ADDR", help="The server: HOST:PORT, [IPv6]:PORT or unix:PATH.")
    parser.add_argument("path", metavar="PATH", nargs="?", default="/",
                        help="Request path with an optional query string (default: /).")
    parser.add_argument("-X", "--method", help="HTTP method (default: GET, or POST with data).")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="Request header; repeatable.")
    parser.add_argument(*data_flags, dest="data", metavar="DATA",
                        help="Request body (POST unless -X says otherwise); @FILE takes it from FILE.")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="Extra FastCGI parameter (CGI variable); repeatable.")
    parser.add_argument("--script-filename", metavar="PATH",
                        help="SCRIPT_FILENAME, the script PHP-FPM should run.")
    parser.add_argument("--root", metavar="DIR",
                        help="Document root: SCRIPT_FILENAME is DIR + the path (DOCUMENT_ROOT is set too).")
    parser.add_argument("--timeout", type=_timeout, default=10.0, metavar="SECONDS",
                        help="Seconds to wait for the connection and for each read (default: 10).")


def _check_request_arguments(command: str, args: argparse.Namespace) -> None:
    """What argparse cannot check of the shared arguments; a :class:`UserError` naming ``command``."""
    for header in args.header:
        name, colon, _ = header.partition(":")
        if not colon or not name.strip():
            raise UserError(f"{command}: header {header!r} must look like 'Name: value'")
    for param in args.param:
        name, equals, _ = param.partition("=")
        if not equals or not name:
            raise UserError(f"{command}: --param {param!r} must look like NAME=VALUE")
    if args.data is not None and args.data.startswith("@"):
        path = args.data[1:]
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise UserError(f"{command}: --data {args.data}: {path} is not a readable file")


def request_parser() -> argparse.ArgumentParser:
    """The parser of ``fcgibridge request``; its namespace is what ``client.main_request`` takes."""
    parser = _CommandParser(
        prog="fcgibridge request",
        description="Send one request to a FastCGI server (PHP-FPM, fcgibridge, ...) and print the response body.",
        allow_abbrev=False,
    )
    _add_request_arguments(parser, data_flags=("-d", "--data", "--data-binary"))
    parser.add_argument("-i", "--include", action="store_true", help="Print the status line and headers too.")
    parser.add_argument("--stderr", action="store_true",
                        help="Print what the application wrote to FCGI_STDERR on stderr.")
    parser.add_argument("--values", action="store_true",
                        help="Ask FCGI_GET_VALUES (FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS) instead.")
    parser.add_argument("--role", choices=("responder", "authorizer", "filter"),
                        help="The FastCGI role asked for (default: responder; filter with --data-file).")
    parser.add_argument("--data-file", metavar="FILE",
                        help="The FILTER role's data stream (FCGI_DATA, sent after the body), read from FILE.")
    return parser


def _request(argv: list[str]) -> int:
    args = request_parser().parse_args(argv)
    _check_request_arguments("request", args)
    if args.data_file is not None:
        if args.role not in (None, "filter"):
            raise UserError(f"request: --data-file is the FILTER role's data stream, not for --role {args.role}")
        if not os.path.isfile(args.data_file) or not os.access(args.data_file, os.R_OK):
            raise UserError(f"request: --data-file {args.data_file}: not a readable file")
    main_request: Callable[[argparse.Namespace], int] = importlib.import_module("fcgibridge.client").main_request
    return main_request(args)


def bench_parser() -> argparse.ArgumentParser:
    """The parser of ``fcgibridge bench``; its namespace is what ``client.main_bench`` takes."""
    parser = _CommandParser(
        prog="fcgibridge bench",
        description="Load a FastCGI server (PHP-FPM, fcgibridge, ...) with one request, over FastCGI and without "
                    "a web server, and report how fast it answered. -d is the duration here: the request body "
                    "is given with --data or --data-binary only.",
        allow_abbrev=False,
    )
    _add_request_arguments(parser, data_flags=("--data", "--data-binary"))
    parser.add_argument("-c", "--concurrency", type=_count, default=10, metavar="N",
                        help="Connections open at a time, across all processes (default: 10).")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("-d", "--duration", type=_timeout, default=10.0, metavar="SECONDS",
                        help="Run for SECONDS (default: 10).")
    amount.add_argument("-n", "--requests", type=_count, metavar="N", help="Make N requests, then stop.")
    parser.add_argument("--no-keep-alive", dest="keep_alive", action="store_false",
                        help="A new connection for every request (default: FCGI_KEEP_CONN, each connection reused).")
    parser.add_argument("--multiplex", type=_count, metavar="N",
                        help="N requests in flight on each connection; the server must say FCGI_MPXS_CONNS=1.")
    parser.add_argument("--warmup", type=_warmup, default=0.0, metavar="SECONDS",
                        help="Make load for SECONDS first, and count none of it (default: 0).")
    parser.add_argument("-P", "--processes", type=_count, default=1, metavar="N",
                        help="Make the load from N processes, each with its own event loop (default: 1).")
    parser.add_argument("--progress", action="store_true",
                        help="A progress line on stderr every second even when stderr is no terminal.")
    parser.add_argument("--json", action="store_true",
                        help="Print the report as one JSON object on stdout, and no progress line.")
    return parser


def _bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    _check_request_arguments("bench", args)
    if args.multiplex == 1:
        raise UserError("bench: --multiplex must be at least 2 (one request per connection is the default)")
    if args.multiplex and not args.keep_alive:
        raise UserError("bench: --multiplex needs kept-alive connections; drop --no-keep-alive")
    if args.concurrency < args.processes:
        raise UserError(f"bench: -c {args.concurrency} gives fewer connections than -P {args.processes} processes")
    if args.requests is not None and args.requests < args.processes:
        raise UserError(f"bench: -n {args.requests} is fewer requests than -P {args.processes} processes")
    from .addresses import parse_connect

    parse_connect(args.addr)  # a malformed address is a UserError (an AddressError)
    main_bench: Callable[[argparse.Namespace], int] = importlib.import_module("fcgibridge.client").main_bench
    return main_bench(args)


# fcgibridge probe


def _url_path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"must be a path starting with /, got {text!r}")
    return text


def probe_parser() -> argparse.ArgumentParser:
    """The parser of ``fcgibridge probe``; its namespace is what ``client.main_probe`` takes."""
    parser = _CommandParser(
        prog="fcgibridge probe",
        description="Health check of PHP-FPM pools and fcgibridge servers over FastCGI, for a container's "
                    "HEALTHCHECK or a Kubernetes exec probe: the ping page, or with --max/--min/--status the "
                    "status page's figures. Exit status 0 when every address is healthy, 1 when any is not, "
                    "2 for a usage mistake.",
        allow_abbrev=False,
    )
    parser.add_argument("addr", metavar="ADDR", nargs="+",
                        help="HOST:PORT, [IPv6]:PORT, unix:PATH, or a unix: glob such as 'unix:/run/php/*.sock' "
                             "(quoted); every one must be healthy.")
    parser.add_argument("--ping", type=_url_path, metavar="PATH",
                        help="The ping path (PHP-FPM's ping.path, fcgibridge's --ping-path); default /ping, "
                             "asked when no status check is.")
    parser.add_argument("--ping-response", default="pong", metavar="TEXT",
                        help="What the ping answers (ping.response, --ping-response; default: pong).")
    parser.add_argument("--status", type=_url_path, metavar="PATH",
                        help="Check the status page at PATH (pm.status_path, --status-path; default /status "
                             "with --max or --min), read with ?json.")
    parser.add_argument("--max", action="append", default=[], metavar="METRIC=N",
                        help="Unhealthy when METRIC is above N, such as listen-queue=10; repeatable.")
    parser.add_argument("--min", action="append", default=[], metavar="METRIC=N",
                        help="Unhealthy when METRIC is below N, such as idle-processes=1; repeatable.")
    parser.add_argument("--json", action="store_true",
                        help="One JSON object on stdout: ok, and per address ok, reason, metrics, elapsed.")
    parser.add_argument("--connect-timeout", type=_timeout, default=1.0, metavar="SECONDS",
                        help="Seconds to wait for each connection (default: 1).")
    parser.add_argument("--timeout", type=_timeout, default=3.0, metavar="SECONDS",
                        help="Seconds allowed for the whole check of one address (default: 3).")
    return parser


def _probe(argv: list[str]) -> int:
    args = probe_parser().parse_args(argv)
    from .addresses import parse_connect
    from .client import _probe as probe

    for address in args.addr:
        if not probe.is_glob(address):  # a unix: glob is expanded by the probe
            parse_connect(address)  # a malformed address is a UserError (an AddressError)
    return probe.main_probe(args)  # a bad --max or --min is a UserError before anything is asked
