"""The optional compiled core: the protocol core and the serving path, compiled with mypyc.

Everything else about the package is in pyproject.toml. The compiled modules behave as
the Python source they are built from (the test suite runs against both); they are
only faster. ``FCGIBRIDGE_COMPILE`` decides:

- unset (the default): compile a wheel or a plain ``pip install .``; an editable install
  stays pure Python, so that an edited ``.py`` file is what runs;
- ``1``: compile, editable installs and ``setup.py build_ext --inplace`` included;
- ``0``: pure Python.

When compiling fails (no C compiler, no Python headers) the install goes on in pure
Python with a warning. ``python -m fcgibridge --version`` says which one is installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: The modules a request passes through, in the order it does.
COMPILED = [
    "fcgibridge/protocol/constants.py",
    "fcgibridge/protocol/errors.py",
    "fcgibridge/protocol/events.py",
    "fcgibridge/protocol/state.py",
    "fcgibridge/protocol/records.py",
    "fcgibridge/protocol/connection.py",
    "fcgibridge/cgi.py",
    "fcgibridge/server/connection.py",
    "fcgibridge/server/environ.py",
    "fcgibridge/server/threadpool.py",
    "fcgibridge/server/body.py",
    "fcgibridge/server/asgi.py",
    "fcgibridge/server/wsgi.py",
]


def wanted() -> bool:
    setting = os.environ.get("FCGIBRIDGE_COMPILE", "")
    if setting in ("0", "1"):
        return setting == "1"
    return "editable_wheel" not in sys.argv


def extensions() -> list[Any]:
    if not wanted():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        print(f"fcgibridge: not compiling ({exc}); installing pure Python", file=sys.stderr)
        return []
    return list(mypycify(COMPILED, opt_level="3", group_name="fcgibridge"))


class OptionalBuildExt(build_ext):
    """Build the compiled modules, or none of them: they share one library, so half a
    build would not import."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a compiler error is a DistutilsError, CompileError, or OSError
            self._remove_outputs()
            print(f"fcgibridge: compiling failed ({exc}); installing pure Python", file=sys.stderr)

    def _remove_outputs(self) -> None:
        for path in self.get_outputs():
            Path(path).unlink(missing_ok=True)
        self.extensions = []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
