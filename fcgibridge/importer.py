"""Loading the application named on the command line, and telling which interface it speaks.

The APP argument takes these forms::

    module:attr                 module.attr, after importing module
    module:attr.sub             attribute lookups chain
    module:factory()            call it; arguments must be Python literals:
    module:factory('x', debug=True)
    path/to/file.py:attr        import the file (packages above it are honoured)
    module                      module:app, else module:application, else the module
                                itself when it is an accept-style script (has accept())
    path/to/script.lua          a Lua accept-style script (see fcgibridge.lua)

The part after the colon is parsed with :mod:`ast` and never evaluated: only names,
attribute lookups and one call with literal arguments are accepted. Every failure is a
:class:`~fcgibridge.errors.UserError` that names exactly what went wrong.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import inspect
import math
import os
import reprlib
import sys
import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction

from .errors import UserError

if TYPE_CHECKING:
    from .config import Config

__all__ = ["Interface", "LoadedApp", "detect_interface", "load", "load_app"]


class Interface(StrEnum):
    """How the server talks to an app (``--interface``)."""

    WSGI = "wsgi"
    ASGI3 = "asgi3"
    ASGI2 = "asgi2"
    #: A script whose ``accept()`` returns a whole CGI response (served as WSGI).
    ACCEPT = "accept"
    #: The same, written in Lua (served as WSGI through lupa).
    LUA = "lua"

    @property
    def is_wsgi(self) -> bool:
        return self in (Interface.WSGI, Interface.ACCEPT, Interface.LUA)


@dataclass(frozen=True)
class LoadedApp:
    """The app as ``APP`` named it, ready to serve, and its interface."""

    app: Any
    interface: Interface
    #: The APP argument, for messages.
    name: str


def load(config: Config) -> LoadedApp:
    """Import the app ``config.app`` names; its interface is detected unless ``--interface`` says."""
    from .accept import AcceptApp

    if config.interface == "lua" or (config.interface == "auto" and config.app.endswith(".lua")):
        from .lua import load_lua

        lua_app = load_lua(config.app, version=config.lua_version, args=config.args, cwd=Path.cwd())
        return LoadedApp(lua_app, Interface.LUA, config.app)
    if config.args:  # a Python script's arguments, as if it had been run with them
        sys.argv = [config.app.partition(":")[0], *config.args]
    app = load_app(config.app, cwd=Path.cwd())
    interface = Interface(config.interface) if config.interface != "auto" else detect_interface(app, name=config.app)
    if interface is Interface.ACCEPT and not isinstance(app, AcceptApp):
        try:
            app = AcceptApp(app, name=config.app)
        except TypeError:
            raise UserError(f"{config.app} has no accept function, so it cannot be served as accept-style") from None
    return LoadedApp(app, interface, config.app)

#: Attributes tried, in order, when APP names only a module.
DEFAULT_ATTRIBUTES = ("app", "application")


@dataclass(frozen=True)
class _Target:
    """The part after the colon: a dotted attribute path, maybe called with literal arguments."""

    path: tuple[str, ...]
    called: bool = False
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.called:
            return ".".join(self.path)
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{'.'.join(self.path)}({', '.join(parts)})"


def load_app(spec: str, *, cwd: str | os.PathLike[str]) -> object:
    """Import and return the application that *spec* names.

    *cwd* goes first on ``sys.path`` (as ``python -m`` does), so that apps in the current
    directory import. A file path also puts the file's top package directory on
    ``sys.path``. A factory is called on every call of this function.
    """
    directory = Path(cwd).resolve()
    module_part, colon, target_text = spec.strip().partition(":")
    if not module_part:
        raise UserError(f"no module in the application {spec!r}; write MODULE:APP, for example myapp:app")
    if colon and not target_text.strip():
        raise UserError(f"nothing after the colon in {spec!r}; name the application, for example {module_part}:app")
    targets = [_parse_target(target_text, spec)] if colon else [_Target((name,)) for name in DEFAULT_ATTRIBUTES]

    _prepend_sys_path(str(directory))
    module_name = _file_module(module_part, directory) if _is_path(module_part) else _module_name(module_part)
    module = _import(module_name)
    if _is_path(module_part):
        _check_file_module(module, module_part, directory)

    if not colon:
        for target in targets:
            if hasattr(module, target.path[0]):
                return _resolve(module, target, spec)
        if callable(getattr(module, "accept", None)):
            return module  # an accept-style script
        raise UserError(
            f"module {module_name!r} has no attribute {DEFAULT_ATTRIBUTES[0]!r} or {DEFAULT_ATTRIBUTES[1]!r} "
            f"and no accept function; name the application: {module_part}:NAME"
        )
    return _resolve(module, targets[0], spec)


# The text after the colon.


def _parse_target(text: str, spec: str) -> _Target:
    expected = "expected a name such as app, a dotted name such as api.app, or a call such as create_app()"
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise UserError(f"cannot parse {text!r} in {spec!r}: {expected}") from None
    call = node if isinstance(node, ast.Call) else None
    path = _dotted_name(call.func if call is not None else node)
    if path is None:
        raise UserError(f"cannot use {text!r} in {spec!r}: {expected}")
    if call is None:
        return _Target(path)

    def literal(arg: ast.expr) -> Any:
        try:
            return ast.literal_eval(arg)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise UserError(
                f"the arguments in {spec!r} must be Python literals (strings, numbers, True, False, None, "
                f"lists, dicts); {ast.unparse(arg)!r} is not one"
            ) from None

    args = []
    for arg in call.args:
        if isinstance(arg, ast.Starred):
            raise UserError(f"*arguments are not supported in {spec!r}; write the arguments out")
        args.append(literal(arg))
    kwargs = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise UserError(f"**arguments are not supported in {spec!r}; write the keyword arguments out")
        kwargs[keyword.arg] = literal(keyword.value)
    return _Target(path, called=True, args=tuple(args), kwargs=kwargs)


def _dotted_name(node: ast.expr) -> tuple[str, ...] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return tuple(reversed(parts))


# Finding and importing the module.


def _is_path(module_part: str) -> bool:
    return module_part.endswith((".py", ".lua")) or "/" in module_part or os.sep in module_part


def _module_name(text: str) -> str:
    if text.startswith(".") or ".." in text or text.endswith("."):
        raise UserError(f"{text!r} is not a module name; write a dotted name such as myproject.wsgi")
    return text


def _file_module(text: str, cwd: Path) -> str:
    """The module name under which the file *text* imports; puts its root on sys.path."""
    path = cwd / text
    if path.suffix == ".lua":
        raise UserError(f"{text} is a Lua script: run it with fcgibridge {text} (no :NAME)")
    if path.suffix != ".py":
        raise UserError(f"{text} is not a .py file; write path/to/file.py:APP or module:APP")
    if not path.is_file():
        raise UserError(f"file {text} does not exist (looked in {cwd})")
    path = path.resolve()
    # A file inside a package imports as part of it, so that its relative imports work;
    # a package's __init__.py imports as the package.
    parts = [] if path.stem == "__init__" else [path.stem]
    directory = path.parent
    while (directory / "__init__.py").is_file():
        parts.insert(0, directory.name)
        directory = directory.parent
    _prepend_sys_path(str(directory))
    return ".".join(parts)


def _check_file_module(module: ModuleType, text: str, cwd: Path) -> None:
    expected = (cwd / text).resolve()
    actual = getattr(module, "__file__", None)
    if actual is None or Path(actual).resolve() != expected:
        raise UserError(
            f"{text} imports as module {module.__name__!r}, but that name is already taken by "
            f"{actual or 'a built-in module'}; rename the file"
        )


def _prepend_sys_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _import(name: str) -> ModuleType:
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # "No module named X" is about the APP argument only when X is the module or one of
        # its packages; any other missing name was imported by the module's own code.
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            hint = "" if exc.name != name else "; check the spelling and the current directory"
            raise UserError(f"no module named {exc.name!r}{hint}") from exc
        raise UserError(
            f"module {name!r} was found, but importing it raised ModuleNotFoundError: {_one_line(exc)}"
            f"{_where(exc.__traceback__)}"
        ) from exc
    except ImportError as exc:
        raise UserError(
            f"module {name!r} was found, but importing it raised ImportError: {_one_line(exc)}"
            f"{_where(exc.__traceback__)}"
        ) from exc
    except SyntaxError as exc:
        raise UserError(
            f"cannot import {name!r}: syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}"
        ) from exc
    except Exception as exc:
        raise UserError(
            f"importing {name!r} raised {type(exc).__name__}: {_one_line(exc)}{_where(exc.__traceback__)}"
        ) from exc


# Resolving the attribute and calling a factory.


def _resolve(module: ModuleType, target: _Target, spec: str) -> object:
    obj: object = module
    for i, part in enumerate(target.path):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = f"module {module.__name__!r}" if i == 0 else repr(".".join(target.path[:i]))
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{owner} has no attribute {part!r}{hint}") from None
    if not target.called:
        return obj
    name = ".".join(target.path)
    if not callable(obj):
        raise UserError(f"{name!r} in module {module.__name__!r} is not callable, so {spec!r} cannot call it")
    try:
        app = obj(*target.args, **target.kwargs)
    except Exception as exc:
        raise UserError(
            f"calling {target} raised {type(exc).__name__}: {_one_line(exc)}{_where(exc.__traceback__)}"
        ) from exc
    if app is None:
        raise UserError(f"calling {target} returned None; the factory must return the application")
    return app


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"


def _where(tb: TracebackType | None) -> str:
    """' (file.py, line N)' for the innermost frame outside the import machinery."""
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith("<frozen ")]
    if not frames or frames[-1].filename == __file__:
        return ""
    return f" ({frames[-1].filename}, line {frames[-1].lineno})"


# Which interface the app speaks.


def detect_interface(app: object, *, name: str | None = None) -> Interface:
    """Tell from its signature whether *app* is WSGI, ASGI 3 or ASGI 2.

    - ASGI 3: a coroutine function, or an object whose ``__call__`` is one (partials and
      ``functools.wraps`` wrappers are seen through), taking ``(scope, receive, send)``;
      also a plain callable taking exactly three arguments (it returns the awaitable).
    - ASGI 2: a class constructed with the ``scope`` whose instances are awaited with
      ``(receive, send)``, or any callable taking just ``scope``.
    - WSGI: a callable taking ``(environ, start_response)``, including the class form of
      PEP 3333.
    - accept-style: a module (or other non-callable object) with a callable ``accept``.

    *name* (the APP argument) is used in error messages. Anything that fits none of these,
    or more than one, raises :class:`UserError` asking for ``--interface``.
    """
    label = name or "the object"
    if not callable(app) and callable(getattr(app, "accept", None)):
        return Interface.ACCEPT
    if not callable(app):
        raise UserError(f"{label} is not a WSGI or ASGI application: it is {_describe(app)}, which is not callable")
    try:
        signature = inspect.signature(app)
    except (ValueError, TypeError):
        raise UserError(f"cannot read the signature of {label}; pass --interface wsgi, asgi3 or asgi2") from None
    required, maximum = _positional_arity(signature)

    def fits(n: int) -> bool:
        return required <= n <= maximum

    if inspect.isclass(app):
        call = _class_call(app)
        if call is not None and iscoroutinefunction(call):
            if fits(1):
                return Interface.ASGI2
            if fits(0):
                raise UserError(f"{label} is an ASGI application class, not an application; create one: {label}()")
        elif fits(2):
            return Interface.WSGI
        raise UserError(f"{label} is a class that is not a WSGI or ASGI application (its __init__ is {signature})")

    if _is_async(app):
        if fits(3):
            return Interface.ASGI3
        raise UserError(f"{label} is async but does not take (scope, receive, send); its signature is {signature}")

    interfaces: dict[int, Interface] = {1: Interface.ASGI2, 2: Interface.WSGI, 3: Interface.ASGI3}
    candidates = [interfaces[n] for n in interfaces if fits(n)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(
            f"{label} is not a WSGI or ASGI application: it takes {signature}, not (environ, start_response) "
            "or (scope, receive, send)"
        )
    raise UserError(
        f"cannot tell whether {label}{signature} is {' or '.join(candidates)}; pass --interface {candidates[0]}"
    )


def _positional_arity(signature: inspect.Signature) -> tuple[int, float]:
    """How many positional arguments a call may take: (at least, at most)."""
    required, maximum = 0, 0.0
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            maximum += 1
            required += param.default is param.empty
        elif param.kind is param.VAR_POSITIONAL:
            maximum = math.inf
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            return 1, 0  # cannot be called with positional arguments only
    return required, maximum


def _class_call(cls: type) -> object | None:
    """The ``__call__`` a class defines for its instances, if any."""
    for klass in cls.__mro__:
        if klass is not object and "__call__" in vars(klass):
            call: object = vars(klass)["__call__"]
            return call
    return None


def _is_async(app: object) -> bool:
    target = app
    while isinstance(target, functools.partial):
        target = target.func
    if iscoroutinefunction(target):
        return True
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isclass(target):
        return False
    call = _class_call(type(target))  # an instance: is its class's __call__ a coroutine function?
    return call is not None and iscoroutinefunction(call)


def _describe(obj: object) -> str:
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, ModuleType):
        return f"module {obj.__name__}"
    return f"{reprlib.repr(obj)} (type {type(obj).__qualname__})"
