"""Logging on real server processes: --log-config, --error-log, --log-level; reopen_logs()."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from support import ROOT, free_port, process_log, run_fcgibridge

from fcgibridge.client import FastCGIClient
from fcgibridge.logs import reopen_logs

APP = "tests.apps.ops_app:app"


def wait_for_text(path: Path, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content


def test_log_config_json_sends_server_and_access_logs_to_files(tmp_path: Path) -> None:
    server_log, access_log = tmp_path / "server.log", tmp_path / "access.log"
    config = {
        "version": 1,
        "formatters": {"plain": {"format": "CUSTOM %(name)s %(message)s"}},
        "handlers": {
            "server": {"class": "logging.FileHandler", "filename": str(server_log), "formatter": "plain"},
            "access": {"class": "logging.FileHandler", "filename": str(access_log), "formatter": "plain"},
        },
        "loggers": {"fcgibridge": {"handlers": ["server"], "level": "INFO"},
                    "fcgibridge.access": {"handlers": ["access"], "level": "INFO", "propagate": False}},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--log-config", str(path), "--access-log", str(tmp_path / "a2.log"),
                        address=address):
        FastCGIClient(address).request("GET", "/pid")
        assert "CUSTOM fcgibridge.access 127.0.0.1" in wait_for_text(access_log, "GET /pid")
    assert "CUSTOM fcgibridge.server worker ready" in server_log.read_text()


def test_log_config_toml_and_ini(tmp_path: Path) -> None:
    out = tmp_path / "toml.log"
    toml = tmp_path / "logging.toml"
    toml.write_text(f'[logging]\nversion = 1\n[logging.handlers.f]\nclass = "logging.FileHandler"\n'
                    f'filename = "{out}"\n[logging.loggers.fcgibridge]\nhandlers = ["f"]\n')
    ini_out = tmp_path / "ini.log"
    ini = tmp_path / "logging.ini"
    ini.write_text("[loggers]\nkeys=root,fb\n[handlers]\nkeys=f\n[formatters]\nkeys=\n"
                   "[logger_root]\nhandlers=\n[logger_fb]\nqualname=fcgibridge\nhandlers=f\n"
                   f"[handler_f]\nclass=FileHandler\nargs=('{ini_out}',)\n")
    for path, target in ((toml, out), (ini, ini_out)):
        address = f"127.0.0.1:{free_port()}"
        with run_fcgibridge(APP, "-b", address, "--log-config", str(path), address=address):
            assert "worker ready" in wait_for_text(target, "worker ready")


def test_bad_log_config_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}')
    for arg in (str(bad), str(tmp_path / "missing.json")):
        result = subprocess.run([sys.executable, "-m", "fcgibridge", APP, "--log-config", arg], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert result.stderr.startswith("fcgibridge: error: --log-config") and "Traceback" not in result.stderr


def test_error_log_and_log_level(tmp_path: Path) -> None:
    errlog = tmp_path / "error.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--error-log", str(errlog), address=address) as proc:
        assert "listening on" in wait_for_text(errlog, "worker ready")
        assert "listening on" not in process_log(proc)
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--log-level", "warning", env={"ERRLOG": str(errlog)},
                        address=address):
        pass
    assert errlog.read_text().count("listening on") == 1  # the second server logs warnings only


def test_reopen_logs_reopens_file_handlers(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    logger = logging.getLogger("fcgibridge.test_reopen")
    handler = logging.FileHandler(path)
    logger.addHandler(handler)
    try:
        logger.warning("one")
        path.rename(tmp_path / "app.log.1")
        reopen_logs()
        logger.warning("two")
        handler.flush()
        assert path.read_text() == "two\n"
        assert (tmp_path / "app.log.1").read_text() == "one\n"
    finally:
        logger.removeHandler(handler)
        handler.close()
