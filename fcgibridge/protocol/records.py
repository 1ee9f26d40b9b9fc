"""The FastCGI record layer: 8-byte headers, content, padding, name-value pairs.

Nothing else in the package builds or parses records. Parsing is optimistic with
rollback: a record is only taken from the buffer once all of it (header, content and
padding) has arrived, so the incomplete tail never exceeds one record
(8 + 65535 + 255 bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .constants import (
    FCGI_KEEP_CONN,
    FCGI_VERSION_1,
    HEADER_LEN,
    MAX_CONTENT_LEN,
    NULL_REQUEST_ID,
    ProtocolStatus,
    RecordType,
)
from .errors import RemoteProtocolError

# version, type, requestId, contentLength, paddingLength, reserved
_HEADER = struct.Struct("!BBHHBx")
# role, flags, reserved[5]
_BEGIN_BODY = struct.Struct("!HB5x")
# appStatus, protocolStatus, reserved[3]
_END_BODY = struct.Struct("!IB3x")
# The end of a response: the empty STDOUT record, then END_REQUEST (header and body).
_END_OF_RESPONSE = struct.Struct("!BBHHBx" "BBHHBx" "IB3x")
# type, reserved[7]
_UNKNOWN_TYPE_BODY = struct.Struct("!B7x")
_LONG_LEN = struct.Struct("!I")

#: Content size of every full record we split a stream into: the largest multiple of 8
#: that fits in 16 bits, so full records need no padding.
CHUNK = MAX_CONTENT_LEN - MAX_CONTENT_LEN % HEADER_LEN
_ZEROS = bytes(HEADER_LEN)


class Record(NamedTuple):
    """One parsed record: its type byte, request id and content (padding removed)."""

    type: int
    request_id: int
    content: bytes


class EndRequestBody(NamedTuple):
    app_status: int
    protocol_status: int


# --------------------------------------------------------------------------- output


def pack_record(record_type: int, request_id: int, content: bytes = b"") -> bytes:
    """One record, its content padded to a multiple of 8 bytes.

    ``content`` must be at most 65535 bytes; :func:`pack_stream` splits longer data.
    """
    length = len(content)
    padding = -length % HEADER_LEN
    header = _HEADER.pack(FCGI_VERSION_1, record_type, request_id, length, padding)
    if padding:
        return b"".join((header, content, _ZEROS[:padding]))
    return header + content


def pack_stream(record_type: int, request_id: int, data: bytes | memoryview) -> bytes:
    """``data`` as one or more records of a stream type, without the closing record.

    Empty ``data`` gives no record at all: an empty record would close the stream.
    """
    if type(data) is bytes and len(data) <= MAX_CONTENT_LEN:
        return pack_record(record_type, request_id, data) if data else b""
    return b"".join(stream_parts(record_type, request_id, data))


def stream_parts(record_type: int, request_id: int, data: bytes | memoryview) -> list[bytes | memoryview]:
    """:func:`pack_stream` as pieces to write one after the other (``writelines``): the
    headers and padding, and ``data`` itself in slices, not copied."""
    if type(data) is not bytes:
        # A copy: the pieces may be written later, and the caller may change a buffer
        # it lent (a memoryview of a bytearray also stops the bytearray from resizing).
        data = data.tobytes() if isinstance(data, memoryview) else bytes(data)
    length = len(data)
    parts: list[bytes | memoryview] = []
    view = memoryview(data)
    for start in range(0, length, CHUNK):
        piece = view[start : start + CHUNK]
        size = len(piece)
        parts.append(_HEADER.pack(FCGI_VERSION_1, record_type, request_id, size, -size % HEADER_LEN))
        parts.append(piece)
        if size % HEADER_LEN:
            parts.append(_ZEROS[: -size % HEADER_LEN])
    return parts


def pack_begin_request(request_id: int, role: int, keep_conn: bool) -> bytes:
    flags = FCGI_KEEP_CONN if keep_conn else 0
    return pack_record(RecordType.BEGIN_REQUEST, request_id, _BEGIN_BODY.pack(role, flags))


def pack_end_of_response(request_id: int, app_status: int, protocol_status: int) -> bytes:
    """The empty STDOUT record that closes the response, then END_REQUEST, in one pack."""
    return _END_OF_RESPONSE.pack(FCGI_VERSION_1, RecordType.STDOUT, request_id, 0, 0,
                                 FCGI_VERSION_1, RecordType.END_REQUEST, request_id, _END_BODY.size, 0,
                                 app_status & 0xFFFFFFFF, protocol_status)


def pack_end_request(
    request_id: int, app_status: int = 0, protocol_status: int = ProtocolStatus.REQUEST_COMPLETE
) -> bytes:
    body = _END_BODY.pack(app_status & 0xFFFFFFFF, protocol_status)
    return pack_record(RecordType.END_REQUEST, request_id, body)


def pack_unknown_type(record_type: int) -> bytes:
    body = _UNKNOWN_TYPE_BODY.pack(record_type)
    return pack_record(RecordType.UNKNOWN_TYPE, NULL_REQUEST_ID, body)


def pack_params(
    request_id: int, params: Mapping[str, str | bytes] | Iterable[tuple[str | bytes, str | bytes]]
) -> bytes:
    """A whole PARAMS stream, closing record included."""
    encoded = encode_pairs(params)
    return pack_stream(RecordType.PARAMS, request_id, encoded) + pack_record(RecordType.PARAMS, request_id)


def _length_prefix(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length > 0x7FFFFFFF:
        raise ValueError(f"name or value of {length} bytes is longer than FastCGI allows")
    return _LONG_LEN.pack(length | 0x80000000)


def _as_bytes(text: str | bytes) -> bytes:
    # PEP 3333: CGI variables are latin-1 "native strings".
    return text.encode("latin-1") if isinstance(text, str) else bytes(text)


def encode_pairs(
    pairs: Mapping[str, str | bytes] | Mapping[bytes, bytes] | Iterable[tuple[str | bytes, str | bytes]],
) -> bytes:
    """Name-value pairs in FastCGI's length-prefixed format (1- or 4-byte lengths)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    parts: list[bytes] = []
    for name, value in items:
        raw_name, raw_value = _as_bytes(name), _as_bytes(value)
        parts += (_length_prefix(len(raw_name)), _length_prefix(len(raw_value)), raw_name, raw_value)
    return b"".join(parts)


