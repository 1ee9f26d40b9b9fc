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
    "fcgibridge/server/lifecycle.py",
    "fcgibridge/server/connection.py",
    "fcgibridge/server/environ.py",
    "fcgibridge/server/threadpool.py",
    "fcgibridge/server/body.py",
    "fcgibridge/server/asgi.py",
    "fcgibridge/server/wsgi.py",
]


#: The setup.py commands that build the package (pip runs others too: egg_info,
#: dist_info, the build requirements; those need no compiler).
BUILDING = {"bdist_wheel", "build", "build_ext", "install", "editable_wheel"}


def wanted() -> bool:
    setting = os.environ.get("FCGIBRIDGE_COMPILE", "")
    commands = set(sys.argv[1:]) & BUILDING
    if setting == "0" or not commands:
        return False
    return setting == "1" or "editable_wheel" not in commands


def extensions() -> list[Any]:
    if not wanted():
        return []
    try:
        from mypyc.build import mypycify

        return list(mypycify(COMPILED, opt_level="3", group_name="fcgibridge.compiled"))
    except (Exception, SystemExit) as exc:  # no mypy, or it refused the code: mypycify exits
        print(f"fcgibridge: not compiling ({exc!r}); installing pure Python", file=sys.stderr)
        return []


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
