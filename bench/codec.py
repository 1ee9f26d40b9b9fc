"""The protocol core alone: how fast it parses records and decodes params, no I/O.

    python bench/codec.py            # the build that is installed (see the first line)

Three numbers, each the best of several timed runs:

- STDIN records parsed: a 16 MiB request body in 64 KiB records, fed to
  ``RecordReader.feed_raw`` in 256 KiB reads (what one socket read brings), in GB/s;
- STDOUT framed: a 64 KiB response body as STDOUT records (``stream_parts``, what the
  server writes with ``writelines``), in GB/s;
- params decoded: the 31 CGI variables nginx's ``fastcgi_params`` sends for a GET
  (with a browser's headers), ``decode_pairs``, in µs per request.

The targets (the project's performance issue): records at >= 1 GB/s, the params in <= 5 µs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import fcgibridge
from fcgibridge.protocol import records
from fcgibridge.protocol.constants import RecordType

#: What nginx sends with ``include fastcgi_params`` for a browser's GET.
NGINX_PARAMS = {
    "QUERY_STRING": "page=2&sort=name", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "SCRIPT_NAME": "/app/items", "REQUEST_URI": "/app/items?page=2&sort=name", "DOCUMENT_URI": "/app/items",
    "DOCUMENT_ROOT": "/usr/share/nginx/html", "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "https",
    "HTTPS": "on", "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "nginx/1.22.1",
    "REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "51234", "REMOTE_USER": "", "SERVER_ADDR": "192.0.2.1",
    "SERVER_PORT": "443", "SERVER_NAME": "example.com", "REDIRECT_STATUS": "200",
    "HTTP_HOST": "example.com",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.5", "HTTP_ACCEPT_ENCODING": "gzip, deflate, br",
    "HTTP_CONNECTION": "keep-alive", "HTTP_COOKIE": "session=8c1f2e0a9b7d4c3e; theme=dark",
    "HTTP_UPGRADE_INSECURE_REQUESTS": "1", "HTTP_SEC_FETCH_DEST": "document", "HTTP_SEC_FETCH_MODE": "navigate",
    "HTTP_SEC_FETCH_SITE": "none",
}


def best(run: Callable[[], None], repeat: int = 7) -> float:
    """The shortest of ``repeat`` timed runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def records_parsed() -> float:
    body = bytes(range(256)) * 256  # 64 KiB
    piece = records.pack_stream(RecordType.STDIN, 1, body[: records.CHUNK])
    stream = piece * (16 * 1024 * 1024 // len(piece))
    reads = [stream[i : i + 256 * 1024] for i in range(0, len(stream), 256 * 1024)]

    def parse() -> None:
        reader = records.RecordReader()
        for data in reads:
            reader.feed_raw(data)

    return len(stream) / best(parse) / 1e9


def stdout_framed() -> float:
    body = bytes(range(256)) * 256
    rounds = 2000

    def frame() -> None:
        for _ in range(rounds):
            records.stream_parts(RecordType.STDOUT, 1, body)

    return len(body) * rounds / best(frame) / 1e9


def params_decoded() -> float:
    encoded = records.encode_pairs(NGINX_PARAMS)
    rounds = 20000

    def decode() -> None:
        for _ in range(rounds):
            records.decode_pairs(encoded)

    assert records.decode_pairs(encoded) == NGINX_PARAMS
    return best(decode) / rounds * 1e6


def main() -> int:
    print(f"fcgibridge {fcgibridge.__version__} ({fcgibridge.build()}), Python {sys.version.split()[0]}")
    print(f"STDIN records parsed: {records_parsed():.2f} GB/s (target >= 1)")
    print(f"STDOUT framed: {stdout_framed():.2f} GB/s")
    print(f"{len(NGINX_PARAMS)} params decoded: {params_decoded():.2f} µs (target <= 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
