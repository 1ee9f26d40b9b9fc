"""Logging setup: ``--log-level``, ``--error-log`` (``ERRLOG``), ``--log-config``, and
:func:`reopen_logs` for SIGUSR1 (log rotation).

Everything goes through the standard :mod:`logging` package: the server logs to the
``fcgibridge`` logger tree (``fcgibridge.access`` for the access log), so a user's
``--log-config`` can send any of it anywhere.
"""

from __future__ import annotations

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


def redirect_stderr(path: str) -> None:
    """``--error-log``/``ERRLOG``: file descriptor 2 appends to *path*, so the log,
    tracebacks and whatever scripts print all land there."""
    global _error_log
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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
    stderr, and each :class:`logging.FileHandler` of any logger."""
    if _error_log:
        redirect_stderr(_error_log)
    reopen_file_handlers()


def reopen_file_handlers() -> None:
    """Reopen the file of every :class:`logging.FileHandler` of any logger."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [obj for obj in logging.Logger.manager.loggerDict.values() if isinstance(obj, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream is not None:
                        handler.stream.close()
                        handler.stream = handler._open()
                finally:
                    handler.release()
