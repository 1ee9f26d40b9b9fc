"""CGI responses: the one parser and the one formatter in the package.

A CGI response is header lines, a blank line, then the body. ``Status:`` sets the
status; without it, ``Location:`` means 302 and anything else 200 (RFC 3875 6.2).
Repeated headers are kept in order. ``\\n`` line ends are accepted as well as ``\\r\\n``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus

#: Bound on the header block of a response we parse.
MAX_HEAD_SIZE = 64 * 1024


class CGIResponseError(ValueError):
    """The bytes are not a valid CGI response head."""


_PHRASES = {int(status): status.phrase for status in HTTPStatus}


def reason_phrase(status: int) -> str:
    return _PHRASES.get(status, "")


def format_head(status: int | str, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The CGI head for ``status`` (``200`` or ``"200 OK"``) and byte header pairs.

    An explicit ``Status:`` line is always written: front ends disagree on the default.
    """
    if isinstance(status, int):
        status = f"{status} {reason_phrase(status)}".rstrip()
    parts = [b"Status: ", status.encode("latin-1"), b"\r\n"]
    count = 0
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
        count += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    if head.count(b"\n") != count + 2 or head.count(b"\r") != count + 2:
        raise ValueError("a response header name or value contains a line break")
    return head


@dataclass
class CGIHead:
    """The parsed head of a CGI response."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return default


def find_head_end(data: bytes | bytearray) -> tuple[int, int] | None:
    """``(end of head, start of body)`` if ``data`` holds a whole head, else None."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    candidates = [(pos, pos + 4) for pos in (crlf,) if pos >= 0] + [(pos, pos + 2) for pos in (lf,) if pos >= 0]
    if data.startswith(b"\r\n"):
        candidates.append((0, 2))
    elif data.startswith(b"\n"):
        candidates.append((0, 1))
    return min(candidates) if candidates else None


def parse_head(head: bytes) -> CGIHead:
    """Parse the header block (without the blank line) of a CGI response."""
    headers: list[tuple[str, str]] = []
    status_line: str | None = None
    for raw in head.decode("latin-1").replace("\r\n", "\n").split("\n"):
        if not raw:
            continue
        if raw[0] in " \t" and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {raw.strip()}")
            continue
        name, sep, value = raw.partition(":")
        if not sep or not name or name != name.strip():
            raise CGIResponseError(f"malformed header line {raw[:80]!r}")
        value = value.strip()
        if name.lower() == "status":
            status_line = value
        else:
            headers.append((name, value))
    if status_line is not None:
        status, reason = _parse_status(status_line)
    elif any(name.lower() == "location" for name, _ in headers):
        status, reason = 302, "Found"
    else:
        status, reason = 200, "OK"
    return CGIHead(status, reason, headers)


def _parse_status(text: str) -> tuple[int, str]:
    code, _, reason = text.partition(" ")
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 999:
        raise CGIResponseError(f"bad Status header {text[:80]!r}")
    return int(code), reason.strip() or reason_phrase(int(code))


def split_response(data: bytes) -> tuple[CGIHead, bytes]:
    """Split a whole CGI response into its parsed head and its body."""
    found = find_head_end(data)
    if found is None:
        raise CGIResponseError("no blank line between headers and body")
    end, body_start = found
    return parse_head(data[:end]), data[body_start:]


class HeadParser:
    """Incremental: feed response bytes until the head is complete."""

    def __init__(self, max_size: int = MAX_HEAD_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self.head: CGIHead | None = None

    def feed(self, data: bytes) -> bytes:
        """Take bytes; once the head is complete, returns the body bytes that followed it."""
        if self.head is not None:
            return data
        self._buffer += data
        found = find_head_end(self._buffer)
        if found is None:
            if len(self._buffer) > self._max_size:
                raise CGIResponseError(f"response head larger than {self._max_size} bytes")
            return b""
        end, body_start = found
        self.head = parse_head(bytes(self._buffer[:end]))
        rest = bytes(self._buffer[body_start:])
        self._buffer = bytearray()
        return rest
