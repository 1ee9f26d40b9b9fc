"""--reload-dir, --reload-include and --reload-exclude: which changes reload the workers."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import watchfiles
from support import ROOT, children_of, fcgibridge_command, free_port, process_log, run_fcgibridge, wait_until

from fcgibridge.errors import UserError
from fcgibridge.process.reloader import Reloader, ReloadFilter

_APP = '''
import os
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


def reloads(tmp_path: Path, path: str, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> bool:
    rule = ReloadFilter([tmp_path], include, exclude, watchfiles.DefaultFilter())
    return rule(watchfiles.Change.modified, str(tmp_path / path))


def test_python_files_reload_and_other_files_only_when_included(tmp_path: Path) -> None:
    assert reloads(tmp_path, "app.py")
    assert not reloads(tmp_path, "templates/page.html")
    assert reloads(tmp_path, "templates/page.html", include=("*.html",))
    assert reloads(tmp_path, "settings.toml", include=("*.html", "*.toml"))


def test_exclude_globs_match_names_directories_and_paths_below_the_root(tmp_path: Path) -> None:
    assert not reloads(tmp_path, "debug.log", include=("*.log",), exclude=("*.log",))
    assert not reloads(tmp_path, "node_modules/x/y.py", exclude=("node_modules",))
    assert not reloads(tmp_path, "tests/test_a.py", exclude=("tests/*",))
    assert reloads(tmp_path, "app/tests.py", exclude=("tests/*",))
    assert not reloads(tmp_path, "__pycache__/a.py")  # watchfiles' own ignores hold too


def test_a_missing_reload_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--reload-dir .*nothere: no such directory"):
        Reloader([tmp_path / "nothere"])


def test_check_config_finds_a_missing_reload_dir(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(_APP)

    def check(*dirs: Path) -> subprocess.CompletedProcess[str]:
        flags = [arg for d in dirs for arg in ("--reload-dir", str(d))]
        return subprocess.run(fcgibridge_command("app:app", "--reload", *flags, "--check-config"), cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
                              capture_output=True, text=True, timeout=30)

    missing = check(tmp_path, tmp_path / "nothere")
    assert (missing.returncode, missing.stderr) == (2, f"fcgibridge: error: --reload-dir {tmp_path}/nothere: "
                                                       "no such directory\n")
    ok = check(tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: app:app"), ok.stderr


def _worker(proc_pid: int) -> int:
    wait_until(lambda: len(children_of(proc_pid)) == 1, what="one worker")
    return next(iter(children_of(proc_pid)))


def _touch_until_logged(path: Path, proc: subprocess.Popen[Any], text: str) -> None:
    """The watcher may not watch yet on a loaded machine: write until the log says it saw one."""
    for round_ in range(10):
        path.write_text(f"change {round_}\n")
        deadline = time.monotonic() + 2
        while text not in process_log(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if text in process_log(proc):
            return
    raise AssertionError(f"no {text!r} in the log:\n{process_log(proc)}")


def test_an_included_file_in_a_second_directory_reloads_and_an_excluded_one_does_not(tmp_path: Path) -> None:
    code = tmp_path / "code"
    templates = tmp_path / "templates"
    code.mkdir()
    templates.mkdir()
    (code / "devapp.py").write_text(_APP)
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge("devapp:app", "-b", address, "--reload", "--reload-dir", str(code),
                        "--reload-dir", str(templates), "--reload-include", "*.html",
                        "--reload-exclude", "draft-*", address=address, cwd=code,
                        env={"PYTHONPATH": f"{code}{os.pathsep}{ROOT}"}) as proc:
        first = _worker(proc.pid)
        _touch_until_logged(templates / "page.html", proc, "--reload: page.html changed")
        wait_until(lambda: len(children_of(proc.pid)) == 1 and first not in children_of(proc.pid),
                   what="the worker replaced")
        second = _worker(proc.pid)
        # The watcher runs now (it saw page.html): excluded changes, and files not included, are not reloads.
        for round_ in range(10):
            (templates / "draft-page.html").write_text(f"draft {round_}\n")
            (templates / "notes.txt").write_text(f"notes {round_}\n")
            time.sleep(0.15)
        time.sleep(0.5)
        assert "draft-page.html" not in process_log(proc)
        assert "notes.txt" not in process_log(proc)
        assert children_of(proc.pid) == {second}
