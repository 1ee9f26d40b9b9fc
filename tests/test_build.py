"""The two builds of the package: pure Python and compiled (setup.py).

CI runs the whole suite once on each; ``EXPECT_FCGIBRIDGE_BUILD`` says which one a run is
meant to test, so a compile that silently fell back to pure Python fails the run.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import fcgibridge

ROOT = Path(__file__).resolve().parent.parent


def setup_module_list() -> list[str]:
    """setup.py's COMPILED list, read without running setup()."""
    source = (ROOT / "setup.py").read_text()
    start = source.index("COMPILED = [")
    block = source[start : source.index("]", start)]
    return [line.strip().strip('",') for line in block.splitlines()[1:] if line.strip()]


def test_this_run_tests_the_build_it_was_meant_to() -> None:
    # CI says which build it meant; elsewhere, the shared library beside the source says it.
    library = any((ROOT / "fcgibridge").glob("compiled__mypyc.*"))
    expected = os.environ.get("EXPECT_FCGIBRIDGE_BUILD", "compiled" if library else "pure Python")
    assert fcgibridge.build() == expected


def test_every_module_of_a_build_is_the_same_kind() -> None:
    kinds = set()
    for path in setup_module_list():
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert module.__file__ is not None
        kinds.add(module.__file__.endswith(".py"))
    assert len(kinds) == 1, "some modules are compiled, others are not: a stale build?"
    assert kinds == {fcgibridge.build() == "pure Python"}


def test_the_compiled_modules_are_the_serving_path() -> None:
    listed = setup_module_list()
    assert all((ROOT / path).is_file() for path in listed)
    for hot in ("fcgibridge/protocol/connection.py", "fcgibridge/server/connection.py",
                "fcgibridge/server/asgi.py", "fcgibridge/server/wsgi.py"):
        assert hot in listed


def test_version_says_which_build() -> None:
    result = subprocess.run([sys.executable, "-m", "fcgibridge", "--version"], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout.strip() == f"fcgibridge {fcgibridge.__version__} ({fcgibridge.build()})"
