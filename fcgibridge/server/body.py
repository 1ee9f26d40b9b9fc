"""``wsgi.input``: the request body as it arrives, readable from the app's thread.

The event loop feeds STDIN records in; the app thread reads, blocking until bytes or
the end arrive. Unread bytes stay in memory up to a threshold; past it the rest spools
to an anonymous temporary file, so a large upload never sits whole in memory and a
slow app never stalls the connection.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator

from .connection import ClientDisconnected


class BlockingBody:
    """A file-like, read-only request body (PEP 3333 ``wsgi.input``)."""

    def __init__(self, spool_threshold: int = 1024 * 1024) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes] = deque()  # unread, in memory, oldest first
        self._buffered = 0
        self._threshold = spool_threshold
        self._fd = -1  # spool file; holds everything fed after spooling began
        self._spool_write = 0
        self._spool_read = 0
        self._eof = False
        self._gone = False

    # ----------------------------------------------------------- event loop side

    def feed(self, data: bytes) -> None:
        with self._cond:
            if self._gone:
                return
            if self._fd >= 0 or self._buffered + len(data) > self._threshold:
                self._spool(data)
            else:
                self._chunks.append(data)
                self._buffered += len(data)
            self._cond.notify_all()

    def _spool(self, data: bytes) -> None:
        if self._fd < 0:
            self._fd, path = tempfile.mkstemp(prefix="fcgibridge-body-")
            os.unlink(path)
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._spool_write)
            self._spool_write += written
            view = view[written:]

    def end(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def close(self) -> None:
        """Drop the body (request over, aborted, or connection lost); later reads fail."""
        with self._cond:
            fd, self._fd = self._fd, -1
            self._gone = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()
        if fd >= 0:
            os.close(fd)

    abort = close

    @property
    def spooled(self) -> bool:
        return self._fd >= 0

    # ------------------------------------------------------------------ app side

    def _take(self, size: int) -> bytes:
        """Up to ``size`` bytes (``-1``: whatever is there), blocking until some arrive;
        ``b""`` only at the end of the body."""
        with self._cond:
            while True:
                if self._gone:
                    raise ClientDisconnected("the request was aborted or its connection closed")
                if self._chunks:
                    chunk = self._chunks.popleft()
                    if 0 <= size < len(chunk):
                        self._chunks.appendleft(chunk[size:])
                        chunk = chunk[:size]
                    self._buffered -= len(chunk)
                    return chunk
                if self._spool_read < self._spool_write:
                    want = self._spool_write - self._spool_read
                    want = min(want, size) if size >= 0 else want
                    chunk = os.pread(self._fd, min(want, 1024 * 1024), self._spool_read)
                    self._spool_read += len(chunk)
                    return chunk
                if self._eof:
                    return b""
                self._cond.wait()

    def _unread(self, data: bytes) -> None:
        if data:
            with self._cond:
                self._chunks.appendleft(data)
                self._buffered += len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self._take(-1):
                parts.append(chunk)
            return b"".join(parts)
        parts, remaining = [], size
        while remaining > 0:
            chunk = self._take(remaining)
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        parts: list[bytes] = []
        total = 0
        while limit < 0 or total < limit:
            chunk = self._take(-1 if limit < 0 else limit - total)
            if not chunk:
                break
            newline = chunk.find(b"\n")
            if newline >= 0:
                self._unread(chunk[newline + 1 :])
                parts.append(chunk[: newline + 1])
                break
            parts.append(chunk)
            total += len(chunk)
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def readable(self) -> bool:
        return True
