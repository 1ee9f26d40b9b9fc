"""The Python entry point ``fcgibridge.process.run(config)`` honours every option without the CLI:
status and ping pages, the access log, the peer filter. Each run is a real process (``run``
owns the signals), stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, free_port, stop_process, wait_for_port

from fcgibridge.client import ConnectionClosed, FastCGIClient

APP = "tests.apps.ops_app:app"


@contextlib.contextmanager
def run_in_process(tmp_path: Path, **options: object) -> Iterator[str]:
    """``python -c 'fcgibridge.process.run(Config(...))'`` serving ``APP`` on a free port."""
    address = f"127.0.0.1:{free_port()}"
    script = textwrap.dedent(f"""
        import sys
        from fcgibridge.config import Config
        from fcgibridge.process import run
        sys.exit(run(Config(app={APP!r}, bind=[{address!r}], **{options!r})))
    """)
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(address, proc=proc)
        yield address
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()


def test_status_ping_and_access_log_without_the_cli(tmp_path: Path) -> None:
    access_log = tmp_path / "access.log"
    with run_in_process(tmp_path, status_path="/status", ping_path="/ping", access_log=str(access_log)) as address:
        client = FastCGIClient(address)
        assert client.request("GET", "/pid").status == 200
        assert client.request("GET", "/ping").body == b"pong\n"
        report = json.loads(client.request("GET", "/status?json").body)
        assert report["accepted_conn"] >= 2
    lines = access_log.read_text().splitlines()
    assert any('"GET /pid' in line and " 200 " in line for line in lines), lines


@pytest.mark.parametrize(("allow_from", "served"), [(["127.0.0.0/8"], True), (["192.0.2.0/24"], False)])
def test_allow_from_without_the_cli(tmp_path: Path, allow_from: list[str], served: bool) -> None:
    with run_in_process(tmp_path, allow_from=allow_from) as address:
        client = FastCGIClient(address)
        if served:
            assert client.request("GET", "/pid").status == 200
        else:
            with pytest.raises(ConnectionClosed):
                client.request("GET", "/pid")
