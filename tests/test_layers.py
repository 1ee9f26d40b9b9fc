"""The package's layers: imports point down only (docs/architecture.md).

protocol ← server (serving) ← process ← cli; the client and the proxy stand beside the
server on the protocol core. Read from the source with :mod:`ast`, so a new upward import
fails here, not in a review.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fcgibridge"

#: For each layer, the fcgibridge modules and packages it must never import.
FORBIDDEN = {
    "protocol": {"server", "process", "client", "cli", "cgi_mode", "config", "proxy", "accept", "lua", "importer",
                 "cgi", "logs", "errors", "addresses", "compat", "cgi_params", "httpx"},
    "server": {"process", "client", "cli", "cgi_mode", "config", "proxy", "importer", "logs", "compat",
               "cgi_params", "httpx"},
    "client": {"server", "process", "cli", "cgi_mode", "config", "proxy", "compat", "cgi_params", "httpx"},
    "process": {"cli", "client", "proxy", "compat", "cgi_params", "httpx"},
    # compat (flup's API) sits on top, beside the cli: it may use every layer, none uses it.
    "compat": {"cli"},
}


def imported_modules(path: Path) -> set[str]:
    """The fcgibridge modules ``path`` imports (first component below ``fcgibridge``)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = (node.module or "").split(".")
            names = [parts] if node.module else [[*parts, alias.name] for alias in node.names]
            found.update(name[1] for name in names if len(name) > 1 and name[0] == "fcgibridge")
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("fcgibridge."))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_upward(layer: str) -> None:
    offenders = {
        f"{path.relative_to(PACKAGE.parent)} imports fcgibridge.{name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in imported_modules(path) & FORBIDDEN[layer]
    }
    assert not offenders, "\n".join(sorted(offenders))


def test_nothing_imports_compat() -> None:
    """compat is for users' scripts: the package itself (the cli included) never needs it."""
    offenders = sorted(str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                       if "compat" not in path.relative_to(PACKAGE).parts and "compat" in imported_modules(path))
    assert not offenders, offenders


def test_the_protocol_core_loads_nothing_else() -> None:
    code = ("import sys, fcgibridge.protocol; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('fcgibridge', 'asgiref')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    # fcgibridge.compiled__mypyc: the library every compiled module shares (setup.py), when compiled.
    assert [m for m in loaded if m not in ("fcgibridge", "fcgibridge.compiled__mypyc")
            and not m.startswith("fcgibridge.protocol")] == []


def test_the_connection_layer_loads_neither_config_nor_asgiref() -> None:
    code = ("import sys, fcgibridge.server.connection; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('fcgibridge', 'asgiref')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not [m for m in loaded if m.startswith(("asgiref", "fcgibridge.config", "fcgibridge.process"))], loaded
