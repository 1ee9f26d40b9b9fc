"""BlockingBody (``wsgi.input``) on its own: blocking reads, EOF, spooling, abort."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fcgibridge.server.body import BlockingBody
from fcgibridge.server.connection import ClientDisconnected

#: A spool threshold no test body here reaches (the tests of spooling pass their own).
MEMORY = 1024 * 1024


def full_body(chunks: list[bytes], threshold: int = MEMORY) -> BlockingBody:
    body = BlockingBody(threshold)
    for chunk in chunks:
        body.feed(chunk)
    body.end()
    return body


class Reader(threading.Thread):
    """Runs one read call in a thread, so a test can watch it block and wake."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            self.done.set()

    def finish(self, timeout: float = 5.0) -> object:
        assert self.done.wait(timeout), "the read did not return"
        self.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result


def started(call: Callable[[], object]) -> Reader:
    reader = Reader(call)
    reader.start()
    return reader


# ------------------------------------------------------------------------- reading


def test_read_n_crosses_chunks_and_stops_at_eof() -> None:
    body = full_body([b"abc", b"defg", b"h"])
    assert body.read(2) == b"ab"
    assert body.read(4) == b"cdef"
    assert body.read(10) == b"gh"
    assert body.read(10) == b""
    assert body.read(1) == b""


@pytest.mark.parametrize("size", [-1, None])
def test_read_without_size_reads_to_end(size: int | None) -> None:
    body = full_body([b"one ", b"two ", b"three"])
    assert body.read(1) == b"o"
    assert body.read(size) == b"ne two three"
    assert body.read(size) == b""


def test_read_zero_does_not_block() -> None:
    body = BlockingBody(MEMORY)
    assert body.read(0) == b""
    assert body.readline(0) == b""
    body.close()


def test_empty_body_is_eof_at_once() -> None:
    body = full_body([])
    assert body.read(5) == b""
    assert body.read() == b""
    assert body.readline() == b""
    assert body.readlines() == []
    assert list(body) == []


def test_readline_splits_and_joins_chunks() -> None:
    body = full_body([b"ab\ncd", b"ef\n\ng", b"hi"])
    assert body.readline() == b"ab\n"
    assert body.readline() == b"cdef\n"
    assert body.readline() == b"\n"
    assert body.readline() == b"ghi"
    assert body.readline() == b""


def test_readline_with_size_limit() -> None:
    body = full_body([b"abcdef\n", b"xy\n"])
    assert body.readline(4) == b"abcd"
    assert body.readline(4) == b"ef\n"
    assert body.readline(None) == b"xy\n"
    assert body.readline(3) == b""


def test_readlines_and_hint_and_iteration() -> None:
    assert full_body([b"a\nb", b"\nc"]).readlines() == [b"a\n", b"b\n", b"c"]
    body = full_body([b"aa\nbb\ncc\ndd\n"])
    assert body.readlines(4) == [b"aa\n", b"bb\n"]
    assert list(body) == [b"cc\n", b"dd\n"]
    assert body.readable()


def test_read_blocks_until_bytes_arrive() -> None:
    body = BlockingBody(MEMORY)
    reader = started(lambda: body.read(6))
    time.sleep(0.05)
    assert not reader.done.is_set()
    body.feed(b"abc")
    time.sleep(0.05)
    assert not reader.done.is_set(), "read(6) returned with only 3 bytes and no EOF"
    body.feed(b"defgh")
    assert reader.finish() == b"abcdef"
    body.end()
    assert body.read() == b"gh"


def test_read_returns_short_at_eof() -> None:
    body = BlockingBody(MEMORY)
    reader = started(lambda: body.read(100))
    body.feed(b"xyz")
    time.sleep(0.05)
    assert not reader.done.is_set()
    body.end()
    assert reader.finish() == b"xyz"


def test_readline_blocks_until_newline_or_eof() -> None:
    body = BlockingBody(MEMORY)
    reader = started(body.readline)
    body.feed(b"no newline yet")
    time.sleep(0.05)
    assert not reader.done.is_set()
    body.feed(b"...\nnext")
    assert reader.finish() == b"no newline yet...\n"
    body.end()
    assert body.readline() == b"next"


def test_empty_feed_is_not_eof() -> None:
    body = BlockingBody(MEMORY)
    reader = started(lambda: body.read(1))
    body.feed(b"")
    time.sleep(0.05)
    assert not reader.done.is_set()
    body.end()
    assert reader.finish() == b""


def test_bytes_fed_after_end_are_ignored() -> None:
    body = full_body([b"abc"])
    body.feed(b"late")
    assert body.read() == b"abc"


def test_complete_reports_end_of_body() -> None:
    body = BlockingBody(MEMORY)
    body.feed(b"x")
    assert not body.complete
    body.end()
    assert body.complete


