"""The documentation stays true to the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

from fcgibridge.config import _fields, options_reference

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


def test_every_option_named_in_the_gunicorn_and_php_fpm_table_exists() -> None:
    page = (DOCS / "operations.md").read_text()
    start = page.index("## From gunicorn or PHP-FPM")
    table = page[start:page.index("\n## ", start + 1)]
    flags = {flag for fld in _fields() for flag in fld.flags}
    named = set(re.findall(r"`(-[-\w]+)", table))
    assert named, "the table names no option"
    assert named <= flags, f"the table names options that do not exist: {sorted(named - flags)}"
