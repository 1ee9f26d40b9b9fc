"""The record layer: headers, padding, stream splitting, name-value pairs.

Every parser input is fed whole, then one byte at a time, then in random cuts, and must
give the same records each way.
"""

from __future__ import annotations

import array
import struct
import time
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recordkit import parse

from fcgibridge.protocol import (
    FCGI_VERSION_1,
    HEADER_LEN,
    MAX_CONTENT_LEN,
    ProtocolStatus,
    Record,
    RecordReader,
    RecordType,
    RemoteProtocolError,
    Role,
    decode_pairs,
    encode_pairs,
    pack_record,
    pack_stream,
    records,
)

# ------------------------------------------------------------------------- helpers


def raw_record(
    record_type: int,
    request_id: int,
    content: bytes = b"",
    padding: int = 0,
    *,
    pad_byte: int = 0xAA,
    version: int = FCGI_VERSION_1,
    reserved: int = 0x55,
) -> bytes:
    """A record built by hand, with any padding (and junk in padding and reserved)."""
    header = struct.pack("!BBHHBB", version, record_type, request_id, len(content), padding, reserved)
    return header + content + bytes([pad_byte]) * padding


def feed_bytewise(data: bytes) -> list[Record]:
    reader = RecordReader()
    out: list[Record] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert reader.pending == 0
    return out


def feed_cuts(data: bytes, cuts: Iterable[int]) -> list[Record]:
    reader = RecordReader()
    out: list[Record] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += reader.feed(data[start:cut])
        start = cut
    assert reader.pending == 0
    return out


def header_fields(record: bytes) -> tuple[int, int, int, int, int]:
    version, rtype, request_id, length, padding, _ = struct.unpack_from("!BBHHBB", record)
    return version, rtype, request_id, length, padding


