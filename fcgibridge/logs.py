"""Logging setup: ``--log-level``, ``--error-log`` (``ERRLOG``), ``--log-config``, and
:func:`reopen_logs` for SIGUSR1 (log rotation).

Everything goes through the standard :mod:`logging` package: the server logs to the
``fcgibridge`` logger tree (``fcgibridge.access`` for the access log), so a user's
``--log-config`` can send any of it anywhere.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.config
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = [
    "LOG_FORMAT",
    "apply_log_config",
    "open_append",
    "configure_logging",
    "redirect_stderr",
    "reopen_file_handlers",
    "reopen_logs",
    "setup_logging",
]

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"

_HANDLER_NAME = "fcgibridge.cli"

#: The ``--error-log`` file in force, for :func:`reopen_logs`.
_error_log: str = ""


def setup_logging(level: str, error_log: str = "", log_config: str = "") -> None:
    """The whole logging setup of a server, in order: error log, built-in handler, user config."""
    if error_log:
        redirect_stderr(error_log)
    configure_logging(level)
    if log_config:
        apply_log_config(log_config)


def open_append(path: str) -> int:
    """A file descriptor appending to *path*, created (0644 before the umask) when missing.

    A symlink in *path*'s place is followed only when it belongs to root or to this
    process's user: under ``--user`` the master, still root, opens log files in
    directories the workers' user may write to, and a link that user put there would
    have root write where it says.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP or os.lstat(path).st_uid not in (0, os.geteuid()):
            raise
    return os.open(path, flags, 0o644)


def redirect_stderr(path: str) -> None:
    """``--error-log``/``ERRLOG``: file descriptor 2 appends to *path*, so the log,
    tracebacks and whatever scripts print all land there."""
    global _error_log
    try:
        fd = open_append(path)
    except OSError as exc:
        raise UserError(f"cannot open the error log {path}: {exc.strerror}") from None
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
    _error_log = path


def configure_logging(level: str) -> None:
    """Send the ``fcgibridge`` loggers to stderr at *level*, in the one fcgibridge format.

    Only the ``fcgibridge`` logger tree is touched (the app's logging is the app's own);
    calling this again replaces the handler instead of adding a second one.
    """
    logger = logging.getLogger("fcgibridge")
    for handler in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def apply_log_config(path: str) -> None:
    """``--log-config``: a ``dictConfig`` in a ``.json`` or ``.toml`` file (a TOML file may
    keep it under ``[logging]``), else an ini file for ``fileConfig``. Loggers configured
    before (the ``fcgibridge`` ones) stay enabled unless the file says otherwise."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--log-config: {path} does not exist or is not a file")
    try:
        if file.suffix in (".json", ".toml"):
            data: dict[str, Any]
            if file.suffix == ".json":
                data = json.loads(file.read_text())
            else:
                data = tomllib.loads(file.read_text())
                data = data.get("logging", data)
            if not isinstance(data, dict):
                raise ValueError("the file must hold a dictConfig mapping")
            data.setdefault("version", 1)
            data.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(data)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except (ValueError, TypeError, KeyError, AttributeError, ImportError, OSError, RuntimeError,
            tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--log-config {path}: {exc}") from None


def reopen_logs() -> None:
    """Reopen every log file (for SIGUSR1 after a rotation): the ``--error-log`` behind
    stderr, and each :class:`logging.FileHandler` of any logger. A file that cannot be
    opened keeps the old one in use; a :class:`UserError` names each, once all were tried."""
    problems = []
    if _error_log:
        try:
            redirect_stderr(_error_log)
        except UserError as exc:
            problems.append(str(exc))
    try:
        reopen_file_handlers()
    except UserError as exc:
        problems.append(str(exc))
    if problems:
        raise UserError("; ".join(problems))


def reopen_file_handlers() -> None:
    """Reopen the file of every :class:`logging.FileHandler` of any logger (one that
    cannot be opened keeps its old file, and a :class:`UserError` names it after all)."""
    problems = []
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [obj for obj in logging.Logger.manager.loggerDict.values() if isinstance(obj, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        try:
                            stream = handler._open()
                        except OSError as exc:
                            problems.append(f"cannot reopen the log file {handler.baseFilename}: {exc.strerror}")
                        else:
                            old, handler.stream = handler.stream, stream
                            old.close()
                finally:
                    handler.release()
    if problems:
        raise UserError("; ".join(problems))
