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


class BadAppResponse(ValueError):
    """An app's response breaks the rules of its interface (PEP 3333, the ASGI spec): a
    body that is not bytes, a status outside 100-599, headers that are not name-value
    pairs of the right type. Raised where the app hands the value over, so the app sees
    it; the server logs its message, one line naming the mistake (a traceback would end
    in the server, not where the app made it), and answers 500 or cuts the response."""


#: The status codes an app may answer with, WSGI or ASGI (RFC 9110 section 15: three
#: digits, 100 to 599). A web server takes nothing else from a ``Status:`` line.
MIN_STATUS = 100
MAX_STATUS = 599


def status_in_range(code: int) -> bool:
    """The one rule for an app's status code, for both adapters."""
    return MIN_STATUS <= code <= MAX_STATUS


def body_bytes(chunk: object, what: str) -> bytes:
    """A piece of an app's response body as bytes: bytes as they are; a bytearray or a
    memoryview copied (harmless, and the app may reuse its buffer once it has handed it
    over, while the bytes may still wait to be sent); anything else (a str) is the app's
    mistake: :class:`BadAppResponse` "<what> str, not bytes"."""
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise BadAppResponse(f"{what} {type(chunk).__name__}, not bytes")


_PHRASES = {int(status): status.phrase for status in HTTPStatus}


def reason_phrase(status: int) -> str:
    return _PHRASES.get(status, "")


#: ``200`` -> ``b"Status: 200 OK\r\n"``, for every status with a reason phrase.
_STATUS_LINES = {status: f"Status: {status} {phrase}\r\n".encode("latin-1") for status, phrase in _PHRASES.items()}


def format_head(status: int | str, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The CGI head for ``status`` (``200`` or ``"200 OK"``) and byte header pairs.

    An explicit ``Status:`` line is always written: front ends disagree on the default.
    """
    line = _STATUS_LINES.get(status) if isinstance(status, int) else None
    if line is None:
        if isinstance(status, int):
            status = f"{status} {reason_phrase(status)}".rstrip()
        line = b"Status: " + status.encode("latin-1") + b"\r\n"
    parts = [line]
    count = 0
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
        count += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    if head.count(b"\n") != count + 2 or head.count(b"\r") != count + 2:
        raise ValueError("a response header name or value contains a line break")
    return head


_PLAIN_TEXT = ((b"Content-Type", b"text/plain; charset=utf-8"),)


def error_response(status: int, message: str | None = None) -> bytes:
    """A whole plain-text error response: the head and ``message`` (the reason phrase
    by default) on one line. The one spelling of the package's own 4xx/5xx answers."""
    text = reason_phrase(status) if message is None else message
    return format_head(status, _PLAIN_TEXT) + text.encode() + b"\n"


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
    """``(end of head, start of body)`` if ``data`` holds a whole head, else None.

    The head ends at the first blank line, ``\\r\\n\\r\\n`` or ``\\n\\n``; a response that
    starts with a line end has an empty head.
    """
    if data[:1] == b"\n":
        return 0, 1
    if data[:2] == b"\r\n":
        return 0, 2
    crlf = data.find(b"\r\n\r\n")
    # An LF-only blank line ends the head only if it comes first: look no further.
    lf = data.find(b"\n\n", 0, crlf if crlf >= 0 else len(data))
    if lf >= 0:
        return lf, lf + 2
    return (crlf, crlf + 4) if crlf >= 0 else None


def head_size(data: bytes | bytearray) -> int | None:
    """How many bytes at the start of ``data`` are the CGI head, its blank line
    included; None while the head is not complete in ``data``."""
    found = find_head_end(data)
    return None if found is None else found[1]


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
    else:
        status = _implied_status(any(name.lower() == "location" for name, _ in headers))
        reason = reason_phrase(status)
    return CGIHead(status, reason, headers)


def _implied_status(has_location: bool) -> int:
    """The status of a head without ``Status:`` (RFC 3875 6.2.3 and 6.2.1)."""
    return 302 if has_location else 200


def summarize_head(data: bytes | bytearray) -> tuple[int | None, dict[str, str]]:
    """The status and the headers of a response head, for logging: cheap and lenient.

    ``data`` is the start of a response (the head may be cut short, and body bytes may
    follow it). Header names are lower-cased and the first value of a name wins; lines
    that are not headers are skipped, a bad ``Status:`` counts as none, and nothing
    raises. The status is None when ``data`` is empty (no response was sent at all).
    """
    if not data:
        return None, {}
    found = find_head_end(data)
    text = (data if found is None else data[: found[0]]).decode("latin-1")
    headers: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers.setdefault(name.strip().lower(), value.strip())
    code = headers.get("status", "")[:3]
    if code.isascii() and code.isdigit():
        return int(code), headers
    return _implied_status("location" in headers), headers


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
