"""The documentation stays true to the code it describes."""

from __future__ import annotations

from pathlib import Path

from fcgibridge.config import options_reference

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_page_lists_every_option_as_the_code_defines_it() -> None:
    page = (DOCS / "configuration.md").read_text()
    start = page.index("<!-- options-reference")
    start = page.index("\n", start) + 1
    end = page.index("<!-- /options-reference -->")
    assert page[start:end] == options_reference(), (
        "docs/configuration.md is out of date: replace the table between the options-reference "
        "markers with the output of fcgibridge.config.options_reference()"
    )
