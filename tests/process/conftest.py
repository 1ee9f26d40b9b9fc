"""Fixtures of the process tests."""

from __future__ import annotations

import pytest

from fcgibridge.process.supervisor import NO_PIDFD


@pytest.fixture(params=["pidfd", "sigchld"])
def reaping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a supervisor test twice: the parent learns of its workers' exits from pidfds,
    then from SIGCHLD and waitpid (the fallback where ``os.pidfd_open`` is missing,
    forced here with ``FCGIBRIDGE_NO_PIDFD=1``, which the processes the test starts inherit)."""
    if request.param == "sigchld":
        monkeypatch.setenv(NO_PIDFD, "1")
    else:
        monkeypatch.delenv(NO_PIDFD, raising=False)
    return str(request.param)
