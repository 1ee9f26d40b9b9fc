"""App loading (every accepted form and every failure) and interface detection."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fcgibridge.errors import UserError
from fcgibridge.importer import detect_interface, load_app

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test imports the fixture apps afresh and leaves sys.path as it found it."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def load(spec: str, cwd: Path = APPS) -> Any:
    return load_app(spec, cwd=cwd)


def error(spec: str, cwd: Path = APPS) -> str:
    with pytest.raises(UserError) as info:
        load_app(spec, cwd=cwd)
    message = str(info.value)
    assert "\n" not in message
    return message


# Forms that load.


def test_module_attr() -> None:
    app = load("fbapp_wsgi:app")
    assert app is sys.modules["fbapp_wsgi"].app


def test_module_attr_chain() -> None:
    assert load("fbapp_wsgi:ns.inner.app") is sys.modules["fbapp_wsgi"].app


def test_module_only_finds_app_then_application() -> None:
    assert load("fbapp_wsgi") is sys.modules["fbapp_wsgi"].app
    assert load("fbapp_default_name") is sys.modules["fbapp_default_name"].application


def test_factory_without_arguments() -> None:
    app = load("fbapp_factory:create_app()")
    assert app.name == "default"
    assert app.debug is False


def test_factory_with_literal_arguments() -> None:
    app = load("fbapp_factory:create_app('x', debug=True, options={'a': [1, 2.5, None]})")
    assert (app.name, app.debug, app.options) == ("x", True, {"a": [1, 2.5, None]})


def test_factory_argument_may_contain_a_colon() -> None:
    assert load("fbapp_factory:create_app('a:b')").name == "a:b"


def test_factory_reached_through_attributes() -> None:
    assert load("fbapp_factory:api.create()").name == "from api"


def test_factory_is_called_on_each_load() -> None:
    assert load("fbapp_factory:create_app()") is not load("fbapp_factory:create_app()")


def test_whitespace_around_spec_is_ignored() -> None:
    assert load("  fbapp_factory: create_app( 'y' ) ").name == "y"


def test_dotted_module() -> None:
    assert load("fbpkg.sub.site_app:app")([], lambda *a: None) == [b"from a package file"]


def test_file_path() -> None:
    app = load("scripts/fb_file_app.py:app")
    assert app({}, lambda *a: None) == [b"file"]
    assert str(APPS / "scripts") in sys.path


def test_file_path_without_attribute_uses_the_default_names() -> None:
    assert load("scripts/fb_file_app.py").__name__ == "app"


def test_absolute_file_path(tmp_path: Path) -> None:
    assert load(f"{APPS}/scripts/fb_file_app.py:application", cwd=tmp_path).__name__ == "app"


def test_file_inside_a_package_imports_as_part_of_it() -> None:
    app = load("fbpkg/sub/site_app.py:app")
    assert app.__module__ == "fbpkg.sub.site_app"
    assert app({}, lambda *a: None) == [b"from a package file"]


def test_cwd_goes_on_sys_path(tmp_path: Path) -> None:
    (tmp_path / "fbapp_in_cwd.py").write_text("app = object()\n")
    assert load("fbapp_in_cwd:app", cwd=tmp_path) is sys.modules["fbapp_in_cwd"].app
    assert sys.path[0] == str(tmp_path.resolve())


# Failures, each named precisely.


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", "no module in the application ''"),
        (":app", "no module in the application ':app'"),
        ("fbapp_wsgi:", "nothing after the colon in 'fbapp_wsgi:'; name the application, for example fbapp_wsgi:app"),
        ("fbapp_wsgi:app(", "cannot parse 'app(' in 'fbapp_wsgi:app('"),
        ("fbapp_wsgi:1 + 2", "cannot use '1 + 2'"),
        ("fbapp_wsgi:apps[0]", "cannot use 'apps[0]'"),
        ("fbapp_wsgi:a()()", "cannot use 'a()()'"),
        ("fbapp_wsgi:'app'", "cannot use \"'app'\""),
        (".fbapp_wsgi:app", "'.fbapp_wsgi' is not a module name"),
        ("fbpkg..sub:app", "'fbpkg..sub' is not a module name"),
    ],
)
def test_bad_spec(spec: str, expected: str) -> None:
    assert expected in error(spec)


@pytest.mark.parametrize(
    "args",
    ["os.environ['X']", "x", "open('f')", "[x for x in 'ab']", "name=__import__('os')", "f'{x}'"],
)
def test_factory_arguments_must_be_literals(args: str) -> None:
    message = error(f"fbapp_factory:create_app({args})")
    assert "must be Python literals" in message
    assert "fbapp_factory" not in sys.modules  # refused before importing anything


def test_star_arguments_are_refused() -> None:
    assert "*arguments are not supported" in error("fbapp_factory:create_app(*['a'])")
    assert "**arguments are not supported" in error("fbapp_factory:create_app(**{'debug': True})")


def test_module_not_found() -> None:
    assert error("fbapp_nope:app") == "no module named 'fbapp_nope'; check the spelling and the current directory"


def test_package_not_found() -> None:
    assert error("fbnopkg.wsgi:app") == "no module named 'fbnopkg'"


def test_submodule_not_found() -> None:
    message = error("fbpkg.sub.nope:app")
    assert message == "no module named 'fbpkg.sub.nope'; check the spelling and the current directory"


def test_module_raising_module_not_found_inside_is_told_apart() -> None:
    message = error("fbapp_broken_import:app")
    assert message.startswith(
        "module 'fbapp_broken_import' was found, but importing it raised ModuleNotFoundError: "
        "No module named 'fbapp_missing_dependency'"
    )
    assert message.endswith(f"({APPS / 'fbapp_broken_import.py'}, line 3)")


def test_module_raising_import_error_inside() -> None:
    message = error("fbapp_bad_name_import:app")
    assert message.startswith("module 'fbapp_bad_name_import' was found, but importing it raised ImportError: ")
    assert "cannot import name 'no_such_name'" in message


def test_syntax_error() -> None:
    assert error("fbapp_syntax_error:app") == (
        f"cannot import 'fbapp_syntax_error': syntax error in {APPS / 'fbapp_syntax_error.py'}, "
        "line 4: 'return' outside function"
    )


def test_parse_error_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "fbapp_typo.py").write_text("def app(environ, start_response:\n    pass\n")
    message = error("fbapp_typo.py:app", cwd=tmp_path)
    assert message.startswith(f"cannot import 'fbapp_typo': syntax error in {tmp_path.resolve() / 'fbapp_typo.py'}")


def test_module_raising_while_imported() -> None:
    message = error("fbapp_raises:app")
    assert message.startswith("importing 'fbapp_raises' raised RuntimeError: config file /etc/myapp.ini is missing (")
    assert "fbapp_raises.py, line 3)" in message


def test_error_keeps_the_original_exception_as_cause() -> None:
    with pytest.raises(UserError) as info:
        load("fbapp_raises:app")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_no_attribute() -> None:
    assert error("fbapp_wsgi:nope") == "module 'fbapp_wsgi' has no attribute 'nope'"


def test_no_attribute_suggests_a_close_name() -> None:
    assert error("fbapp_wsgi:apq") == "module 'fbapp_wsgi' has no attribute 'apq'; did you mean 'app'?"


def test_no_attribute_deeper_in_the_chain() -> None:
    assert error("fbapp_wsgi:ns.inner.nope") == "'ns.inner' has no attribute 'nope'"


def test_module_without_default_names() -> None:
    assert error("fbapp_asgi2") == (
        "module 'fbapp_asgi2' has no attribute 'app' or 'application' and no accept function; "
        "name the application: fbapp_asgi2:NAME"
    )


def test_factory_raises() -> None:
    message = error("fbapp_factory:failing()")
    assert message.startswith("calling failing() raised RuntimeError: DATABASE_URL is not set (")
    assert "fbapp_factory.py, line 16)" in message


def test_factory_called_with_wrong_arguments() -> None:
    message = error("fbapp_factory:create_app(1, 2, 3)")
    assert message.startswith("calling create_app(1, 2, 3) raised TypeError: ")


def test_factory_returns_none() -> None:
    assert error("fbapp_factory:returns_none()") == (
        "calling returns_none() returned None; the factory must return the application"
    )


def test_calling_something_not_callable() -> None:
    assert error("fbapp_factory:not_callable()") == (
        "'not_callable' in module 'fbapp_factory' is not callable, so 'fbapp_factory:not_callable()' cannot call it"
    )


def test_file_not_found() -> None:
    assert error("scripts/nope.py:app") == f"file scripts/nope.py does not exist (looked in {APPS})"


def test_path_that_is_not_a_python_file() -> None:
    assert error("scripts/app.txt:app") == "scripts/app.txt is not a .py file; write path/to/file.py:APP or module:APP"


def test_lua_script_is_refused_clearly() -> None:
    assert "is a Lua script" in error("scripts/app.lua")


def test_package_init_file_imports_the_package() -> None:
    assert error("fbpkg/__init__.py:app") == "module 'fbpkg' has no attribute 'app'"


def test_file_shadowed_by_an_already_imported_module(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("app = 1\n")
    message = error("json.py:app", cwd=tmp_path)
    assert message.startswith("json.py imports as module 'json', but that name is already taken by ")
    assert message.endswith("; rename the file")


# Interface detection.


@pytest.mark.parametrize(
    ("spec", "interface"),
    [
        ("fbapp_wsgi:app", "wsgi"),
        ("fbapp_wsgi:instance", "wsgi"),
        ("fbapp_wsgi:ClassApp", "wsgi"),
        ("fbapp_asgi3:app", "asgi3"),
        ("fbapp_asgi3:instance", "asgi3"),
        ("fbapp_asgi3:partial_app", "asgi3"),
        ("fbapp_asgi3:partial_instance", "asgi3"),
        ("fbapp_asgi3:sync_wrapper", "asgi3"),
        ("fbapp_asgi2:App", "asgi2"),
        ("fbapp_asgi2:factory_style", "asgi2"),
        ("fbapp_factory:create_app()", "wsgi"),
    ],
)
def test_detect_interface(spec: str, interface: str) -> None:
    assert detect_interface(load(spec)) == interface


def test_detect_sees_through_wrappers() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    @functools.wraps(app)
    def wrapper(*args: object) -> object:
        return app(*args)

    assert detect_interface(wrapper) == "asgi3"
    assert detect_interface(functools.partial(functools.partial(app))) == "asgi3"


def test_detect_real_frameworks() -> None:
    import flask
    import starlette.applications as starlette
    assert detect_interface(flask.Flask("x")) == "wsgi"
    assert detect_interface(starlette.Starlette()) == "asgi3"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "fbapp_wsgi:settings",
            "fbapp_wsgi:settings is not a WSGI or ASGI application: it is {'debug': True} (type dict), "
            "which is not callable",
        ),
        ("fbapp_wsgi:too_many", "fbapp_wsgi:too_many is not a WSGI or ASGI application: it takes (a, b, c, d)"),
        ("fbapp_wsgi:keyword_only", "is not a WSGI or ASGI application: it takes (environ, start_response, *, "),
        ("fbapp_wsgi:ambiguous", "cannot tell whether fbapp_wsgi:ambiguous(a, b=None, c=None) is asgi2 or wsgi or "
                                 "asgi3; pass --interface asgi2"),
        ("fbapp_wsgi:varargs", "cannot tell whether"),
        ("fbapp_wsgi:with_default", "cannot tell whether fbapp_wsgi:with_default(environ, start_response, extra=None) "
                                    "is wsgi or asgi3; pass --interface wsgi"),
        ("fbapp_asgi3:wrong_arity", "fbapp_asgi3:wrong_arity is async but does not take (scope, receive, send)"),
        ("fbapp_asgi2:Uninstantiated", "is an ASGI application class, not an application; create one: "
                                       "fbapp_asgi2:Uninstantiated()"),
    ],
)
def test_detect_interface_failures(spec: str, expected: str) -> None:
    with pytest.raises(UserError) as info:
        detect_interface(load(spec), name=spec)
    assert expected in str(info.value)


def test_detect_without_a_name_describes_the_object() -> None:
    with pytest.raises(UserError, match=r"^the object is not a WSGI or ASGI application: it is 42 \(type int\)"):
        detect_interface(42)
    load("fbapp_wsgi:app")
    with pytest.raises(UserError, match=r": it is module fbapp_wsgi, which is not callable$"):
        detect_interface(sys.modules["fbapp_wsgi"])


def test_detect_builtin_without_signature() -> None:
    with pytest.raises(UserError, match="pass --interface"):
        detect_interface(print)
