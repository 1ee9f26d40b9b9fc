"""The sans-IO FastCGI 1.0 protocol core, for both the application and the client role.

No sockets, threads or asyncio in here: bytes in, events out; calls in, bytes out.
"""

from .connection import DEFAULT_MAX_PARAMS_SIZE, ApplicationConnection, ClientConnection
from .constants import (
    FCGI_KEEP_CONN,
    FCGI_MAX_CONNS,
    FCGI_MAX_REQS,
    FCGI_MPXS_CONNS,
    FCGI_VERSION_1,
    HEADER_LEN,
    MAX_CONTENT_LEN,
    ProtocolStatus,
    RecordType,
    Role,
)
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    BadRecord,
    Event,
    RequestAborted,
    RequestBody,
    RequestBodyEnd,
    RequestData,
    RequestDataEnd,
    RequestEnded,
    RequestRejected,
    RequestStarted,
    Stderr,
    Stdout,
    UnknownTypeResult,
    ValuesResult,
)
from .records import Record, RecordReader, decode_pairs, encode_pairs, pack_record, pack_stream
from .state import RequestState

__all__ = [
    "DEFAULT_MAX_PARAMS_SIZE",
    "FCGI_KEEP_CONN",
    "FCGI_MAX_CONNS",
    "FCGI_MAX_REQS",
    "FCGI_MPXS_CONNS",
    "FCGI_VERSION_1",
    "HEADER_LEN",
    "MAX_CONTENT_LEN",
    "ApplicationConnection",
    "BadRecord",
    "ClientConnection",
    "Event",
    "LocalProtocolError",
    "ProtocolError",
    "ProtocolStatus",
    "Record",
    "RecordReader",
    "RecordType",
    "RemoteProtocolError",
    "RequestAborted",
    "RequestBody",
    "RequestBodyEnd",
    "RequestData",
    "RequestDataEnd",
    "RequestEnded",
    "RequestRejected",
    "RequestStarted",
    "RequestState",
    "Role",
    "Stderr",
    "Stdout",
    "UnknownTypeResult",
    "ValuesResult",
    "decode_pairs",
    "encode_pairs",
    "pack_record",
    "pack_stream",
]
