"""Hypothesis strategies for the fallback engine: bytes shaped like FastCGI records
(mostly version 1, small request ids, known types), seeds with a few bytes changed,
and plain bytes."""

from __future__ import annotations

from hypothesis import strategies as st


def raw_record(version: int, rtype: int, request_id: int, content: bytes, padding: int) -> bytes:
    header = bytes((version, rtype, request_id >> 8, request_id & 0xFF, len(content) >> 8, len(content) & 0xFF,
                    padding, 0))
    return header + content + bytes(padding)


def splice(seed: bytes, at: int, cut: int, insert: bytes) -> bytes:
    at %= len(seed) + 1
    return seed[:at] + insert + seed[at + cut :]


def inputs(corpus: list[bytes]) -> st.SearchStrategy[bytes]:
    record = st.builds(
        raw_record,
        version=st.just(1) | st.integers(0, 255),
        rtype=st.integers(1, 11) | st.integers(0, 255),
        request_id=st.integers(0, 3) | st.integers(0, 0xFFFF),
        content=st.binary(max_size=40) | st.sampled_from([b"", bytes(8), b"\x01\x00\x01\x00\x00\x00\x00\x00"]),
        padding=st.integers(0, 7) | st.integers(0, 255),
    )
    streams = st.tuples(st.binary(min_size=2, max_size=2), st.lists(record, max_size=16)).map(
        lambda t: t[0] + b"".join(t[1])
    )
    choices = [streams, st.binary(max_size=600)]
    if corpus:
        mutated = st.builds(splice, st.sampled_from(corpus), st.integers(0, 1 << 16), st.integers(0, 8),
                            st.binary(max_size=12))
        choices += [mutated, st.sampled_from(corpus)]
    return st.one_of(choices)
