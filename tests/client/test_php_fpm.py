"""The client against a real PHP-FPM, started by the tests (see phpfpm.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from phpfpm import PhpFpm, php_fpm

from fcgibridge.cli import main
from fcgibridge.client import (
    AsyncFastCGIClient,
    ConnectError,
    ConnectionClosed,
    FastCGIClient,
    RequestTimeout,
)


@pytest.fixture(scope="module")
def fpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhpFpm]:
    with php_fpm(tmp_path_factory.mktemp("fpm")) as running:
        yield running


@pytest.fixture(params=["unix", "tcp"])
def address(request: pytest.FixtureRequest, fpm: PhpFpm) -> str:
    return str(getattr(fpm, request.param))


def test_three_lines(fpm: PhpFpm) -> None:
    client = FastCGIClient(fpm.unix, root=str(fpm.root))
    response = client.request("GET", "/info.php?page=2")
    assert json.loads(response.body)["query"] == {"page": "2"}


def test_get(address: str, fpm: PhpFpm) -> None:
    response = FastCGIClient(address, root=str(fpm.root)).request(
        "GET", "/info.php?a=1&b=x%20y", headers={"X-Token": "tok"})
    assert (response.status, response.reason) == (200, "OK")
    assert response.headers.get("content-type") == "application/json"
    assert response.headers.get_all("X-Repeat") == ["one", "two"]
    info = json.loads(response.body)
    assert info["method"] == "GET" and info["query"] == {"a": "1", "b": "x y"}
    assert info["script"] == fpm.script("info.php") and info["token"] == "tok"
    assert (response.app_status, response.protocol_status) == (0, 0)


def test_post_form(fpm: PhpFpm) -> None:
    response = FastCGIClient(fpm.unix, root=str(fpm.root)).request(
        "POST", "/info.php", body=b"name=Ada+Lovelace&lang=php",
        headers=[("Content-Type", "application/x-www-form-urlencoded")])
    info = json.loads(response.body)
    assert info["post"] == {"name": "Ada Lovelace", "lang": "php"}
    assert info["content_type"] == "application/x-www-form-urlencoded"


def test_ten_mib_upload_streamed_from_a_file(fpm: PhpFpm, tmp_path: Path) -> None:
    data = hashlib.sha256(b"seed").digest() * (10 * 1024 * 1024 // 32)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    with path.open("rb") as body:
        response = FastCGIClient(fpm.tcp, root=str(fpm.root), timeout=20).request(
            "PUT", "/info.php", body=body, headers={"Content-Type": "application/octet-stream"})
    info = json.loads(response.body)
    assert info["length"] == len(data) == 10 * 1024 * 1024
    assert info["sha256"] == hashlib.sha256(data).hexdigest()


def test_large_response(fpm: PhpFpm) -> None:
    response = FastCGIClient(fpm.unix, root=str(fpm.root)).request("GET", "/big.php?mb=16")
    assert len(response.body) == 16 * 1024 * 1024
    assert response.body == b"0123456789abcdef" * (1024 * 1024)


def test_large_response_streamed_in_bounded_memory(fpm: PhpFpm) -> None:
    total = largest = 0
    with FastCGIClient(fpm.unix, root=str(fpm.root)).stream("GET", "/big.php?mb=32") as response:
        for chunk in response.iter_bytes():
            total += len(chunk)
            largest = max(largest, len(chunk))
    assert total == 32 * 1024 * 1024
    assert largest <= 256 * 1024


def test_streamed_response_with_flush(fpm: PhpFpm) -> None:
    start = time.monotonic()
    with FastCGIClient(fpm.unix, root=str(fpm.root)).stream("GET", "/stream.php?ms=700") as response:
        assert response.headers.get("x-accel-buffering") == "no"
        chunks = response.iter_bytes()
        assert next(chunks) == b"first part\n"
        first_at = time.monotonic() - start
        assert b"".join(chunks) == b"second part\n"
        last_at = time.monotonic() - start
    assert first_at < 0.6 and last_at >= 0.7  # the first part came before PHP's usleep ended


def test_stderr_capture(fpm: PhpFpm) -> None:
    response = FastCGIClient(fpm.unix, root=str(fpm.root)).request("GET", "/stderr.php")
    assert response.body == b"logged"
    assert b"fcgibridge test: something to log" in response.stderr


@pytest.mark.parametrize(("query", "status", "location"), [
    ("code=201", 201, None),
    ("code=404", 404, None),
    ("code=500", 500, None),
    ("to=/elsewhere", 302, "/elsewhere"),
])
def test_status_and_location(fpm: PhpFpm, query: str, status: int, location: str | None) -> None:
    response = FastCGIClient(fpm.unix, root=str(fpm.root)).request("GET", f"/status.php?{query}")
    assert response.status == status
    assert response.headers.get("location") == location


def test_missing_script_is_php_fpms_404(fpm: PhpFpm) -> None:
    response = FastCGIClient(fpm.unix, root=str(fpm.root)).request("GET", "/nope.php")
    assert response.status == 404
    assert b"Primary script unknown" in response.stderr


def test_keep_alive_reuse_counts(address: str, fpm: PhpFpm) -> None:
    with FastCGIClient(address, root=str(fpm.root), keep_alive=True) as client:
        responses = [client.request("GET", "/info.php") for _ in range(4)]
        assert [r.reuse_count for r in responses] == [0, 1, 2, 3]
        assert len({json.loads(r.body)["pid"] for r in responses}) == 1  # one connection, one worker
        with client.stream("GET", "/big.php?mb=1") as streamed:
            assert streamed.reuse_count == 4
            streamed.read()
        assert client.request("GET", "/info.php").reuse_count == 5


def test_read_timeout_against_a_sleeping_script(fpm: PhpFpm) -> None:
    client = FastCGIClient(fpm.unix, root=str(fpm.root), timeout=0.5)
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match=fpm.unix), client.stream("GET", "/sleep.php?s=1.2") as response:
        assert next(response.iter_bytes()) == b"before\n"
        response.read()
    assert time.monotonic() - start < 2


def test_get_values(fpm: PhpFpm) -> None:
    assert FastCGIClient(fpm.tcp).get_values() == {"FCGI_MPXS_CONNS": "0"}


def test_async_client_does_not_multiplex_php_fpm(fpm: PhpFpm) -> None:
    async def scenario() -> None:
        async with AsyncFastCGIClient(fpm.unix, root=str(fpm.root), keep_alive=True) as client:
            responses = await asyncio.gather(*(client.request("GET", "/info.php") for _ in range(3)))
            assert client.multiplex is False
            assert len({json.loads(r.body)["pid"] for r in responses}) == 3  # three connections, in parallel
            async with client.stream("GET", "/stream.php?ms=100") as streamed:
                assert [c async for c in streamed.aiter_bytes()] == [b"first part\n", b"second part\n"]

    asyncio.run(scenario())


def test_cli_against_php_fpm(fpm: PhpFpm, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["request", fpm.unix, "/info.php?x=1", "--root", str(fpm.root), "-d", "name=cli"]) == 0
    info = json.loads(capfd.readouterr().out)
    assert (info["method"], info["post"]) == ("POST", {"name": "cli"})
    assert main(["request", fpm.unix, "/stderr.php", "--root", str(fpm.root), "--stderr"]) == 0
    assert "something to log" in capfd.readouterr().err
    assert main(["request", fpm.unix, "/status.php?code=502", "--root", str(fpm.root)]) == 1


def test_php_fpm_stopped_mid_request(tmp_path: Path) -> None:
    with php_fpm(tmp_path, children=1) as own:
        client = FastCGIClient(own.unix, root=str(own.root), timeout=10)
        errors: list[BaseException] = []
        first = threading.Event()

        def call() -> None:
            try:
                with client.stream("GET", "/sleep.php?s=5") as response:
                    chunks = response.iter_bytes()
                    next(chunks)
                    first.set()
                    b"".join(chunks)
            except BaseException as exc:  # reported to the test
                errors.append(exc)
                first.set()

        thread = threading.Thread(target=call)
        thread.start()
        assert first.wait(10)
        start = time.monotonic()
        own.proc.terminate()
        thread.join(10)
        assert time.monotonic() - start < 5
        assert len(errors) == 1 and isinstance(errors[0], ConnectionClosed), errors
        assert own.unix in str(errors[0])
        own.proc.wait(10)
    with pytest.raises(ConnectError, match="cannot connect"):
        client.request("GET", "/info.php")


