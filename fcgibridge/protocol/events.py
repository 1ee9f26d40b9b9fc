"""Events the protocol core turns bytes into.

Events are frozen dataclasses; every per-request event carries ``request_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .constants import ProtocolStatus, Role


class Event:
    """Base class of every event."""

    __slots__ = ()


# ----------------------------------------------------- received by the application role


@dataclass(frozen=True, slots=True)
class RequestStarted(Event):
    """BEGIN_REQUEST and the whole PARAMS stream have arrived: the app can start."""

    request_id: int
    role: Role
    keep_conn: bool
    params: dict[str, str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class RequestBody(Event):
    """A piece of the request body (an FCGI_STDIN record)."""

    request_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RequestBodyEnd(Event):
    """The request body is complete (the empty FCGI_STDIN record)."""

    request_id: int


@dataclass(frozen=True, slots=True)
class RequestAborted(Event):
    """The web server sent FCGI_ABORT_REQUEST: its client went away.

    The caller should stop the app and call ``end_request`` promptly.
    """

    request_id: int


@dataclass(frozen=True, slots=True)
class RequestRejected(Event):
    """The core answered a BEGIN_REQUEST with END_REQUEST itself (unknown role,
    too many requests, no multiplexing); the reply is in ``data_to_send()``."""

    request_id: int
    protocol_status: ProtocolStatus
    role: int


@dataclass(frozen=True, slots=True)
class BadRecord(Event):
    """A record that does not fit the state of its request.

    The record was ignored and the request is now failed: the core ignores its further
    records, and the caller ends it (with an error response if the app had not
    started, as after an abort if it had).
    """

    request_id: int
    record_type: int
    reason: str


# ---------------------------------------------------------- received by the client role


@dataclass(frozen=True, slots=True)
class Stdout(Event):
    """A piece of the response (an FCGI_STDOUT record)."""

    request_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Stderr(Event):
    """A piece of the application's error stream (an FCGI_STDERR record)."""

    request_id: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RequestEnded(Event):
    """FCGI_END_REQUEST: the application is done with the request."""

    request_id: int
    app_status: int
    protocol_status: int


@dataclass(frozen=True, slots=True)
class ValuesResult(Event):
    """The FCGI_GET_VALUES_RESULT answer to :meth:`ClientConnection.get_values`."""

    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class UnknownTypeResult(Event):
    """FCGI_UNKNOWN_TYPE: the application did not understand a management record."""

    record_type: int
