"""Config loading: the parser generated from the fields, env vars, TOML files, precedence, errors."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fcgibridge.config import Config, build_parser, load_config, parse_socket_mode
from fcgibridge.errors import UserError


def load(tmp_path: Path, *argv: str, env: dict[str, str] | None = None, app: bool = True) -> Config:
    return load_config([*argv, "x:app"] if app else list(argv), env or {}, tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def error(tmp_path: Path, *argv: str, env: dict[str, str] | None = None, app: bool = True) -> str:
    with pytest.raises(UserError) as info:
        load(tmp_path, *argv, env=env, app=app)
    message = str(info.value)
    assert "\n" not in message
    return message


# The parser is generated from the fields.


def test_every_field_is_on_the_command_line() -> None:
    parser = build_parser()
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in dataclasses.fields(Config)} <= dests


def test_help_lists_flags_metavars_choices_and_defaults() -> None:
    text = build_parser().format_help()
    for piece in ("-w N, --workers N", "-b ADDRESS, --bind ADDRESS", "--log-level {critical,error,warning,info,debug}",
                  "--socket-mode MODE", "(default: 1024)", "FCGIBRIDGE_NAME", "APP"):
        assert piece in text


def test_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == Config(app="x:app")


def test_command_line_types(tmp_path: Path) -> None:
    config = load(tmp_path, "-w", "4", "--graceful-timeout", "2.5", "-b", "unix:/a", "--bind", "127.0.0.1:9000",
                  "--log-level", "debug", "--socket-mode", "600")
    assert config.workers == 4
    assert config.graceful_timeout == 2.5
    assert config.bind == ["unix:/a", "127.0.0.1:9000"]
    assert config.log_level == "debug"
    assert config.socket_mode == "600"


def test_app_may_come_after_options_or_before(tmp_path: Path) -> None:
    assert load_config(["x:app", "-w", "2"], {}, tmp_path).workers == 2
    assert load_config(["-w", "2", "x:app"], {}, tmp_path).app == "x:app"


# Environment variables.


def test_environment(tmp_path: Path) -> None:
    config = load(tmp_path, env={
        "FCGIBRIDGE_WORKERS": "4",
        "FCGIBRIDGE_BIND": "unix:/a 127.0.0.1:9000,[::1]:9000",
        "FCGIBRIDGE_GRACEFUL_TIMEOUT": "1.5",
        "FCGIBRIDGE_ROOT_PATH": "/blog",
        "PATH": "/usr/bin",
    })
    assert config.workers == 4
    assert config.bind == ["unix:/a", "127.0.0.1:9000", "[::1]:9000"]
    assert config.graceful_timeout == 1.5
    assert config.root_path == "/blog"


def test_app_from_the_environment(tmp_path: Path) -> None:
    assert load(tmp_path, env={"FCGIBRIDGE_APP": "env:app"}, app=False).app == "env:app"


def test_web_concurrency(tmp_path: Path) -> None:
    assert load(tmp_path, env={"WEB_CONCURRENCY": "3"}).workers == 3


def test_own_variable_beats_web_concurrency(tmp_path: Path) -> None:
    assert load(tmp_path, env={"WEB_CONCURRENCY": "3", "FCGIBRIDGE_WORKERS": "5"}).workers == 5


@pytest.mark.parametrize("var", ["WEB_CONCURRENCY", "FCGIBRIDGE_WORKERS", "FCGIBRIDGE_LOG_LEVEL"])
def test_empty_variable_counts_as_unset(tmp_path: Path, var: str) -> None:
    assert load(tmp_path, env={var: " "}) == Config(app="x:app")


# Config files.


def test_fcgibridge_toml(tmp_path: Path) -> None:
    write(tmp_path / "fcgibridge.toml", """
        app = "file:app"
        workers = 2
        max-body-size = 1000
        graceful_timeout = 5
        bind = ["unix:/a", "127.0.0.1:9001"]
    """)
    config = load(tmp_path, app=False)
    assert (config.app, config.workers, config.max_body_size) == ("file:app", 2, 1000)
    assert config.graceful_timeout == 5.0 and isinstance(config.graceful_timeout, float)
    assert config.bind == ["unix:/a", "127.0.0.1:9001"]
    assert config.config == str(tmp_path / "fcgibridge.toml")


def test_single_string_for_a_list(tmp_path: Path) -> None:
    write(tmp_path / "fcgibridge.toml", 'bind = "unix:/a"\n')
    assert load(tmp_path).bind == ["unix:/a"]


def test_pyproject_table(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", """
        [project]
        name = "site"

        [tool.fcgibridge]
        threads = 3
    """)
    config = load(tmp_path)
    assert config.threads == 3
    assert config.config == str(tmp_path / "pyproject.toml")


def test_pyproject_without_the_table_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.black]\nline-length = 100\n')
    assert load(tmp_path) == Config(app="x:app")


def test_fcgibridge_toml_beats_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.fcgibridge]\nthreads = 3\nworkers = 9\n")
    write(tmp_path / "fcgibridge.toml", "threads = 4\n")
    config = load(tmp_path)
    assert (config.threads, config.workers) == (4, 1)


def test_explicit_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "prod.toml", "threads = 5\n")
    write(tmp_path / "fcgibridge.toml", "threads = 4\n")
    config = load(tmp_path, "-c", "conf/prod.toml")
    assert config.threads == 5
    assert config.config == str(tmp_path / "conf" / "prod.toml")


def test_explicit_pyproject_reads_its_table(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "pyproject.toml", "[tool.fcgibridge]\nthreads = 6\n")
    assert load(tmp_path, "--config", "sub/pyproject.toml").threads == 6


def test_file_named_by_the_environment(tmp_path: Path) -> None:
    write(tmp_path / "other.toml", "threads = 7\n")
    assert load(tmp_path, env={"FCGIBRIDGE_CONFIG": "other.toml"}).threads == 7


def test_command_line_file_beats_environment_file(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "threads = 7\n")
    write(tmp_path / "b.toml", "threads = 8\n")
    assert load(tmp_path, "-c", "b.toml", env={"FCGIBRIDGE_CONFIG": "a.toml"}).threads == 8


# Precedence: defaults < file < environment < command line.


@pytest.mark.parametrize(
    ("file", "env", "argv", "expected"),
    [
        (False, False, False, 1),
        (True, False, False, 2),
        (True, True, False, 3),
        (True, True, True, 4),
        (False, True, True, 4),
        (True, False, True, 4),
        (False, True, False, 3),
    ],
)
def test_precedence(tmp_path: Path, file: bool, env: bool, argv: bool, expected: int) -> None:
    if file:
        write(tmp_path / "fcgibridge.toml", "workers = 2\n")
    environ = {"FCGIBRIDGE_WORKERS": "3"} if env else {}
    args = ["-w", "4"] if argv else []
    assert load(tmp_path, *args, env=environ).workers == expected


def test_precedence_per_option(tmp_path: Path) -> None:
    write(tmp_path / "fcgibridge.toml", 'workers = 2\nthreads = 2\nlog-level = "error"\nbind = ["unix:/file"]\n')
    config = load(tmp_path, "--threads", "4", "-b", "unix:/cli",
                  env={"FCGIBRIDGE_WORKERS": "3", "FCGIBRIDGE_THREADS": "3"})
    assert (config.workers, config.threads, config.log_level) == (3, 4, "error")
    assert config.bind == ["unix:/cli"]  # replaced, not appended to


def test_web_concurrency_beats_the_file(tmp_path: Path) -> None:
    write(tmp_path / "fcgibridge.toml", "workers = 2\n")
    assert load(tmp_path, env={"WEB_CONCURRENCY": "6"}).workers == 6


# Mistakes.


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path / "fcgibridge.toml", "wrokers = 2\n")
    assert error(tmp_path) == f"{path}: unknown option 'wrokers'; did you mean 'workers'?"


def test_unknown_dashed_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path / "fcgibridge.toml", "max-conections = 2\n")
    assert error(tmp_path) == f"{path}: unknown option 'max-conections'; did you mean 'max_connections'?"


def test_unknown_key_without_a_close_one_lists_them(tmp_path: Path) -> None:
    write(tmp_path / "fcgibridge.toml", "[quux]\nport = 1\n")
    message = error(tmp_path)
    assert "unknown option 'quux'; the known ones are access_log, access_log_format, allow_from, app," in message


def test_unknown_key_in_pyproject(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", "[tool.fcgibridge]\nthread = 2\n")
    assert error(tmp_path) == f"{path}: unknown option 'thread'; did you mean 'threads'?"


def test_config_key_inside_a_file(tmp_path: Path) -> None:
    write(tmp_path / "fcgibridge.toml", 'config = "other.toml"\n')
    assert "'config' cannot be set inside a config file; use -c FILE" in error(tmp_path)


def warnings_for(tmp_path: Path, env: dict[str, str]) -> tuple[Config, list[str]]:
    said: list[str] = []
    return load_config(["x:app"], env, tmp_path, warn=said.append), said


def test_unknown_environment_variable_is_a_warning_naming_the_closest(tmp_path: Path) -> None:
    config, said = warnings_for(tmp_path, {"FCGIBRIDGE_WORKER": "2", "FCGIBRIDGE_THREADS": "3"})
    assert said == ["ignoring unknown environment variable FCGIBRIDGE_WORKER; did you mean FCGIBRIDGE_WORKERS?"]
    assert config.workers == Config(app="x:app").workers
    assert config.threads == 3


def test_unknown_environment_variable_without_a_close_one(tmp_path: Path) -> None:
    _, said = warnings_for(tmp_path, {"FCGIBRIDGE_XYZZY": "1"})
    assert len(said) == 1
    assert said[0].startswith("ignoring unknown environment variable FCGIBRIDGE_XYZZY; the known ones are "
                              "FCGIBRIDGE_ACCESS_LOG,")


def test_the_build_switch_is_no_option_and_no_warning(tmp_path: Path) -> None:
    config, said = warnings_for(tmp_path, {"FCGIBRIDGE_COMPILE": "1"})
    assert said == []
    assert config == Config(app=config.app)


def test_service_variables_of_kubernetes_and_docker_get_one_line(tmp_path: Path) -> None:
    """Kubernetes sets these in every pod of a namespace with a Service named fcgibridge."""
    service = {
        "FCGIBRIDGE_SERVICE_HOST": "10.0.0.7",
        "FCGIBRIDGE_SERVICE_PORT": "9000",
        "FCGIBRIDGE_SERVICE_PORT_FASTCGI": "9000",
        "FCGIBRIDGE_PORT": "tcp://10.0.0.7:9000",
        "FCGIBRIDGE_PORT_9000_TCP": "tcp://10.0.0.7:9000",
        "FCGIBRIDGE_PORT_9000_TCP_PROTO": "tcp",
        "FCGIBRIDGE_PORT_9000_TCP_PORT": "9000",
        "FCGIBRIDGE_PORT_9000_TCP_ADDR": "10.0.0.7",
    }
    config, said = warnings_for(tmp_path, {**service, "FCGIBRIDGE_WORKERS": "3"})
    assert config.workers == 3
    assert len(said) == 1, said
    assert said[0].startswith("ignoring FCGIBRIDGE_PORT, FCGIBRIDGE_PORT_9000_TCP, ")
    assert all(var in said[0] for var in service)
    assert "Kubernetes" in said[0]


def test_unknown_command_line_option_suggests_the_closest(tmp_path: Path) -> None:
    assert error(tmp_path, "--wrokers", "2") == "unrecognized argument '--wrokers'; did you mean --workers?"


def test_options_are_not_abbreviated(tmp_path: Path) -> None:
    assert error(tmp_path, "--work", "2").startswith("unrecognized argument '--work'")


def test_extra_positional_argument(tmp_path: Path) -> None:
    assert error(tmp_path, "other:app").startswith("unrecognized argument 'x:app' (see fcgibridge --help)")


@pytest.mark.parametrize(
    ("argv", "env", "toml", "message"),
    [
        (["-w", "0"], {}, "", "argument -w/--workers: must be at least 1, got 0"),
        ([], {"FCGIBRIDGE_WORKERS": "0"}, "", "FCGIBRIDGE_WORKERS: must be at least 1, got 0"),
        ([], {"WEB_CONCURRENCY": "0"}, "", "WEB_CONCURRENCY: must be at least 1, got 0"),
        ([], {}, "workers = 0", "fcgibridge.toml: workers: must be at least 1, got 0"),
        (["-w", "abc"], {}, "", "argument -w/--workers: must be an integer, got 'abc'"),
        ([], {"FCGIBRIDGE_WORKERS": "abc"}, "", "FCGIBRIDGE_WORKERS: must be an integer, got 'abc'"),
        ([], {"WEB_CONCURRENCY": "four"}, "", "WEB_CONCURRENCY: must be an integer, got 'four'"),
        ([], {}, 'workers = "abc"', "fcgibridge.toml: workers: must be an integer, got 'abc'"),
        ([], {}, "workers = 1.5", "fcgibridge.toml: workers: must be an integer, got 1.5"),
        ([], {}, "workers = true", "fcgibridge.toml: workers: must be an integer, got True"),
        ([], {}, "graceful-timeout = -1", "fcgibridge.toml: graceful-timeout: must be at least 0, got -1.0"),
        (["--graceful-timeout", "soon"], {}, "", "argument --graceful-timeout: must be a number, got 'soon'"),
        (["--log-level", "loud"], {}, "", "argument --log-level: must be one of critical, error, warning, info, "
                                          "debug; got 'loud'"),
        ([], {"FCGIBRIDGE_LOG_LEVEL": "loud"}, "", "FCGIBRIDGE_LOG_LEVEL: must be one of critical, error,"),
        ([], {}, 'interface = "cgi"', "fcgibridge.toml: interface: must be one of auto, wsgi, "
                                                 "asgi3, asgi2, accept, lua; got"),
        (["--socket-mode", "999"], {}, "", "argument --socket-mode: must be octal permission bits such as 660 or 600, "
                                           "got '999'"),
        ([], {"FCGIBRIDGE_SOCKET_MODE": "rw-rw----"}, "", "FCGIBRIDGE_SOCKET_MODE: must be octal permission bits"),
        ([], {}, "socket_mode = 660", "fcgibridge.toml: socket_mode: must be a string, got 660; put it in quotes"),
        ([], {}, "bind = [9000]", "fcgibridge.toml: bind: must be a string, got 9000; put it in quotes"),
        ([], {}, 'root_path = ["/a"]', "fcgibridge.toml: root_path: must be a string, got ['/a']"),
    ],
)
def test_bad_values(tmp_path: Path, argv: list[str], env: dict[str, str], toml: str, message: str) -> None:
    if toml:
        write(tmp_path / "fcgibridge.toml", toml + "\n")
    text = error(tmp_path, *argv, env=env)
    assert text.replace(f"{tmp_path}/", "").startswith(message)


def test_option_without_its_value(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^argument -w/--workers: expected one argument"):
        load_config(["x:app", "-w"], {}, tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "fcgibridge.toml", "workers = \n")
    assert error(tmp_path).startswith(f"{path}: invalid TOML: ")


def test_missing_explicit_file(tmp_path: Path) -> None:
    assert error(tmp_path, "-c", "nope.toml") == f"config file {tmp_path / 'nope.toml'} does not exist"


def test_explicit_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    assert error(tmp_path, "-c", "conf").startswith(f"cannot read config file {tmp_path / 'conf'}: ")


def test_tool_fcgibridge_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", '[tool]\nfcgibridge = "workers=2"\n')
    assert error(tmp_path) == f"{path}: tool.fcgibridge must be a table ([tool.fcgibridge])"


def test_no_app(tmp_path: Path) -> None:
    assert error(tmp_path, app=False) == (
        "no application given; run fcgibridge MODULE:APP, for example fcgibridge myproject.wsgi:app"
    )


@pytest.mark.parametrize(("text", "mode"), [("666", 0o666), ("0660", 0o660), ("0o600", 0o600), ("7", 0o7)])
def test_parse_socket_mode(text: str, mode: int) -> None:
    assert parse_socket_mode(text) == mode


@pytest.mark.parametrize("text", ["", "8", "1777", "0o", "abc", "-600", "0x1ff"])
def test_parse_socket_mode_errors(text: str) -> None:
    with pytest.raises(ValueError, match="must be octal permission bits"):
        parse_socket_mode(text)


def test_config_is_constructible_directly() -> None:
    """Other code (tests, the server) builds Config by hand; the loader adds no required fields."""
    kwargs: dict[str, Any] = {}
    assert Config(**kwargs).workers == 1
