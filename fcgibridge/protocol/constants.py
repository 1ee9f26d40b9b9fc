"""Numbers of the FastCGI 1.0 specification (section 8, "Types and Constants")."""

from __future__ import annotations

import enum

#: Value of the ``version`` byte of every record.
FCGI_VERSION_1 = 1

#: Size of a record header, and the unit that output content is padded to.
HEADER_LEN = 8

#: Largest content of one record (``contentLength`` is 16 bits).
MAX_CONTENT_LEN = 0xFFFF

#: Request id of management records.
NULL_REQUEST_ID = 0

#: Bit of ``BeginRequestBody.flags``: keep the connection open after the request.
FCGI_KEEP_CONN = 1


class RecordType(enum.IntEnum):
    """The ``type`` byte of a record header."""

    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


#: Highest record type the specification defines (``FCGI_MAXTYPE``).
MAX_KNOWN_TYPE = RecordType.UNKNOWN_TYPE


class Role(enum.IntEnum):
    """The ``role`` field of ``FCGI_BeginRequestBody``."""

    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(enum.IntEnum):
    """The ``protocolStatus`` field of ``FCGI_EndRequestBody``."""

    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


#: Variable names an application answers in ``FCGI_GET_VALUES_RESULT``.
FCGI_MAX_CONNS = "FCGI_MAX_CONNS"
FCGI_MAX_REQS = "FCGI_MAX_REQS"
FCGI_MPXS_CONNS = "FCGI_MPXS_CONNS"
