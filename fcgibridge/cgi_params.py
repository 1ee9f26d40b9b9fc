"""HTTP request → CGI params the way nginx's ``fastcgi_params`` does it, for the front
ends that stand between an HTTP client and a FastCGI backend: the proxy apps
(:mod:`fcgibridge.proxy`) and the httpx transports (:mod:`fcgibridge.httpx`).

:class:`ParamsMapper` decides which script runs (a front controller, or the path split
at the script as ``fastcgi_split_path_info`` does) and fills in the server and client
variables; :func:`spool` and :func:`aspool` turn a body of unknown length into a file
of known length, since PHP reads no body without CONTENT_LENGTH.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO

from .client import build_params

#: nginx's usual ``fastcgi_split_path_info``: the script is the path up to ``.php``.
PHP_SPLIT = r"^(.+?\.php)(/.*)?$"

#: A request body of unknown length (chunked) is spooled, in memory up to this size and
#: on disk beyond, so that the backend gets CONTENT_LENGTH: PHP reads no body without it.
SPOOL_MEMORY = 1024 * 1024

#: Headers that belong to one HTTP hop and are not passed on.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade"})


class ParamsMapper:
    """The CGI params of HTTP requests for one backend's scripts.

    ``document_root`` is where the backend finds the scripts; ``script_filename`` fixes
    the script (relative to the root, or absolute) for a front-controller app; otherwise
    the path is split by ``split_path_info`` (default :data:`PHP_SPLIT`) and a path
    ending in ``/`` gets ``index``. ``params`` are added to (and override) every
    request's variables. ``root_option`` is what the caller calls the document root, for
    the error message.
    """

    def __init__(self, document_root: str | None, script_filename: str | None, split_path_info: str | None,
                 index: str, params: Mapping[str, str] | None, *, root_option: str = "document_root") -> None:
        if document_root is None and (script_filename is None or not os.path.isabs(script_filename)):
            raise ValueError(f"give {root_option}, or script_filename as an absolute path")
        self.root = None if document_root is None else document_root.rstrip("/") or "/"
        self.script_filename = script_filename
        try:
            self.split = re.compile(split_path_info or PHP_SPLIT)
        except re.error as exc:
            raise ValueError(f"split_path_info {split_path_info!r} is not a regular expression: {exc}") from None
        self.index = index
        self.params = dict(params or {})

    def script(self, mount: str, path: str) -> tuple[str, str, str]:
        """SCRIPT_NAME, PATH_INFO and SCRIPT_FILENAME for ``path`` under the mount point."""
        root = self.root or ""
        if self.script_filename is not None:  # a front controller answers every path
            filename = self.script_filename
            if not os.path.isabs(filename):
                filename = f"{root.rstrip('/')}/{filename}"
            return f"{mount}/{os.path.basename(filename)}", path, filename
        if path.endswith("/"):
            path += self.index
        match = self.split.match(path)
        script, info = (match.group(1), match.group(2) or "") if match else (path, "")
        return mount + script, info, f"{root.rstrip('/')}{script}"

    def build(self, *, method: str, mount: str, path: str, query: str, headers: Iterable[tuple[str, str]],
              remote: tuple[str, int] | None, server: tuple[str, int | None] | None, https: bool,
              request_uri: str | None = None) -> dict[str, str]:
        """The params of one request: ``path`` (decoded, below ``mount``) and ``query``;
        ``headers`` as received (the hop-by-hop ones are dropped); the client's and the
        server's address; ``https`` for HTTPS=on. ``request_uri`` is the target as
        sent, when the caller has it undecoded (default: mount + path + query)."""
        kept = [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]
        target = mount + path + ("?" + query if query else "")
        params = build_params(method, target, headers=kept)
        if request_uri is not None:
            params["REQUEST_URI"] = request_uri
        script_name, path_info, filename = self.script(mount, path)
        params.update(SCRIPT_NAME=script_name, PATH_INFO=path_info, SCRIPT_FILENAME=filename)
        if path_info and self.root:
            params["PATH_TRANSLATED"] = self.root + path_info
        if self.root:
            params["DOCUMENT_ROOT"] = self.root
        if remote:
            params["REMOTE_ADDR"], params["REMOTE_PORT"] = remote[0], str(remote[1])
        if server:
            params["SERVER_ADDR"] = server[0]
            params["SERVER_PORT"] = str(server[1] or (443 if https else 80))
        if https:
            params["HTTPS"] = "on"
            params["REQUEST_SCHEME"] = "https"
        else:
            params["REQUEST_SCHEME"] = "http"
        params.update(self.params)
        return params


def spool(chunks: Iterable[bytes]) -> tuple[IO[bytes], int]:
    """``chunks`` written to a temporary file (in memory up to :data:`SPOOL_MEMORY`),
    rewound, and its length; the caller closes it."""
    with _spooling() as spooled:
        for chunk in chunks:
            spooled.write(chunk)
    return spooled, _rewind(spooled)


async def aspool(chunks: AsyncIterable[bytes]) -> tuple[IO[bytes], int]:
    """:func:`spool` for an async iterable."""
    with _spooling() as spooled:
        async for chunk in chunks:
            spooled.write(chunk)
    return spooled, _rewind(spooled)


@contextmanager
def _spooling() -> Iterator[IO[bytes]]:
    """A new spool file, closed if filling it fails."""
    spooled = tempfile.SpooledTemporaryFile(SPOOL_MEMORY)  # noqa: SIM115 (the caller closes it)
    try:
        yield spooled
    except BaseException:
        spooled.close()
        raise


def _rewind(spooled: IO[bytes]) -> int:
    """The length written, the file rewound to be read."""
    length = spooled.tell()
    spooled.seek(0)
    return length


__all__ = ["HOP_BY_HOP", "PHP_SPLIT", "SPOOL_MEMORY", "ParamsMapper", "aspool", "spool"]
