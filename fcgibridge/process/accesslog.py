"""The access log: one line per request, in a format string with gunicorn's atoms.

``--access-log FILE`` (``-`` for stdout) and ``--access-log-format``. The line goes to the
``fcgibridge.access`` logger, so a ``--log-config`` can send it anywhere. Atoms (unknown
ones print ``-``):

==========  =====================================================================
``h``       remote address (REMOTE_ADDR)
``l``       ``-``
``u``       remote user (REMOTE_USER), else ``-``
``t``       time the request started, ``[10/Oct/2000:13:55:36 +0000]``
``r``       request line: method, REQUEST_URI, protocol
``m``       method          ``U`` path without query     ``q`` query string
``H``       protocol        ``s`` status                 ``B`` response body bytes
``b``       response body bytes, ``-`` for none
``f``       referer         ``a`` user agent
``T``       duration in whole seconds, ``M`` milliseconds, ``D`` microseconds,
            ``L`` seconds with decimals
``p``       process id
``{X}i``    request header X     ``{X}o`` response header X
``{X}e``    FastCGI parameter (CGI variable) X of the request
==========  =====================================================================
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping

from ..cgi import summarize_head

__all__ = ["AccessLog", "LOGGER_NAME", "setup_access_logger"]

LOGGER_NAME = "fcgibridge.access"
_HANDLER_NAME = "fcgibridge.access"


def setup_access_logger(target: str) -> logging.Logger:
    """The access logger writing bare lines to *target* (a file, or ``-`` for stdout)."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stdout) if target == "-" else logging.FileHandler(target, encoding="utf-8")
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class _Atoms(Mapping[str, str]):
    """The values of one line, computed only for the atoms the format uses."""

    def __init__(self, params: Mapping[str, str], head: bytes, body_bytes: int, started: float,
                 duration: float) -> None:
        self.params = params
        self.status, self.headers = summarize_head(head)
        self.body_bytes = body_bytes
        self.started = started
        self.duration = duration

    def __getitem__(self, key: str) -> str:
        value = self._value(key)
        return "-" if value is None or value == "" else value

    def _value(self, key: str) -> str | None:
        p = self.params
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return p.get("HTTP_" + name.upper().replace("-", "_"))
            if kind == "o":
                return self.headers.get(name.lower())
            if kind == "e":
                return p.get(name)
            return None
        match key:
            case "h":
                return p.get("REMOTE_ADDR")
            case "l":
                return "-"
            case "u":
                return p.get("REMOTE_USER")
            case "t":
                return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(self.started))
            case "r":
                return f"{p.get('REQUEST_METHOD', '-')} {self._uri()} {p.get('SERVER_PROTOCOL', '-')}"
            case "m":
                return p.get("REQUEST_METHOD")
            case "U":
                return self._uri().partition("?")[0]
            case "q":
                return p.get("QUERY_STRING")
            case "H":
                return p.get("SERVER_PROTOCOL")
            case "s":
                return None if self.status is None else str(self.status)
            case "B":
                return str(self.body_bytes)
            case "b":
                return str(self.body_bytes) if self.body_bytes else "-"
            case "f":
                return p.get("HTTP_REFERER")
            case "a":
                return p.get("HTTP_USER_AGENT")
            case "T":
                return str(int(self.duration))
            case "M":
                return str(int(self.duration * 1000))
            case "D":
                return str(int(self.duration * 1_000_000))
            case "L":
                return f"{self.duration:.6f}"
            case "p":
                return f"<{os.getpid()}>"
        return None

    def _uri(self) -> str:
        p = self.params
        uri = p.get("REQUEST_URI")
        if uri:
            return uri
        path = p.get("SCRIPT_NAME", "") + p.get("PATH_INFO", "")
        query = p.get("QUERY_STRING", "")
        return f"{path}?{query}" if query else path

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class AccessLog:
    """Formats and writes one line per finished request."""

    def __init__(self, fmt: str, logger: logging.Logger) -> None:
        self.fmt = fmt
        self.logger = logger

    def check(self) -> None:
        """Raise ValueError when the format cannot be used."""
        try:
            self.format({"REQUEST_METHOD": "GET"}, b"Status: 200 OK\r\n\r\n", 0, time.time(), 0.0)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"bad access log format {self.fmt!r}: {exc}") from None

    def format(self, params: Mapping[str, str], head: bytes, body_bytes: int, started: float,
               duration: float) -> str:
        return self.fmt % _Atoms(params, head, body_bytes, started, duration)

    def log(self, params: Mapping[str, str], head: bytes, body_bytes: int, started: float, duration: float) -> None:
        try:
            line = self.format(params, head, body_bytes, started, duration)
        except Exception:
            self.logger.exception("cannot format the access log line")
            return
        self.logger.info(line)
