"""The fuzz targets of fuzz/, briefly: each target runs under atheris for a few seconds
and finds nothing; the seed corpus passes every check; the checks do catch what they
are there for.

atheris comes with the ``test`` extra wherever it has wheels (Linux x86_64 CPython, the
marker in pyproject.toml); there a missing atheris fails the run instead of skipping it.
Elsewhere the same targets run under the hypothesis engine, a bounded number of inputs.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcgibridge.protocol import (
    ApplicationConnection,
    RecordType,
    RemoteProtocolError,
    RequestBody,
    Role,
    pack_record,
    records,
)
from fuzz import seeds, targets
from fuzz.__main__ import main as fuzz_main

ROOT = Path(__file__).resolve().parents[2]
TARGETS = sorted(targets.TARGETS)
FUZZ_SECONDS = 20

#: Where the test extra installs atheris (keep in step with its marker in pyproject.toml).
ATHERIS_PLATFORM = (sys.platform == "linux" and platform.machine() == "x86_64"
                    and platform.python_implementation() == "CPython" and sys.version_info < (3, 14))
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


class Run:
    """One ``python -m fuzz`` process, started by the test and stopped by its pid."""

    def __init__(self, target: str, work: Path) -> None:
        self.work = work
        self.log = work.with_suffix(".log")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fuzz", target, "--engine", "atheris", "--time", str(FUZZ_SECONDS),
                 "--work", str(work)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def wait(self) -> tuple[int, str]:
        code = self.process.wait(timeout=FUZZ_SECONDS + 120)
        return code, self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def atheris_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """All targets at once (they take the same 20 s), when atheris is there."""
    runs: dict[str, Run] = {}
    if HAS_ATHERIS:
        base = tmp_path_factory.mktemp("fuzz")
        runs = {target: Run(target, base / target) for target in TARGETS}
    try:
        yield runs
    finally:
        for run in runs.values():
            run.stop()


@pytest.mark.parametrize("target", TARGETS)
def test_target_fuzzed_briefly_finds_nothing(target: str, atheris_runs: dict[str, Run], tmp_path: Path) -> None:
    if not HAS_ATHERIS:
        if ATHERIS_PLATFORM:
            pytest.fail("atheris is not installed: pip install -e '.[test]' installs it on this platform")
        # No atheris wheels here: the hypothesis engine, on a bounded number of inputs.
        assert fuzz_main([target, "--engine", "hypothesis", "--runs", "1000", "--work", str(tmp_path)]) == 0
        return
    code, log = atheris_runs[target].wait()
    findings = sorted(p.name for p in (atheris_runs[target].work / "findings").iterdir())
    assert code == 0 and not findings, f"fuzz target {target} found something ({findings}):\n{log[-4000:]}"
    executed = re.search(r"stat::number_of_executed_units: (\d+)", log)
    assert executed and int(executed.group(1)) > 100, log[-2000:]
    assert re.search(r"cov: \d+ ft: \d+", log), "atheris reported no coverage"


@pytest.mark.parametrize("target", TARGETS)
def test_seed_corpus_passes_every_check(target: str) -> None:
    corpus = seeds.SEEDS[target]()
    assert len(corpus) >= 5
    for name, data in corpus.items():
        try:
            targets.TARGETS[target](data)
        except Exception as exc:
            raise AssertionError(f"seed {name} of {target}: {exc!r}") from exc


@pytest.mark.parametrize("target", TARGETS)
def test_bytes_that_are_not_fastcgi_are_no_finding(target: str) -> None:
    """The documented protocol error is what garbage gives, and it is no finding."""
    garbage = b"\x00\x00" + b"GET / HTTP/1.1\r\n\r\n"
    with pytest.raises(RemoteProtocolError):
        ApplicationConnection().receive_data(garbage[2:])
    targets.TARGETS[target](garbage)


def test_events_that_differ_with_the_cutting_are_a_finding() -> None:
    fine = targets.Outcome([RequestBody(1, b"ab")], b"", failed=False, active=1)
    with pytest.raises(targets.Finding, match="events differ"):
        targets.agree(targets.Outcome([RequestBody(1, b"a"), RequestBody(1, b"b")], b"", False, 1), fine, "cut")
    with pytest.raises(targets.Finding, match="failed"):
        targets.agree(targets.Outcome([], b"", failed=True, active=0), fine, "whole")
    # After a protocol error the coarser feed may have lost its last read's events.
    lost = targets.Outcome([], b"", failed=True, active=0)
    targets.agree(lost, targets.Outcome([RequestBody(1, b"ab")], b"", failed=True, active=1), "whole")


def test_core_answers_and_lost_events_are_no_finding() -> None:
    """Two things the app target once took for findings: the core's own END_REQUEST for
    an early abort followed by a new request on the same id in the same read; and a
    read that raised, whose events (a request started) were lost with it."""
    again = records.pack_begin_request(1, Role.RESPONDER, True)
    early_abort = again + pack_record(RecordType.ABORT_REQUEST, 1) + again + records.pack_params(1, {"A": "B"})
    lost = again + records.pack_params(1, {"A": "B"}) + pack_record(RecordType.UNKNOWN_TYPE, 1)
    for config in (0x00, 0x05, 0x65):
        targets.check_app(bytes((config, 9)) + early_abort + pack_record(RecordType.STDIN, 1))
        targets.check_app(bytes((config, 9)) + lost)


def test_output_the_client_core_cannot_read_is_a_finding() -> None:
    with pytest.raises(targets.Finding, match="version 2"):
        targets.spans(b"\x02" + pack_record(6, 1, b"x")[1:])
    with pytest.raises(targets.Finding, match="inside a record"):
        targets.spans(pack_record(6, 1, b"abc")[:-1])


def test_replay_runs_inputs_through_the_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = tmp_path / "seed"
    seed.write_bytes(next(iter(seeds.SEEDS["app"]().values())))
    assert fuzz_main(["replay", "app", str(seed)]) == 0
    assert "no finding" in capsys.readouterr().out
