"""Protocol-test helpers in one place: FastCGI records as a web server or an app sends them,
and a strict reader for what came back."""

from __future__ import annotations

from collections.abc import Mapping

from fcgibridge.protocol import (
    ProtocolStatus,
    Record,
    RecordReader,
    RecordType,
    Role,
    pack_record,
    pack_stream,
    records,
)

#: The PARAMS of a plain GET, as small as the server accepts.
GET_PARAMS = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "SERVER_PORT": "80"}


def begin(request_id: int, *, role: int = Role.RESPONDER, keep_conn: bool = False) -> bytes:
    return records.pack_begin_request(request_id, role, keep_conn)


def params(request_id: int, pairs: Mapping[str, str] = GET_PARAMS) -> bytes:
    """The whole PARAMS stream, its empty closing record included."""
    return records.pack_params(request_id, pairs)


def stdin(request_id: int, data: bytes = b"", *, close: bool = True) -> bytes:
    """STDIN records for ``data``; with ``close``, the empty record that ends the stream."""
    out = pack_stream(RecordType.STDIN, request_id, data)
    return out + pack_record(RecordType.STDIN, request_id) if close else out


def request(request_id: int, body: bytes = b"", *, keep_conn: bool = False, role: int = Role.RESPONDER,
            pairs: Mapping[str, str] = GET_PARAMS) -> bytes:
    """A whole request as a web server sends it: BEGIN, PARAMS stream, STDIN stream."""
    return begin(request_id, role=role, keep_conn=keep_conn) + params(request_id, pairs) + stdin(request_id, body)


def stdout(request_id: int, data: bytes) -> bytes:
    return pack_stream(RecordType.STDOUT, request_id, data)


def end_request(request_id: int, app_status: int = 0, status: int = ProtocolStatus.REQUEST_COMPLETE) -> bytes:
    return records.pack_end_request(request_id, app_status, status)


def parse(data: bytes) -> list[Record]:
    """Every record in ``data``, which must end on a record boundary."""
    reader = RecordReader()
    out = reader.feed(data)
    assert reader.pending == 0, "the data ends in the middle of a record"
    return out
