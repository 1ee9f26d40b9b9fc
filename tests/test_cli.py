"""The fcgibridge command: serving, fcgibridge request, and one-line errors with exit status 2."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import free_port, process_log, run_fcgibridge

from fcgibridge import __version__, build
from fcgibridge.cli import LOG_FORMAT, configure_logging, main
from fcgibridge.client import FastCGIClient
from fcgibridge.config import Config
from fcgibridge.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("fcgibridge")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Config]:
    """Replaces fcgibridge.process with a stand-in whose run() records its config."""
    calls: list[Config] = []
    module = types.ModuleType("fcgibridge.process")

    def run(config: Config) -> int:
        calls.append(config)
        return 0

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fcgibridge.process", module)
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("FCGIBRIDGE_") or v == "WEB_CONCURRENCY"]:
        monkeypatch.delenv(var)
    return calls


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """Replaces fcgibridge.client with a stand-in whose main_request() records its arguments."""
    calls: list[argparse.Namespace] = []
    module = types.ModuleType("fcgibridge.client")

    def main_request(args: argparse.Namespace) -> int:
        calls.append(args)
        return 0

    module.main_request = main_request  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fcgibridge.client", module)
    return calls


def run_command(*args: str, cwd: Path = APPS, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m fcgibridge ARGS`` in a fresh process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FCGIBRIDGE_") and k != "WEB_CONCURRENCY"}
    environ.update(PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "fcgibridge", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fcgibridge: error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"fcgibridge: error: {message}"), result.stderr


# Serving


def test_serve_passes_the_config_to_the_server(fake_server: list[Config], tmp_path: Path) -> None:
    (tmp_path / "fcgibridge.toml").write_text("threads = 3\n")
    assert main(["-w", "2", "myapp:app"]) == 0
    (config,) = fake_server
    assert (config.app, config.workers, config.threads) == ("myapp:app", 2, 3)


def test_serve_reads_the_environment(fake_server: list[Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    assert main(["myapp:app"]) == 0
    assert fake_server[0].workers == 5


def test_serve_returns_the_servers_status(fake_server: list[Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["fcgibridge.process"], "run", lambda config: 3)
    assert main(["myapp:app"]) == 3


def test_user_error_from_the_server(
    fake_server: list[Config], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(config: Config) -> int:
        raise UserError("cannot listen on 127.0.0.1:9000: address already in use")

    monkeypatch.setattr(sys.modules["fcgibridge.process"], "run", run)
    assert main(["myapp:app"]) == 2
    assert capsys.readouterr().err == "fcgibridge: error: cannot listen on 127.0.0.1:9000: address already in use\n"


def test_config_error_does_not_start_the_server(
    fake_server: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-w", "0", "myapp:app"]) == 2
    assert capsys.readouterr().err == (
        "fcgibridge: error: argument -w/--workers: must be at least 1, got 0 (see fcgibridge --help)\n"
    )
    assert fake_server == []


def test_no_app(fake_server: list[Config], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("fcgibridge: error: no application given; run fcgibridge MODULE:APP")


def test_logging_is_configured(fake_server: list[Config], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "debug", "myapp:app"]) == 0
    logger = logging.getLogger("fcgibridge")
    assert logger.level == logging.DEBUG
    logging.getLogger("fcgibridge.server").debug("hello %s", "there")
    line = capsys.readouterr().err.strip()
    assert line.endswith(f"] [{os.getpid()}] [DEBUG] hello there")
    assert line.startswith("[")


def test_configure_logging_twice_keeps_one_handler() -> None:
    configure_logging("info")
    configure_logging("warning")
    logger = logging.getLogger("fcgibridge")
    ours = [h for h in logger.handlers if h.get_name() == "fcgibridge.cli"]
    assert len(ours) == 1
    assert ours[0].formatter is not None and ours[0].formatter._fmt == LOG_FORMAT
    assert logger.level == logging.WARNING


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"fcgibridge {__version__} ({build()})\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fcgibridge ")
    assert "--workers" in out and "fcgibridge request --help" in out


def test_argv_defaults_to_sys_argv(fake_server: list[Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["fcgibridge", "from:argv"])
    assert main() == 0
    assert fake_server[0].app == "from:argv"


# fcgibridge request


def test_request_arguments(fake_client: list[argparse.Namespace], tmp_path: Path) -> None:
    assert main([
        "request", "unix:/run/php-fpm.sock", "/index.php?a=1", "-X", "PUT", "-H", "Accept: text/html",
        "--header", "X-Token:abc", "-d", "name=x", "--param", "HTTPS=on", "--param", "EMPTY=",
        "--script-filename", "/srv/www/index.php", "-i", "--timeout", "2.5",
    ]) == 0
    (args,) = fake_client
    assert args.addr == "unix:/run/php-fpm.sock"
    assert args.path == "/index.php?a=1"
    assert args.method == "PUT"
    assert args.header == ["Accept: text/html", "X-Token:abc"]
    assert args.data == "name=x"
    assert args.param == ["HTTPS=on", "EMPTY="]
    assert args.script_filename == "/srv/www/index.php"
    assert args.include is True
    assert args.timeout == 2.5


def test_request_defaults(fake_client: list[argparse.Namespace]) -> None:
    assert main(["request", "127.0.0.1:9000"]) == 0
    (args,) = fake_client
    assert (args.path, args.method, args.header, args.data, args.param) == ("/", None, [], None, [])
    assert (args.script_filename, args.include, args.timeout) == (None, False, 10.0)


def test_request_data_from_a_file(fake_client: list[argparse.Namespace], tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    assert main(["request", "127.0.0.1:9000", "-d", f"@{body}"]) == 0
    assert fake_client[0].data == f"@{body}"


def test_request_status_is_the_clients(fake_client: list[argparse.Namespace], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["fcgibridge.client"], "main_request", lambda args: 1)
    assert main(["request", "127.0.0.1:9000"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "request: the following arguments are required: ADDR (see fcgibridge request --help)"),
        (["a:1", "-H", "Accept"], "request: header 'Accept' must look like 'Name: value'"),
        (["a:1", "-H", ": value"], "request: header ': value' must look like 'Name: value'"),
        (["a:1", "--param", "HTTPS"], "request: --param 'HTTPS' must look like NAME=VALUE"),
        (["a:1", "--param", "=on"], "request: --param '=on' must look like NAME=VALUE"),
        (["a:1", "-d", "@/nonexistent/body"], "request: --data @/nonexistent/body: /nonexistent/body is not a readable "
                                              "file"),
        (["a:1", "--timeout", "0"], "request: argument --timeout: must be more than 0 seconds, got '0'"),
        (["a:1", "--timeout", "soon"], "request: argument --timeout: must be a number of seconds, got 'soon'"),
        (["a:1", "--nope"], "request: unrecognized arguments: --nope"),
        (["a:1", "/", "extra"], "request: unrecognized arguments: extra"),
    ],
)
def test_request_mistakes(
    fake_client: list[argparse.Namespace], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["request", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fcgibridge: error: {message}")
    assert err.count("\n") == 1
    assert fake_client == []


def test_request_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["request", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fcgibridge request ")
    for flag in ("-X", "-H", "-d", "--param", "--script-filename", "-i", "--timeout"):
        assert flag in out


# The real command, in a fresh process: no traceback, exit status 2.


def test_command_module_not_found() -> None:
    result = run_command("fbapp_nope:app", "-b", "127.0.0.1:0")
    assert_one_line_error(result, "no module named 'fbapp_nope'; check the spelling and the current directory")


def test_command_module_raising_import_error() -> None:
    result = run_command("fbapp_broken_import:app", "-b", "127.0.0.1:0")
    assert_one_line_error(
        result, "module 'fbapp_broken_import' was found, but importing it raised ModuleNotFoundError: "
    )


def test_command_syntax_error() -> None:
    result = run_command("fbapp_syntax_error:app", "-b", "127.0.0.1:0")
    assert_one_line_error(result, "cannot import 'fbapp_syntax_error': syntax error in ")


def test_command_factory_raises() -> None:
    result = run_command("fbapp_factory:failing()", "-b", "127.0.0.1:0")
    assert_one_line_error(result, "calling failing() raised RuntimeError: DATABASE_URL is not set")


def test_command_non_literal_factory_argument() -> None:
    result = run_command("fbapp_factory:create_app(__import__('os').getcwd())", "-b", "127.0.0.1:0")
    assert_one_line_error(result, "the arguments in ")


def test_command_not_an_app() -> None:
    result = run_command("fbapp_wsgi:settings", "-b", "127.0.0.1:0")
    assert_one_line_error(result, "")
    assert "is not a WSGI or ASGI application" in result.stderr


def test_command_bad_config_value() -> None:
    assert_one_line_error(run_command("-w", "0", "fbapp_wsgi:app"), "argument -w/--workers: must be at least 1, got 0")


def test_command_unknown_config_key(tmp_path: Path) -> None:
    (tmp_path / "fcgibridge.toml").write_text("wrokers = 2\n")
    result = run_command("fbapp_wsgi:app", cwd=tmp_path)
    assert_one_line_error(result, f"{tmp_path}/fcgibridge.toml: unknown option 'wrokers'; did you mean 'workers'?")


def test_command_unknown_environment_variable_warns_and_goes_on() -> None:
    env = {"FCGIBRIDGE_WROKERS": "2", "FCGIBRIDGE_PORT": "tcp://10.0.0.7:9000",
           "FCGIBRIDGE_SERVICE_HOST": "10.0.0.7"}
    result = run_command("--check-config", "fbapp_wsgi:app", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "fcgibridge: warning: ignoring FCGIBRIDGE_PORT, FCGIBRIDGE_SERVICE_HOST: not fcgibridge options "
        "(Kubernetes and Docker set such variables for a service named fcgibridge)",
        "fcgibridge: warning: ignoring unknown environment variable FCGIBRIDGE_WROKERS; "
        "did you mean FCGIBRIDGE_WORKERS?",
    ]
    assert result.stdout.startswith("OK: fbapp_wsgi:app")


def test_command_serves_with_kubernetes_service_variables() -> None:
    """A Service named fcgibridge must not crash-loop the pods beside it."""
    address = f"127.0.0.1:{free_port()}"
    env = {"FCGIBRIDGE_PORT": "tcp://10.0.0.7:9000", "FCGIBRIDGE_PORT_9000_TCP_ADDR": "10.0.0.7"}
    with run_fcgibridge("fbapp_wsgi:app", "-b", address, address=address, cwd=APPS, env=env) as proc:
        assert FastCGIClient(address).request("/").status == 200
        assert "warning: ignoring FCGIBRIDGE_PORT, FCGIBRIDGE_PORT_9000_TCP_ADDR" in process_log(proc)


def test_command_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command("fbapp_wsgi:app", "-b", f"127.0.0.1:{port}")
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: address already in use")


def test_command_bad_bind_address() -> None:
    assert_one_line_error(run_command("fbapp_wsgi:app", "-b", "9000"), "bind address '9000' has no port")


def test_command_version() -> None:
    result = run_command("--version")
    assert result.returncode == 0
    assert result.stdout == f"fcgibridge {__version__} ({build()})\n"


def test_command_request_mistake() -> None:
    assert_one_line_error(run_command("request", "127.0.0.1:9000", "-H", "Accept"), "request: header 'Accept'")


def test_console_script_entry_point() -> None:
    """pyproject's [project.scripts] points at cli:main."""
    import tomllib

    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["fcgibridge"] == "fcgibridge.cli:main"
