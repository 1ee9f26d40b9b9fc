"""Every program (and Apache module) the tests start, with the Debian package that has it.

This list is the one place both sides read: the tests find a program with :func:`find`
(which fails, never skips, when it is missing, and refuses a name not listed here), and
``.ci/run`` installs the packages of the missing ones with ``python3 tests/programs.py
missing``. A test that starts a program this file does not list cannot pass, so CI on a
fresh machine cannot lack it. ``tests/test_programs.py`` checks that no test looks a
program up any other way.

Run by ``.ci/run`` before any virtualenv exists, so this module uses the standard library
only at import time.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Program:
    """A program the tests run, and where Debian puts it."""

    #: The Debian package that installs it.
    package: str
    #: Where it may be: absolute paths or globs, tried in order (newest first for globs).
    #: Empty: looked up on PATH by its name only.
    paths: tuple[str, ...] = ()
    #: Looked up on PATH first (Debian's sbin directories are not on a non-root PATH).
    on_path: bool = True
    #: Globs of files the package adds beside the program, each of which must match.
    needs: tuple[str, ...] = ()


PROGRAMS: dict[str, Program] = {
    "nginx": Program("nginx-light", ("/usr/sbin/nginx",)),
    "php-fpm": Program("php-fpm", ("/usr/sbin/php-fpm*",)),
    "spawn-fcgi": Program("spawn-fcgi", ("/usr/bin/spawn-fcgi",)),
    "lighttpd": Program("lighttpd", ("/usr/sbin/lighttpd",)),
    "wrk": Program("wrk", ("/usr/bin/wrk",)),
    "apache2": Program("apache2", ("/usr/sbin/apache2",)),
    # Not a program but the module file Apache loads; the package puts it there.
    "mod_fcgid": Program("libapache2-mod-fcgid", ("/usr/lib/apache2/modules/mod_fcgid.so",), on_path=False),
    "caddy": Program("caddy", ("/usr/bin/caddy",)),
    "h2o": Program("h2o", ("/usr/bin/h2o",)),
    # Debian's own Python, outside root's home, for backends a web server runs as its own
    # user (mod_fcgid); its venv module needs the python3-venv package.
    "system-python3": Program("python3-venv", ("/usr/bin/python3",), on_path=False,
                              needs=("/usr/share/python-wheels/pip-*.whl",)),
}


def locate(name: str) -> str | None:
    """The path of program ``name``, or None when it is not installed."""
    program = PROGRAMS[name]
    if not all(glob.glob(pattern) for pattern in program.needs):
        return None
    if program.on_path:
        found = shutil.which(name)
        if found:
            return found
    for pattern in program.paths:
        matches = sorted(glob.glob(pattern), reverse=True) if glob.has_magic(pattern) else [pattern]
        for path in matches:
            if os.path.exists(path) and (path.endswith(".so") or os.access(path, os.X_OK)):
                return path
    return None


def find(name: str) -> str:
    """The path of program ``name``; fails the calling test when it is not installed."""
    import pytest

    if name not in PROGRAMS:
        pytest.fail(f"{name} is not listed in tests/programs.py, so .ci/run would not install it: add it there",
                    pytrace=False)
    found = locate(name)
    if found is None:
        pytest.fail(f"{name} is needed by this test: apt-get install {PROGRAMS[name].package} "
                    "(bash .ci/run installs it)", pytrace=False)
    return found


def missing_packages() -> list[str]:
    """The Debian packages to install so that every listed program is there."""
    packages: list[str] = []
    for name, program in PROGRAMS.items():
        if locate(name) is None and program.package not in packages:
            packages.append(program.package)
    return packages


def main(argv: list[str]) -> int:
    if argv == ["missing"]:
        print(" ".join(missing_packages()))
        return 0
    if argv == ["packages"]:
        print(" ".join(dict.fromkeys(program.package for program in PROGRAMS.values())))
        return 0
    print("usage: python3 tests/programs.py missing|packages", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
