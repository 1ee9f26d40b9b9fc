"""``--docs``: the run's table into docs/benchmarks.md (between markers) and its chart to docs/benchmarks.png."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.backends import REPO_ROOT
from harness.report import Run, markdown

PAGE = REPO_ROOT / "docs" / "benchmarks.md"
CHART = REPO_ROOT / "docs" / "benchmarks.png"
MARKERS = {"nginx": "bench-run", "direct": "bench-direct"}


def replace_block(page: str, marker: str, body: str) -> str:
    """``page`` with the text between ``<!-- marker -->`` and ``<!-- /marker -->`` replaced by ``body``."""
    begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if begin not in page or end not in page:
        raise SystemExit(f"{PAGE}: no {begin} ... {end} block to write the results into")
    head, rest = page.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def block(run: Run) -> str:
    """The report without its title; the nginx run also shows the chart."""
    text = markdown(run).split("\n", 2)[2]
    if run.mode == "nginx":
        text += "\n![requests/s per backend and test](benchmarks.png)\n"
    return text


def update(run: Run, chart: Path) -> None:
    page = PAGE.read_text()
    PAGE.write_text(replace_block(page, MARKERS[run.mode], block(run)))
    if run.mode == "nginx":
        shutil.copyfile(chart, CHART)