# ------------------------------------------------------------------------ spooling


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_small_body_stays_in_memory() -> None:
    body = full_body([b"a" * 100, b"b" * 100], threshold=200)
    assert not body.spooled
    assert body.buffered == 200
    assert body.read() == b"a" * 100 + b"b" * 100
    body.close()


def test_body_past_threshold_spools_and_reads_back_exactly() -> None:
    data = os.urandom(300_000)
    body = BlockingBody(1000)
    for i in range(0, len(data), 7000):
        body.feed(data[i : i + 7000])
        assert body.buffered <= 1000
    body.end()
    assert body.spooled
    assert body.buffered <= 1000
    got = bytearray()
    while chunk := body.read(12_345):
        got += chunk
        assert body.buffered <= 1000 + 64 * 1024
    assert bytes(got) == data
    body.close()


def test_readline_over_spooled_body() -> None:
    lines = [b"line %d\n" % i for i in range(5000)]
    body = full_body([b"".join(lines[i : i + 7]) for i in range(0, len(lines), 7)], threshold=100)
    assert body.spooled
    assert list(body) == lines
    body.close()


def test_memory_and_spool_parts_keep_their_order() -> None:
    body = BlockingBody(10)
    body.feed(b"0123456789")  # exactly the threshold: memory
    assert not body.spooled
    body.feed(b"abc")  # past it: the spool file
    assert body.spooled
    assert body.read(4) == b"0123"
    body.feed(b"def")
    body.end()
    assert body.read() == b"456789abcdef"
    body.close()


def test_threshold_zero_spools_everything() -> None:
    body = full_body([b"x"], threshold=0)
    assert body.spooled
    assert body.buffered == 0
    assert body.read(1) == b"x"
    body.close()


def test_spool_file_is_anonymous_and_closed_with_the_body() -> None:
    before = open_fds()
    body = full_body([b"x" * 5000], threshold=10)
    assert body.spooled
    assert open_fds() == before + 1
    target = os.readlink(f"/proc/self/fd/{body._fd}")
    assert target.endswith("(deleted)")
    body.close()
    assert not body.spooled
    assert open_fds() == before


def test_large_readline_is_linear() -> None:
    # 2 MiB of 20-byte lines in one piece: reading it line by line must not copy the
    # rest of the piece for every line (that would take minutes).
    data = b"0123456789abcdefghi\n" * (100 * 1024)
    body = full_body([data], threshold=4 * 1024 * 1024)
    start = time.monotonic()
    count = sum(1 for _ in body)
    assert count == 100 * 1024
    assert time.monotonic() - start < 5


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=40), max_size=12),
    threshold=st.integers(0, 60),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("read"), st.integers(-1, 30)),
            st.tuples(st.just("readline"), st.integers(-1, 30)),
            st.tuples(st.just("readlines"), st.integers(-1, 30)),
        ),
        max_size=12,
    ),
)
def test_reads_match_a_file(chunks: list[bytes], threshold: int, ops: list[tuple[str, int]]) -> None:
    data = b"".join(chunks)
    body = full_body(chunks, threshold)
    reference = io.BytesIO(data)
    for name, arg in ops:
        assert getattr(body, name)(arg) == getattr(reference, name)(arg), (name, arg)
    assert body.read() == reference.read()
    body.close()


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.tuples(st.binary(max_size=50), st.integers(0, 60)), max_size=10),
    threshold=st.integers(0, 80),
)
def test_interleaved_feeding_and_reading(steps: list[tuple[bytes, int]], threshold: int) -> None:
    """Feed, read what is there, feed more: memory and spool file never reorder bytes,
    and memory never holds more than the threshold plus one spool block."""
    body = BlockingBody(threshold)
    fed = bytearray()
    got = bytearray()
    for chunk, want in steps:
        body.feed(chunk)
        fed += chunk
        assert body.buffered <= max(threshold, 64 * 1024)
        available = len(fed) - len(got)
        got += body.read(min(want, available))
    body.end()
    got += body.read()
    assert bytes(got) == bytes(fed)
    body.close()


# --------------------------------------------------------------------------- abort


def test_read_after_close_raises() -> None:
    body = full_body([b"abc"])
    body.close()
    with pytest.raises(ClientDisconnected):
        body.read(1)
    with pytest.raises(ClientDisconnected):
        body.readline()


@pytest.mark.parametrize("method", ["read", "readline", "readlines", "iterate"])
def test_abort_wakes_a_blocked_reader(method: str) -> None:
    body = BlockingBody(10)
    body.feed(b"a" * 50)  # spooled
    calls: dict[str, Callable[[], object]] = {
        "read": lambda: body.read(1000),
        "readline": body.readline,
        "readlines": body.readlines,
        "iterate": lambda: list(body),
    }
    reader = started(calls[method])
    time.sleep(0.05)
    assert not reader.done.is_set()
    body.abort()
    with pytest.raises(ClientDisconnected):
        reader.finish()
    body.feed(b"more")  # ignored, no error
    body.end()
