"""Shared fixtures and hooks for the test suite."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import programs
import pytest
from nginx import Location, Nginx
from webserver import LOG_SOURCES

# --------------------------------------------------------------------------- nginx (e2e tests)

#: How much of each log goes into the report of a failing test.
REPORT_LOG_TAIL = 20_000


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """Path of the nginx binary. The e2e tests fail (never skip) when it is missing."""
    return programs.find("nginx")


class NginxFactory:
    """Starts :class:`Nginx` instances under one directory; :meth:`close` stops them all by PID."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.instances: list[Nginx] = []

    def __call__(self, *locations: Location, name: str = "nginx", server_extra: Sequence[str] = (),
                 log_level: str = "info") -> Nginx:
        prefix = self.directory / f"{name}{len(self.instances)}"
        server = Nginx(prefix, list(locations), binary=self.binary, server_extra=server_extra, log_level=log_level)
        self.instances.append(server)
        return server.start()

    def close(self) -> None:
        errors: list[BaseException] = []
        for server in reversed(self.instances):
            try:
                server.stop()
            except BaseException as exc:  # stop every instance, then re-raise the first error
                errors.append(exc)
        self.instances.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def nginx_factory(nginx_binary: str, tmp_path: Path) -> Iterator[NginxFactory]:
    """``nginx_factory(Location(backend), ...)`` starts an nginx; all are stopped after the test."""
    factory = NginxFactory(nginx_binary, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the running web servers (and registered processes) to a failing test."""
    report = yield
    if report.failed:
        for title, source in list(LOG_SOURCES.items()):
            report.sections.append((f"output of {title}", source()[-REPORT_LOG_TAIL:] or "(empty)"))
    return report
