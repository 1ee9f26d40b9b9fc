"""What the report's header says about the machine and the versions of every peer."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from harness.backends import REPO_ROOT, php_fpm_binary, venv_program
from harness.nginx import NGINX

PACKAGES = ("fcgibridge", "uvicorn", "uvloop", "httptools", "gunicorn", "flup", "fcgisgi", "asgiref")


def output_line(argv: list[str]) -> str:
    """The first line a program prints (stdout or stderr), or why there is none."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    line = output_line(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"])
    return line if " " not in line else "unknown"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions(fcgibridge: tuple[str, ...]) -> dict[str, str]:
    """Every peer's version; fcgibridge's as its own --version says it (pure Python or compiled)."""
    found = {
        "nginx": output_line([NGINX, "-v"]).removeprefix("nginx version: nginx/"),
        "wrk": output_line(["wrk", "-v"]).split(" Copyright")[0].removeprefix("wrk "),
        "uWSGI": output_line([venv_program("uwsgi"), "--version"]),
        "PHP": output_line([php_fpm_binary(), "-v"]).split(" (built")[0].removeprefix("PHP "),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    found.update({name: package_version(name) for name in PACKAGES})
    said = output_line([*fcgibridge, "--version"]).removeprefix("fcgibridge ")
    found["fcgibridge"] = f"{said}, git {git_revision()}"
    return found


def machine() -> dict[str, str]:
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python_executable": sys.executable,
    }