# ---------------------------------------------------------------------------- input


def decode_pairs(buf: bytes) -> dict[str, str]:
    """Name-value pairs to a dict of latin-1 strings (PEP 3333); a repeated name keeps its last value."""
    pairs: dict[str, str] = {}
    pos, end = 0, len(buf)
    unpack = _LONG_LEN.unpack_from
    # latin-1 maps each byte to one character, so byte offsets are string offsets: decode
    # once and slice the text.
    text = buf.decode("latin-1")
    try:
        while pos < end:
            # The 1-byte lengths are inlined: this loop runs for every CGI variable.
            name_len = buf[pos]
            if name_len < 0x80:
                pos += 1
            else:
                name_len = unpack(buf, pos)[0] & 0x7FFFFFFF
                pos += 4
            value_len = buf[pos]
            if value_len < 0x80:
                pos += 1
            else:
                value_len = unpack(buf, pos)[0] & 0x7FFFFFFF
                pos += 4
            stop = pos + name_len + value_len
            if stop > end:
                raise RemoteProtocolError(
                    f"name-value pair of {name_len}+{value_len} bytes runs past the end of its stream"
                )
            pairs[text[pos : pos + name_len]] = text[pos + name_len : stop]
            pos = stop
    except (IndexError, struct.error):
        raise RemoteProtocolError("name-value pair cut inside its lengths") from None
    return pairs


def parse_begin_request(content: bytes) -> tuple[int, bool]:
    """``(role, keep_conn)`` of a BEGIN_REQUEST body."""
    if len(content) != _BEGIN_BODY.size:
        raise RemoteProtocolError(f"BEGIN_REQUEST body of {len(content)} bytes, expected 8")
    return (content[0] << 8) | content[1], bool(content[2] & FCGI_KEEP_CONN)


def parse_end_request(content: bytes) -> EndRequestBody:
    if len(content) != _END_BODY.size:
        raise RemoteProtocolError(f"END_REQUEST body of {len(content)} bytes, expected 8")
    app_status, protocol_status = _END_BODY.unpack(content)
    return EndRequestBody(app_status, protocol_status)


def parse_unknown_type(content: bytes) -> int:
    if len(content) != _UNKNOWN_TYPE_BODY.size:
        raise RemoteProtocolError(f"UNKNOWN_TYPE body of {len(content)} bytes, expected 8")
    return int(content[0])


class RecordReader:
    """Splits a byte stream into records, however the bytes are cut.

    :meth:`feed` returns every record completed by the new bytes and keeps the
    incomplete tail (at most one record) for the next call. A record arriving in many
    small pieces is gathered in a bytearray, so feeding byte by byte stays linear.

    After a :class:`RemoteProtocolError` the stream is out of step (the bytes that
    follow are no record boundary), so every later :meth:`feed` raises it again.
    """

    __slots__ = ("_error", "_need", "_tail")

    def __init__(self) -> None:
        self._tail = bytearray()
        self._need = HEADER_LEN
        self._error: RemoteProtocolError | None = None

    @property
    def pending(self) -> int:
        """Bytes held back because their record is not complete yet."""
        return len(self._tail)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Record]:
        return [Record._make(raw) for raw in self.feed_raw(data)]

    def feed_raw(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
        """:meth:`feed`, with each record as a plain ``(type, request_id, content)``
        tuple (what the connection roles take: making a NamedTuple costs more)."""
        if self._error is not None:
            raise RemoteProtocolError(f"stream already broken: {self._error}")
        try:
            return self._feed(data)
        except RemoteProtocolError as exc:
            self._error = exc
            self._tail = bytearray()
            raise

    def _feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
        if not isinstance(data, bytes):
            data = bytes(data)
        if self._tail:
            self._tail += data
            if len(self._tail) < self._need:
                return []
            return self._take_tail()
        return self._parse(data)

    def _take_tail(self) -> list[tuple[int, int, bytes]]:
        data = bytes(self._tail)
        self._tail = bytearray()
        return self._parse(data)

    def _parse(self, data: bytes) -> list[tuple[int, int, bytes]]:
        records: list[tuple[int, int, bytes]] = []
        pos, end = 0, len(data)
        while end - pos >= HEADER_LEN:
            # The header by hand: compiled, these are plain byte reads (struct is a call).
            version = data[pos]
            if version != FCGI_VERSION_1:
                raise RemoteProtocolError(f"record with version {version} (expected 1): not FastCGI")
            rtype = data[pos + 1]
            request_id = (data[pos + 2] << 8) | data[pos + 3]
            length = (data[pos + 4] << 8) | data[pos + 5]
            padding = data[pos + 6]
            stop = pos + HEADER_LEN + length
            if stop + padding > end:
                self._need = HEADER_LEN + length + padding
                break
            records.append((rtype, request_id, data[pos + HEADER_LEN : stop]))
            pos = stop + padding
        else:
            self._need = HEADER_LEN
        if pos < end:
            self._tail = bytearray(memoryview(data)[pos:])
        return records