def split_records(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(type, id, content, padding bytes) of every record in ``data``, checked against the spec layout."""
    out = []
    pos = 0
    while pos < len(data):
        version, rtype, request_id, length, padding = header_fields(data[pos : pos + HEADER_LEN])
        assert version == FCGI_VERSION_1
        body = data[pos + HEADER_LEN : pos + HEADER_LEN + length + padding]
        assert len(body) == length + padding
        out.append((rtype, request_id, body[:length], body[length:]))
        pos += HEADER_LEN + length + padding
    return out


# ---------------------------------------------------------------- single records


@pytest.mark.parametrize("record_type", list(RecordType))
def test_every_record_type_round_trips(record_type: RecordType) -> None:
    content = bytes(range(13))
    data = pack_record(record_type, 0x1234, content)
    assert header_fields(data) == (FCGI_VERSION_1, record_type, 0x1234, 13, 3)
    assert parse(data) == [Record(record_type, 0x1234, content)]
    assert feed_bytewise(data) == [Record(record_type, 0x1234, content)]


def test_unknown_record_types_are_still_framed() -> None:
    """The reader frames any type byte; deciding what an unknown type means is the connection's job."""
    data = raw_record(0, 3, b"abc", 5) + raw_record(200, 4, b"", 0)
    assert parse(data) == [Record(0, 3, b"abc"), Record(200, 4, b"")]


def test_begin_request_body() -> None:
    data = records.pack_begin_request(7, Role.AUTHORIZER, keep_conn=True)
    assert data == bytes([1, 1, 0, 7, 0, 8, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0])
    (record,) = parse(data)
    assert records.parse_begin_request(record.content) == (Role.AUTHORIZER, True)
    plain = records.pack_begin_request(7, Role.RESPONDER, keep_conn=False)
    assert records.parse_begin_request(parse(plain)[0].content) == (Role.RESPONDER, False)


def test_begin_request_flags_other_than_keep_conn_are_ignored() -> None:
    assert records.parse_begin_request(bytes([0, 1, 0xFE, 9, 9, 9, 9, 9])) == (Role.RESPONDER, False)
    assert records.parse_begin_request(bytes([0, 1, 0xFF, 0, 0, 0, 0, 0])) == (Role.RESPONDER, True)


def test_end_request_body() -> None:
    data = records.pack_end_request(3, 938, ProtocolStatus.OVERLOADED)
    assert data == bytes([1, 3, 0, 3, 0, 8, 0, 0, 0, 0, 0x03, 0xAA, 2, 0, 0, 0])
    (record,) = parse(data)
    assert records.parse_end_request(record.content) == (938, ProtocolStatus.OVERLOADED)


def test_end_request_negative_app_status_wraps_to_32_bits() -> None:
    (record,) = parse(records.pack_end_request(1, -1))
    assert records.parse_end_request(record.content) == (0xFFFFFFFF, ProtocolStatus.REQUEST_COMPLETE)


def test_unknown_type_body() -> None:
    data = records.pack_unknown_type(42)
    assert data == bytes([1, 11, 0, 0, 0, 8, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0])
    assert records.parse_unknown_type(parse(data)[0].content) == 42


@pytest.mark.parametrize(
    "parse", [records.parse_begin_request, records.parse_end_request, records.parse_unknown_type]
)
@pytest.mark.parametrize("size", [0, 7, 9, 16])
def test_discrete_bodies_of_wrong_size_are_remote_errors(parse: object, size: int) -> None:
    assert callable(parse)
    with pytest.raises(RemoteProtocolError):
        parse(bytes(size))


# ------------------------------------------------------------------------ padding


def test_any_padding_length_is_skipped_on_input() -> None:
    """Spec 3.3: receivers must "interpret the paddingLength and skip the paddingData"."""
    for padding in range(256):
        content = bytes([padding]) * (padding % 11)
        data = raw_record(RecordType.STDIN, 1, content, padding) + raw_record(RecordType.STDIN, 1, b"", 0)
        expected = [Record(RecordType.STDIN, 1, content), Record(RecordType.STDIN, 1, b"")]
        assert parse(data) == expected, padding
        assert feed_cuts(data, range(0, len(data), 3)) == expected, padding


def test_padding_with_non_zero_bytes_and_reserved_byte_ignored() -> None:
    data = raw_record(RecordType.PARAMS, 2, b"\x00\x01", 255, pad_byte=0x01, reserved=0xFF)
    # If padding were read as the next header, 0x01 would look like a valid version byte.
    data += raw_record(RecordType.PARAMS, 2)
    assert feed_bytewise(data) == [Record(RecordType.PARAMS, 2, b"\x00\x01"), Record(RecordType.PARAMS, 2, b"")]


@pytest.mark.parametrize("length", [*range(0, 40), 65527, 65528, 65529, MAX_CONTENT_LEN])
def test_output_content_is_padded_to_a_multiple_of_8(length: int) -> None:
    """Spec 3.3: "We recommend that records be placed on boundaries that are multiples of eight bytes"."""
    content = b"\x07" * length
    data = pack_record(RecordType.STDOUT, 1, content)
    assert len(data) % 8 == 0
    ((rtype, rid, got, padding),) = split_records(data)
    assert (rtype, rid, got) == (RecordType.STDOUT, 1, content)
    assert len(padding) == -length % 8
    assert padding == bytes(len(padding))


# ------------------------------------------------------------------------ streams


@pytest.mark.parametrize("length", [1, 8, 65527, 65528, 65535, 65536, 131056, 131057, 200_000, 3 * 65535 + 1])
def test_long_stream_is_split_and_reassembled(length: int) -> None:
    data = bytes(i % 251 for i in range(length))
    packed = pack_stream(RecordType.STDOUT, 9, data)
    assert len(packed) % 8 == 0
    parts = split_records(packed)
    assert all(rtype == RecordType.STDOUT and rid == 9 for rtype, rid, _, _ in parts)
    assert all(0 < len(content) <= MAX_CONTENT_LEN for _, _, content, _ in parts)
    assert b"".join(content for _, _, content, _ in parts) == data
    expected_parts = -(-length // records.CHUNK) if length > MAX_CONTENT_LEN else 1
    assert len(parts) == expected_parts
    # and the reader gives the same pieces, however fed
    assert [r.content for r in parse(packed)] == [c for _, _, c, _ in parts]


def test_full_records_of_a_long_stream_need_no_padding() -> None:
    """Every record but the last carries a multiple of 8 bytes, so only the last is padded."""
    parts = split_records(pack_stream(RecordType.STDOUT, 1, b"p" * 300_000))
    assert [len(c) % 8 for _, _, c, _ in parts[:-1]] == [0] * (len(parts) - 1)
    assert [pad for _, _, _, pad in parts[:-1]] == [b""] * (len(parts) - 1)


def test_stream_accepts_memoryview() -> None:
    data = bytes(range(256)) * 300
    assert pack_stream(RecordType.STDERR, 1, memoryview(data)) == pack_stream(RecordType.STDERR, 1, data)


@pytest.mark.parametrize("items", [10, 20000, 50000])
def test_stream_of_a_memoryview_with_wide_items_counts_bytes(items: int) -> None:
    wide = array.array("I", range(items))
    raw = wide.tobytes()
    packed = pack_stream(RecordType.STDOUT, 1, memoryview(wide))
    assert packed == pack_stream(RecordType.STDOUT, 1, raw)
    assert b"".join(r.content for r in parse(packed)) == raw


def test_empty_stream_data_gives_no_record() -> None:
    """Spec 3.3: a stream is "zero or more non-empty records ... followed by an empty record":
    an empty record in the middle would close the stream."""
    assert pack_stream(RecordType.STDOUT, 1, b"") == b""


def test_empty_record_is_the_close_of_a_stream() -> None:
    closing = pack_record(RecordType.STDIN, 4)
    assert closing == bytes([1, 5, 0, 4, 0, 0, 0, 0])
    assert parse(closing) == [Record(RecordType.STDIN, 4, b"")]


def test_pack_params_ends_with_the_empty_params_record() -> None:
    data = records.pack_params(5, {"A": "1", "B": "2"})
    parts = split_records(data)
    assert parts[-1][:3] == (RecordType.PARAMS, 5, b"")
    assert all(content for _, _, content, _ in parts[:-1])
    assert decode_pairs(b"".join(c for _, _, c, _ in parts)) == {"A": "1", "B": "2"}
    assert split_records(records.pack_params(5, {})) == [(RecordType.PARAMS, 5, b"", b"")]


# ------------------------------------------------------------------ feeding shapes


def sample_stream() -> bytes:
    return b"".join(
        [
            records.pack_begin_request(1, Role.RESPONDER, keep_conn=True),
            records.pack_params(1, {"REQUEST_METHOD": "POST", "X" * 200: "y" * 70000}),
            raw_record(RecordType.STDIN, 1, b"odd padding", 201),
            pack_stream(RecordType.STDIN, 1, b"z" * 70000),
            raw_record(RecordType.STDIN, 1, b"", 7),
            raw_record(RecordType.GET_VALUES, 0, encode_pairs({"FCGI_MAX_CONNS": ""}), 0),
            records.pack_unknown_type(77),
        ]
    )


SAMPLE = sample_stream()
SAMPLE_RECORDS = parse(SAMPLE)


def test_fed_whole_bytewise_and_in_halves_give_the_same_records() -> None:
    data = sample_stream()
    whole = parse(data)
    assert [r.type for r in whole][:2] == [RecordType.BEGIN_REQUEST, RecordType.PARAMS]
    assert whole[-1] == Record(RecordType.UNKNOWN_TYPE, 0, bytes([77]) + bytes(7))
    assert feed_bytewise(data) == whole
    for cut in (1, 7, 8, 9, 15, 16, 17, len(data) - 1):
        assert feed_cuts(data, [cut]) == whole


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_cuts_give_the_same_records(data: st.DataObject) -> None:
    stream = SAMPLE
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    assert feed_cuts(stream, cuts) == SAMPLE_RECORDS


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=300), st.integers(0, 255)),
        max_size=8,
    ),
    st.lists(st.integers(0, 3000), max_size=20),
)
def test_hand_built_records_any_shape_any_cut(
    shapes: Sequence[tuple[int, int, bytes, int]], cuts: list[int]
) -> None:
    data = b"".join(raw_record(t, rid, content, pad) for t, rid, content, pad in shapes)
    expected = [Record(t, rid, content) for t, rid, content, _ in shapes]
    assert feed_cuts(data, [c for c in cuts if c <= len(data)]) == expected


