"""Errors the user can fix.

A :class:`UserError` is a mistake in how fcgibridge was started: a bad APP string, a
module that cannot be imported, a port in use, an unknown config key. Its message is one
line that says what went wrong and what to do about it; the command line prints it as
``fcgibridge: error: <message>`` and exits with status 2, without a traceback.

Bugs in fcgibridge itself, and errors of the protocol core
(:mod:`fcgibridge.protocol.errors`), are not user errors.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake the user can fix; ``str(error)`` is a one-line message naming the fix."""
