"""Measure the client against a PHP-FPM started for the purpose (needs php-fpm installed).

    python examples/php_proxy/measure_client.py

Prints: requests per second for a small PHP script with a new connection per request
and with keep-alive; the Python heap peak while streaming a 256 MiB PHP response
(``stream()``) against reading a 32 MiB one whole (``request()``).
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from phpfpm import php_fpm  # noqa: E402

from fcgibridge.client import FastCGIClient  # noqa: E402

N = 2000


def rate(client: FastCGIClient) -> float:
    start = time.perf_counter()
    for _ in range(N):
        assert client.request("GET", "/status.php?code=200").status == 200
    return N / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, php_fpm(Path(tmp)) as fpm:
        root = str(fpm.root)
        print(f"new connection per request: {rate(FastCGIClient(fpm.unix, root=root)):7.0f} req/s")
        with FastCGIClient(fpm.unix, root=root, keep_alive=True) as client:
            print(f"keep-alive:                 {rate(client):7.0f} req/s")
        tracemalloc.start()
        total = 0
        with FastCGIClient(fpm.unix, root=root).stream("GET", "/big.php?mb=256") as response:
            for chunk in response.iter_bytes():
                total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
        print(f"stream() of {total >> 20} MiB:   heap peak {peak / 2**20:6.2f} MiB")
        tracemalloc.reset_peak()
        body = FastCGIClient(fpm.unix, root=root).request("GET", "/big.php?mb=32").body
        peak = tracemalloc.get_traced_memory()[1]
        print(f"request() of {len(body) >> 20} MiB:   heap peak {peak / 2**20:6.2f} MiB")


if __name__ == "__main__":
    main()