def test_trailing_partial_record_is_kept_for_the_next_feed() -> None:
    first = pack_record(RecordType.STDIN, 1, b"hello")
    second = pack_record(RecordType.STDIN, 1, b"world, a longer one")
    reader = RecordReader()
    for keep in (3, 8, 12, len(second) - 1):
        assert reader.feed(first + second[:keep]) == [Record(RecordType.STDIN, 1, b"hello")]
        assert reader.pending == keep
        assert reader.feed(b"") == []
        assert reader.pending == keep
        assert reader.feed(second[keep:]) == [Record(RecordType.STDIN, 1, b"world, a longer one")]
        assert reader.pending == 0


def test_reader_accepts_bytearray_and_memoryview() -> None:
    data = pack_record(RecordType.STDIN, 1, b"abc") * 2
    reader = RecordReader()
    assert reader.feed(bytearray(data[:5])) == []
    assert reader.feed(memoryview(data)[5:]) == [Record(RecordType.STDIN, 1, b"abc")] * 2


@pytest.mark.parametrize("version", [0, 2, 0x47, 0xFF])
def test_bad_version_byte_is_a_remote_error(version: int) -> None:
    bad = raw_record(RecordType.STDIN, 1, b"x", version=version)
    with pytest.raises(RemoteProtocolError, match="version"):
        RecordReader().feed(bad)
    # ... also when it is the second record, and when the header arrives a byte at a time
    with pytest.raises(RemoteProtocolError):
        RecordReader().feed(pack_record(RecordType.STDIN, 1, b"ok") + bad)
    reader = RecordReader()
    for byte in bad[: HEADER_LEN - 1]:
        assert reader.feed(bytes([byte])) == []
    with pytest.raises(RemoteProtocolError):
        reader.feed(bad[HEADER_LEN - 1 : HEADER_LEN])


