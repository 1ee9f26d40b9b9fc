"""Configuration snippets taken from the docs, so the docs hold the one copy the tests run.

A snippet is the fenced code block right after a marker line in a Markdown page::

    <!-- snippet: apache-tcp -->
    ```apache
    ProxyPass "/" "fcgi://127.0.0.1:9000/" enablereuse=on
    ```

:func:`snippet` returns the block's text; :func:`render` swaps the example values a
reader sees (``127.0.0.1:9000``, ``/run/app/fcgi.sock``, ...) for the test's own, and
fails when a value is no longer in the snippet, so a docs change cannot silently make a
test run something else than what the page shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"

_MARKER = re.compile(r"^<!-- snippet: ([\w.-]+) -->\n```[\w-]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def snippets(page: str) -> dict[str, str]:
    """Every named snippet of ``docs/PAGE``, by name."""
    text = (DOCS / page).read_text()
    found: dict[str, str] = {}
    for match in _MARKER.finditer(text):
        name, body = match.groups()
        if name in found:
            raise AssertionError(f"docs/{page}: snippet {name!r} is there twice")
        found[name] = body
    return found


def snippet(page: str, name: str) -> str:
    """The text of snippet ``name`` in ``docs/PAGE``; AssertionError when it is missing."""
    found = snippets(page)
    if name not in found:
        raise AssertionError(f"docs/{page} has no snippet {name!r} (it has: {', '.join(found) or 'none'})")
    return found[name]


def render(text: str, replacements: Mapping[str, str]) -> str:
    """``text`` with each example value replaced; AssertionError when one does not occur."""
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"the snippet no longer contains {old!r}:\n{text}")
        text = text.replace(old, new)
    return text


def doc_snippet(page: str, name: str, replacements: Mapping[str, str]) -> str:
    """:func:`snippet` then :func:`render`."""
    return render(snippet(page, name), replacements)
