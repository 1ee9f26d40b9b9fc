"""``wsgi.input``: the request body as it arrives, readable from the app's thread.

The event loop feeds STDIN records in; the app thread reads, blocking until bytes or
the end arrive. Unread bytes stay in memory up to a threshold; past it the rest spools
to an anonymous temporary file, so a large upload never sits whole in memory and a
slow app never stalls the connection.

Reading never copies what it does not return: the block being read is kept with an
offset into it, so ``readline`` over a body of short lines stays linear.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from collections.abc import Iterator

from .connection import ClientDisconnected
from .threadpool import Condition

#: Bytes read from the spool file at a time for ``readline`` and small reads.
SPOOL_BLOCK = 64 * 1024

#: Largest single read from the spool file.
MAX_SPOOL_READ = 1024 * 1024


class BlockingBody:
    """A file-like, read-only request body (PEP 3333 ``wsgi.input``)."""

    def __init__(self, spool_threshold: int) -> None:
        """``spool_threshold``: unread bytes held in memory before the rest spools to a
        temporary file (``Config.spool_threshold``, passed down by the WSGI adapter)."""
        self._cond = Condition()
        self._chunks: deque[bytes] = deque()  # unread, in memory, oldest first
        self._block = b""  # the block being read (from _chunks or the spool file)
        self._pos = 0  # bytes of _block already read
        self._buffered = 0  # unread bytes in memory: _chunks and the rest of _block
        self._threshold = spool_threshold
        self._fd = -1  # spool file; holds everything fed after spooling began
        self._spool_write = 0
        self._spool_read = 0
        self._eof = False
        self._gone = False
        #: ``perf_counter()`` when the last byte came (0 until then): how long the app
        #: took is counted from here, not from while it waited for the web server.
        self.ended_at = 0.0

    # ----------------------------------------------------------- event loop side

    def feed(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            if self._gone or self._eof:
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
            self.ended_at = time.perf_counter()
            self._cond.notify_all()

    def close(self) -> None:
        """Drop the body (request over, aborted, or connection lost); later reads fail."""
        with self._cond:
            fd, self._fd = self._fd, -1
            self._gone = True
            self._chunks.clear()
            self._block, self._pos = b"", 0
            self._buffered = 0
            self._cond.notify_all()
        if fd >= 0:
            os.close(fd)

    def abort(self) -> None:
        """The request is gone: the same as :meth:`close`."""
        self.close()

    @property
    def spooled(self) -> bool:
        """True once part of the body went to the temporary file."""
        return self._fd >= 0

    @property
    def buffered(self) -> int:
        """Unread bytes held in memory (the rest, if any, waits in the spool file)."""
        return self._buffered

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived (read or not)."""
        return self._eof

    # ------------------------------------------------------------------ app side

    def _take(self, size: int, line: bool = False) -> bytes:
        """Up to ``size`` bytes (``-1``: whatever is at hand), stopping after a newline
        if ``line``; blocks until some arrive; ``b""`` only at the end of the body."""
        with self._cond:
            while True:
                if self._gone:
                    raise ClientDisconnected("the request was aborted or its connection closed")
                block, pos = self._block, self._pos
                if pos < len(block):
                    end = len(block) if size < 0 else min(len(block), pos + size)
                    if line:
                        newline = block.find(b"\n", pos, end)
                        if newline >= 0:
                            end = newline + 1
                    chunk = block if pos == 0 and end == len(block) else block[pos:end]
                    if end == len(block):
                        self._block, self._pos = b"", 0
                    else:
                        self._pos = end
                    self._buffered -= len(chunk)
                    return chunk
                if self._chunks:
                    self._block, self._pos = self._chunks.popleft(), 0
                    continue
                waiting = self._spool_write - self._spool_read
                if waiting:
                    if size >= 0 and not line and size >= SPOOL_BLOCK:
                        # A large read: straight from the file to the caller.
                        return self._pread(min(waiting, size, MAX_SPOOL_READ))
                    self._block, self._pos = self._pread(min(waiting, SPOOL_BLOCK)), 0
                    self._buffered += len(self._block)
                    continue
                if self._eof:
                    return b""
                self._cond.wait()

    def _pread(self, size: int) -> bytes:
        chunk = os.pread(self._fd, size, self._spool_read)
        if not chunk:  # cannot happen unless the file was truncated behind our back
            raise OSError("the request body spool file is shorter than expected")
        self._spool_read += len(chunk)
        if self._spool_read == self._spool_write:
            # Caught up: reuse the file from its start, so it holds only the backlog.
            self._spool_read = self._spool_write = 0
        return chunk

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
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None or size < 0 else size
        parts: list[bytes] = []
        total = 0
        while limit < 0 or total < limit:
            chunk = self._take(-1 if limit < 0 else limit - total, line=True)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if chunk.endswith(b"\n"):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

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