def test_reader_stays_broken_after_a_remote_error() -> None:
    """After garbage the byte stream is out of step: later bytes must not be parsed as records."""
    reader = RecordReader()
    with pytest.raises(RemoteProtocolError):
        reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.feed(pack_record(RecordType.STDIN, 1, b"looks fine"))


def bytewise_seconds(data: bytes) -> float:
    """Best of five runs feeding ``data`` one byte at a time."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        feed_bytewise(data)
        best = min(best, time.perf_counter() - started)
    return best


def test_bytewise_feed_of_a_64k_record_is_linear() -> None:
    data = pack_record(RecordType.STDIN, 1, bytes(range(256)) * 255 + b"x" * 255) * 2
    assert len(data) > 2 * 65535
    started = time.perf_counter()
    out = feed_bytewise(data)
    assert time.perf_counter() - started < 2.0
    assert [len(r.content) for r in out] == [65535, 65535]
    # Same bytes, same number of feeds: gathering one 64 KiB record may cost no more than
    # completing 8192 empty records (it costs about a third here). Re-copying or re-parsing
    # the held-back tail on every feed makes it quadratic: several times slower.
    big = pack_record(RecordType.STDIN, 1, b"x" * 65528)
    tiny = pack_record(RecordType.STDIN, 1) * 8192
    assert len(big) == len(tiny)
    assert bytewise_seconds(big) < 1.2 * bytewise_seconds(tiny)


# ---------------------------------------------------------------- name-value pairs


@pytest.mark.parametrize(
    ("length", "prefix"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x00\x00\x80"),
        (255, b"\x80\x00\x00\xff"),
        (70000, b"\x80\x01\x11\x70"),
    ],
)
def test_length_prefix_one_or_four_bytes(length: int, prefix: bytes) -> None:
    """Spec 3.4: "Lengths of 127 bytes and less can be encoded in one byte, while longer
    lengths are always encoded in four bytes" with the high bit set."""
    name = b"n" * length
    assert encode_pairs([(name, b"")]) == prefix + b"\x00" + name
    assert encode_pairs([(b"N", name)]) == b"\x01" + prefix + b"N" + name
    assert decode_pairs(prefix + b"\x00" + name) == {name.decode(): ""}
    assert decode_pairs(b"\x01" + prefix + b"N" + name) == {"N": name.decode()}


