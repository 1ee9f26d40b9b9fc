"""The programs the tests start are listed once (tests/programs.py), and .ci/run installs them."""

from __future__ import annotations

import re
from pathlib import Path

import programs
import pytest

TESTS = Path(__file__).resolve().parent
CI_RUN = TESTS.parent / ".ci" / "run"

#: Ways of finding a program that would bypass the list (``#!/usr/bin/env`` starts a
#: script a test runs: env is part of every Debian system, not a program to install).
_LOOKUPS = re.compile(r"shutil\.which\(|/usr/s?bin/(?!env\b)|/usr/local/s?bin/|glob\.glob\(\"/usr")


def test_every_listed_program_is_installed() -> None:
    """On a machine where .ci/run ran, nothing is missing."""
    assert programs.missing_packages() == [], "run `bash .ci/run` (or apt-get install these packages)"


def test_ci_installs_what_the_list_names() -> None:
    assert "python3 tests/programs.py missing" in CI_RUN.read_text()


def test_no_test_finds_a_program_another_way() -> None:
    """A program found with shutil.which or a hard-coded path could be missing from the list,
    and so from a fresh CI machine."""
    offenders = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != "programs.py" and path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _LOOKUPS.search(line)
    ]
    assert not offenders, "use programs.find(NAME) and list the program in tests/programs.py:\n" + "\n".join(offenders)


def test_find_refuses_a_program_that_is_not_listed() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"not listed in tests/programs\.py"):
        programs.find("no-such-program")


def test_missing_reports_the_package_of_an_absent_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(programs.PROGRAMS, "absent", programs.Program("absent-pkg", ("/nonexistent/absent",)))
    assert "absent-pkg" in programs.missing_packages()
    with pytest.raises(pytest.fail.Exception, match="apt-get install absent-pkg"):
        programs.find("absent")
