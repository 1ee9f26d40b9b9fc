"""Lua accept-style scripts, run unchanged in the Lua runtime that ``lupa`` embeds.

A script returns a table with ``accept`` (required) and optional ``start``, ``restart``
and ``stop``, with the semantics of :mod:`fcgibridge.accept`. :class:`LuaApp` is an
:class:`~fcgibridge.accept.AcceptApp` over that table, so the request handling (one call
at a time per process, the CGI response parser, 500 on errors) is the same. Inside the
runtime:

- ``os.getenv(name)`` reads ``os.environ`` of the Python process, which during ``accept``
  holds the request's CGI variables over the process environment;
- ``io.read`` reads the request body during ``accept``;
- ``print`` writes to the error log, never into the response;
- ``require`` finds modules next to the script; ``arg`` holds the script arguments
  (``arg[0]`` is the script).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from .accept import AcceptApp, ScriptError, _Redirect
from .errors import UserError

__all__ = ["LUA_VERSIONS", "LuaApp", "load_lua"]

#: ``--lua-version`` values and the lupa module that embeds each runtime.
LUA_VERSIONS = {
    "5.1": "lua51", "5.2": "lua52", "5.3": "lua53", "5.4": "lua54", "5.5": "lua55",
    "luajit2.0": "luajit20", "luajit2.1": "luajit21",
}

# Runs every call through xpcall, so a Lua error comes back with Lua's traceback.
_PROTECT = """
function(f)
    return function()
        local ok, value = xpcall(f, debug.traceback)
        return ok, value
    end
end
"""

# print: tab-separated tostring of every argument, one log line per call.
_SETUP = """
function(log, getenv, read, dir, args)
    print = function(...)
        local parts = {}
        for i = 1, select('#', ...) do parts[i] = tostring((select(i, ...))) end
        log(table.concat(parts, "\\t"))
    end
    os.getenv = function(name) return getenv(name) end
    io.read = function(fmt) return read(fmt) end
    package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. package.path
    arg = args
end
"""


def _runtime_class(version: str) -> Any:
    try:
        if version == "auto":
            lupa = importlib.import_module("lupa")
            return lupa.LuaRuntime
        return importlib.import_module(f"lupa.{LUA_VERSIONS[version]}").LuaRuntime
    except ImportError as exc:
        if exc.name in ("lupa", None) or exc.name == "lupa" or not str(exc.name).startswith("lupa."):
            raise UserError("running Lua scripts needs the lupa package: pip install 'fcgibridge[lua]'") from None
        raise UserError(f"this lupa build has no Lua {version} runtime; pick another --lua-version") from None


class _Protected:
    """A Lua function called in protected mode: a Lua error raises :class:`ScriptError`."""

    def __init__(self, call: Any, name: str) -> None:
        self._call = call
        self._name = name

    def __call__(self) -> Any:
        ok, value = self._call()
        if not ok:
            message = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            raise ScriptError(f"Lua error in {self._name}: {message}")
        return value


class _LuaScript:
    """The table a Lua script returned, as an object with accept/start/restart/stop attributes."""

    def __init__(self, table: Any, protect: Any, runtime: Any) -> None:
        for name in ("accept", "start", "restart", "stop"):
            func = table[name.encode()]
            if func is not None and runtime.eval("type")(func) == b"function":
                setattr(self, name, _Protected(protect(func), name))


class LuaApp(AcceptApp):
    """A Lua accept-style script as a WSGI app (see :func:`load_lua`)."""

    def __init__(self, script: _LuaScript, path: Path, version: str) -> None:
        super().__init__(script, name=path.name)
        self.path = path
        self.lua_version = version


def load_lua(path: str | os.PathLike[str], *, version: str = "auto", args: list[str] | None = None,
             cwd: str | os.PathLike[str] = ".") -> LuaApp:
    """Run the Lua script at *path* and wrap the table it returns.

    Every load failure is a :class:`UserError` with one line: the file is missing, a
    syntax error (Lua's message), an error while running it, no table returned, no
    ``accept`` function.
    """
    file = Path(cwd, path)
    if not file.is_file():
        raise UserError(f"Lua file {path} not found (looked in {Path(cwd).resolve()})")
    file = file.resolve()
    runtime = _runtime_class(version)(encoding=None, unpack_returned_tuples=True)

    def log_line(text: bytes) -> None:
        print(text.decode("utf-8", "replace"))  # sys.stdout: the log while a script runs

    def getenv(name: Any) -> bytes | None:
        if not isinstance(name, bytes):
            return None
        value = os.environ.get(name.decode("utf-8", "surrogateescape"))
        return None if value is None else value.encode("utf-8", "surrogateescape")

    def read(fmt: Any = b"l") -> bytes | int | float | None:
        stdin = sys.stdin.buffer
        if isinstance(fmt, int | float):
            data = stdin.read(int(fmt))
            return data if data or fmt == 0 else None
        kind = (fmt or b"l").lstrip(b"*")[:1]
        if kind == b"a":
            return bytes(stdin.read())
        if kind == b"n":
            return _number(stdin.readline())
        line = stdin.readline()
        if not line:
            return None
        return line if kind == b"L" else line.rstrip(b"\n")

    arg = runtime.table_from({0: str(file).encode(), **{i + 1: a.encode() for i, a in enumerate(args or [])}})
    runtime.eval(_SETUP)(log_line, getenv, read, str(file.parent).encode(), arg)
    chunk, error = runtime.eval("function(p) local f, e = loadfile(p); return f, e end")(
        str(file).encode())
    if chunk is None:
        raise UserError(f"cannot load Lua file {path}: {error.decode('utf-8', 'replace')}")
    protect = runtime.eval(_PROTECT)
    with _Redirect():
        ok, table = protect(chunk)()
    if not ok:
        message = table.decode("utf-8", "replace") if isinstance(table, bytes) else str(table)
        raise UserError(f"running Lua file {path} raised an error: {message.splitlines()[0]}")
    kind = runtime.eval("type")(table)
    if kind != b"table":
        raise UserError(f"Lua file {path} does not return a table (it returned {kind.decode()}); "
                        "end it with: return { accept = accept }")
    script = _LuaScript(table, protect, runtime)
    if not hasattr(script, "accept"):
        raise UserError('Lua file doesn\'t provide an "accept" function.')
    return LuaApp(script, file, version)


def _number(line: bytes) -> int | float | None:
    """``io.read("n")``: the number on a line, or nil."""
    text = line.strip().decode("ascii", "replace")
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return None