@pytest.mark.parametrize("name_len", [1, 127, 128, 70000])
@pytest.mark.parametrize("value_len", [0, 127, 128, 70000])
def test_all_four_pair_layouts_round_trip(name_len: int, value_len: int) -> None:
    pairs = {"a" * name_len: "b" * value_len, "SHORT": "v"}
    encoded = encode_pairs(pairs)
    assert decode_pairs(encoded) == pairs
    assert len(encoded) == sum(
        (1 if len(k) < 128 else 4) + (1 if len(v) < 128 else 4) + len(k) + len(v) for k, v in pairs.items()
    )


def test_four_byte_length_decoding_masks_only_the_high_bit() -> None:
    # 0x80000003: a 4-byte length of 3; 0x00 0x00 0x00 0x03 would be 1-byte 0 then garbage.
    assert decode_pairs(b"\x80\x00\x00\x03\x01abcZ") == {"abc": "Z"}


def test_non_ascii_bytes_map_to_latin_1() -> None:
    """PEP 3333: environ values are native strings holding bytes as latin-1 code points."""
    raw = bytes(range(256))
    encoded = b"\x02\x80\x00\x01\x00" + b"\xe9\xff" + raw
    assert decode_pairs(encoded) == {"\xe9\xff": raw.decode("latin-1")}
    assert encode_pairs({"\xe9\xff": raw.decode("latin-1")}) == encoded
    assert encode_pairs([(b"\xe9\xff", raw)]) == encoded


def test_repeated_name_keeps_the_last_value() -> None:
    assert decode_pairs(encode_pairs([("A", "1"), ("B", "2"), ("A", "3")])) == {"A": "3", "B": "2"}


def test_empty_pairs() -> None:
    assert encode_pairs({}) == b""
    assert decode_pairs(b"") == {}
    assert decode_pairs(b"\x00\x00") == {"": ""}


@pytest.mark.parametrize(
    "encoded",
    [
        b"\x05",  # cut before the value length
        b"\x80\x00",  # cut inside a 4-byte name length
        b"\x01\x80\x00\x00",  # cut inside a 4-byte value length
        b"\x05\x05abc",  # name and value run past the end
        b"\x01\x01ab\x02",  # a second pair cut short
        b"\xff\xff\xff\xff\x00",  # a 2 GiB name in a 5-byte stream
        b"\x00\xff\xff\xff\xff",  # a 2 GiB value
    ],
)
def test_truncated_or_impossible_pairs_are_remote_errors(encoded: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_pairs(encoded)


def test_oversized_name_is_refused_on_output() -> None:
    with pytest.raises(ValueError, match="longer than FastCGI allows"):
        records._length_prefix(0x80000000)
    assert records._length_prefix(0x7FFFFFFF) == b"\xff\xff\xff\xff"


names_or_values = st.one_of(st.binary(max_size=300), st.text(st.characters(max_codepoint=255), max_size=300))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names_or_values, names_or_values), max_size=10))
def test_pairs_round_trip(pairs: list[tuple[str | bytes, str | bytes]]) -> None:
    def native(text: str | bytes) -> str:
        return text.decode("latin-1") if isinstance(text, bytes) else text

    expected: dict[str, str] = {}
    for name, value in pairs:
        expected[native(name)] = native(value)
    assert decode_pairs(encode_pairs(pairs)) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_decoding_arbitrary_bytes_returns_or_raises_remote_error(garbage: bytes) -> None:
    try:
        decoded = decode_pairs(garbage)
    except RemoteProtocolError:
        return
    # what decodes must re-encode to a stream of the same pairs
    assert decode_pairs(encode_pairs(decoded)) == decoded
