"""Events the protocol core turns bytes into.

Events are values: every field is set once by the constructor (``Final``: compiled, a
field cannot be assigned at all), two events are equal when their type and fields are,
and every per-request event carries ``request_id``. They are plain classes rather than
frozen dataclasses because one or more are made for every record: a frozen dataclass
costs a Python-level ``__init__`` each time.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from .constants import ProtocolStatus, Role


class Event:
    """Base class of every event: equality, hashing and repr from :attr:`fields`."""

    __slots__ = ()

    #: The constructor's arguments, in order.
    fields: ClassVar[tuple[str, ...]] = ()
    #: The fields left out of the repr (bodies and params can be long).
    hidden: ClassVar[frozenset[str]] = frozenset()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Event)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.fields if name not in self.hidden)
        return f"{type(self).__name__}({shown})"


class _RequestOnly(Event):
    """An event that carries only its request id."""

    __slots__ = ("request_id",)
    fields = ("request_id",)

    def __init__(self, request_id: int) -> None:
        self.request_id: Final = request_id


class _StreamData(Event):
    """A piece of a stream (STDIN, DATA, STDOUT, STDERR) of one request."""

    __slots__ = ("data", "request_id")
    fields = ("request_id", "data")
    hidden = frozenset({"data"})

    def __init__(self, request_id: int, data: bytes) -> None:
        self.request_id: Final = request_id
        self.data: Final = data


# ----------------------------------------------------- received by the application role


class RequestStarted(Event):
    """BEGIN_REQUEST and the whole PARAMS stream have arrived: the app can start."""

    __slots__ = ("keep_conn", "params", "request_id", "role")
    fields = ("request_id", "role", "keep_conn", "params")
    hidden = frozenset({"params"})

    def __init__(self, request_id: int, role: Role, keep_conn: bool, params: dict[str, str]) -> None:
        self.request_id: Final = request_id
        self.role: Final = role
        self.keep_conn: Final = keep_conn
        self.params: Final = params


class RequestBody(_StreamData):
    """A piece of the request body (an FCGI_STDIN record)."""

    __slots__ = ()


class RequestBodyEnd(_RequestOnly):
    """The request body is complete (the empty FCGI_STDIN record)."""

    __slots__ = ()


class RequestData(_StreamData):
    """A piece of the FILTER role's data stream (an FCGI_DATA record, spec 6.4): the file
    the web server wants filtered. It follows the whole body."""

    __slots__ = ()


class RequestDataEnd(_RequestOnly):
    """The FILTER role's data stream is complete (the empty FCGI_DATA record)."""

    __slots__ = ()


class RequestAborted(_RequestOnly):
    """The web server sent FCGI_ABORT_REQUEST: its client went away.

    The caller should stop the app and call ``end_request`` promptly. (A request aborted
    before its PARAMS ended gives no event: the caller never saw it start, and the core
    answers it itself.)
    """

    __slots__ = ()


class RequestRejected(Event):
    """The core answered a BEGIN_REQUEST with END_REQUEST itself (unknown role,
    too many requests, no multiplexing); the reply is in ``data_to_send()``."""

    __slots__ = ("protocol_status", "request_id", "role")
    fields = ("request_id", "protocol_status", "role")

    def __init__(self, request_id: int, protocol_status: ProtocolStatus, role: int) -> None:
        self.request_id: Final = request_id
        self.protocol_status: Final = protocol_status
        self.role: Final = role


class BadRecord(Event):
    """A record that does not fit the state of its request.

    The record was ignored and the request is now failed: the core ignores its further
    records, and the caller ends it (with an error response if the app had not
    started, as after an abort if it had).
    """

    __slots__ = ("reason", "record_type", "request_id")
    fields = ("request_id", "record_type", "reason")

    def __init__(self, request_id: int, record_type: int, reason: str) -> None:
        self.request_id: Final = request_id
        self.record_type: Final = record_type
        self.reason: Final = reason


# ---------------------------------------------------------- received by the client role


class Stdout(_StreamData):
    """A piece of the response (an FCGI_STDOUT record)."""

    __slots__ = ()


class Stderr(_StreamData):
    """A piece of the application's error stream (an FCGI_STDERR record)."""

    __slots__ = ()


class RequestEnded(Event):
    """FCGI_END_REQUEST: the application is done with the request."""

    __slots__ = ("app_status", "protocol_status", "request_id")
    fields = ("request_id", "app_status", "protocol_status")

    def __init__(self, request_id: int, app_status: int, protocol_status: int) -> None:
        self.request_id: Final = request_id
        self.app_status: Final = app_status
        self.protocol_status: Final = protocol_status


class ValuesResult(Event):
    """The FCGI_GET_VALUES_RESULT answer to :meth:`ClientConnection.get_values`."""

    __slots__ = ("values",)
    fields = ("values",)

    def __init__(self, values: dict[str, str]) -> None:
        self.values: Final = values


class UnknownTypeResult(Event):
    """FCGI_UNKNOWN_TYPE: the application did not understand a management record."""

    __slots__ = ("record_type",)
    fields = ("record_type",)

    def __init__(self, record_type: int) -> None:
        self.record_type: Final = record_type
