"""GET_VALUES tells the truth about the whole server, and the server holds what it says.

With ``-w 2 --max-connections N`` the web server sees one address with 2N connections
behind it. Connections fall on whichever worker accepts first, not evenly; the workers
share their counts (fcgibridge/process/shares.py), so none makes room while another
still has it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, children_of, fcgibridge_command, process_log, run_fcgibridge, wait_until

from fcgibridge.client import FastCGIClient
from fcgibridge.protocol import FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, ClientConnection

APP = "tests.apps.ops_app:app"
QUERY = ClientConnection().get_values([FCGI_MAX_CONNS])


@contextlib.contextmanager
def connections(path: Path, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to the unix socket *path*, opened as fast as possible."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def served(sock: socket.socket) -> bool:
    """Whether the server still holds *sock*: it answers a GET_VALUES on it."""
    try:
        sock.settimeout(5)
        sock.sendall(QUERY)
        return bool(sock.recv(4096))
    except OSError:  # reset, or closed under us
        return False


def values_from_the_command(address: str) -> dict[str, str]:
    result = subprocess.run([*fcgibridge_command("request", "--values", address)], cwd=ROOT, capture_output=True,
                            text=True, timeout=30, check=True)
    return dict(line.split("=", 1) for line in result.stdout.split())


@pytest.mark.parametrize(("workers", "share", "loop"), [(2, 40, "auto"), (2, 40, "asyncio"), (1, 40, "auto")])
def test_get_values_is_the_whole_server_and_it_holds_that_many(tmp_path: Path, workers: int, share: int,
                                                               loop: str) -> None:
    """uvloop calls each connection's connection_made before accepting the next; the
    stdlib loop (--loop asyncio) accepts a batch first, which the counts must include."""
    path = tmp_path / "app.sock"
    address = f"unix:{path}"
    total = workers * share
    expected = {FCGI_MAX_CONNS: str(total), FCGI_MAX_REQS: str(total), FCGI_MPXS_CONNS: "1"}
    with run_fcgibridge(APP, "-b", address, "-w", str(workers), "--max-connections", str(share), "--loop", loop,
                        address=address) as proc:
        wait_until(lambda: process_log(proc).count("worker ready") == workers, 20, "every worker serving")
        if workers > 1:
            assert len(children_of(proc.pid)) == workers
        assert FastCGIClient(address).get_values() == expected
        assert values_from_the_command(address) == expected
        # A worker tells the others of a closed connection within 0.25 s, not at once:
        # the two just closed must not count against the burst.
        time.sleep(1.0)

        with connections(path, total) as burst:
            time.sleep(1.0)  # a connection made room for would be closed by now
            held = sum(served(sock) for sock in burst)
            assert held == total, f"{held} of {total} held; log:\n{process_log(proc)}"
            # One more, once the counts are known: the whole server is full, so the worker
            # that accepts it closes its idle connection longest open to make room. (A
            # worker holding none takes it as its one: under load one worker may have
            # accepted the whole burst, and the other then refuses nobody.)
            with connections(path, 1) as (late,):
                assert served(late)
                time.sleep(0.5)
                still = sum(served(sock) for sock in burst)
                log = process_log(proc)
                if "closing an idle connection" in log:
                    assert still == total - 1, f"{still} of {total} still held; log:\n{log}"
                else:
                    assert workers > 1 and still == total, f"{still} of {total} still held; log:\n{log}"
