"""Server hooks on real processes: each hook writes a line (its name, the pid it ran in,
what it was given) to the file ``$HOOKS_LOG`` names, and the tests read the lines.

Under a supervisor (-w 2): on_starting, when_ready, on_reload, child_exit and on_exit in
the master; post_fork, post_worker_init, pre/post_request and worker_exit in the workers.
A single process runs all but post_fork and child_exit. Hooks come from ``--hooks`` (a
.py file or a module) or one option each (``mod:func``, ``mod.func``); a failing hook is
logged with its name and the server goes on, but a failing post_worker_init stops the
boot; a hook that does not import is a one-line error, also for ``--check-config``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from support import ROOT, children_of, free_port, listening_socket, process_log, run_fcgibridge, wait_until

from fcgibridge.client import FastCGIClient
from fcgibridge.config import Config
from fcgibridge.process.hooks import Hooks

APP = "tests.apps.ops_app:app"

HOOKS = '''
import os

def _line(*words):
    with open(os.environ["HOOKS_LOG"], "a") as file:
        file.write(" ".join(str(word) for word in words) + "\\n")

def on_starting(config): _line("on_starting", os.getpid(), config.app)
def when_ready(config): _line("when_ready", os.getpid())
def on_reload(config): _line("on_reload", os.getpid())
def post_fork(config, worker): _line("post_fork", os.getpid(), worker.pid, worker.number)
def post_worker_init(config, worker): _line("post_worker_init", os.getpid(), worker.number)
def pre_request(worker, request): _line("pre_request", os.getpid(), worker.number, request.params["REQUEST_URI"])
def post_request(worker, request): _line("post_request", os.getpid(), worker.number, request.params["REQUEST_URI"])
def worker_exit(config, worker): _line("worker_exit", os.getpid(), worker.number)
def child_exit(config, worker): _line("child_exit", os.getpid(), worker.pid, worker.exit_code)
def on_exit(config): _line("on_exit", os.getpid())
'''


def lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def named(log: Path, name: str) -> list[list[str]]:
    return [words[1:] for words in lines(log) if words[0] == name]


def fcgibridge(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "fcgibridge", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=30)


def test_every_hook_runs_in_its_process_under_a_supervisor(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(HOOKS)
    log = tmp_path / "hooks.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--hooks", str(tmp_path / "hooks.py"), address=address,
                        env={"HOOKS_LOG": str(log)}) as proc:
        master = str(proc.pid)
        wait_until(lambda: len(named(log, "post_worker_init")) == 2, what="two workers initialised")
        wait_until(lambda: named(log, "when_ready"), what="when_ready")
        workers = {words[0]: words[2] for words in named(log, "post_fork")}  # pid -> number
        assert sorted(workers.values()) == ["1", "2"]
        assert all(pid == own for pid, own, _ in named(log, "post_fork"))  # in the child, given its own pid
        assert named(log, "on_starting") == [[master, APP]] and named(log, "when_ready") == [[master]]
        body = FastCGIClient(address).request("GET", "/hello?x=1").body.decode()
        served_by = body.split()[1]
        wait_until(lambda: named(log, "post_request"), what="post_request")
        assert named(log, "pre_request") == [[served_by, workers[served_by], "/hello?x=1"]]
        assert named(log, "post_request") == [[served_by, workers[served_by], "/hello?x=1"]]
        old = set(children_of(proc.pid))
        # A worker that does not serve yet ignores the HUP the master passes on.
        wait_until(lambda: all(f"[{pid}] [INFO] worker ready" in process_log(proc) for pid in old))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(named(log, "child_exit")) == 2, what="the old workers retired")
        assert named(log, "on_reload") == [[master]]
        assert {words[1] for words in named(log, "child_exit")} == {str(pid) for pid in old}
        assert all(words[0] == master and words[2] == "0" for words in named(log, "child_exit"))
        new = set(children_of(proc.pid))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert {words[0] for words in named(log, "worker_exit")} == {str(pid) for pid in old | new}
    assert len(named(log, "child_exit")) == 4
    assert lines(log)[-1] == ["on_exit", master]
    assert "failed" not in process_log(proc)


def test_a_single_process_runs_the_hooks_that_make_sense_from_their_options(tmp_path: Path) -> None:
    """One option each, written both ways (mod:func and mod.func); a .py file alone gives
    the function named after the hook."""
    (tmp_path / "myhooks.py").write_text(HOOKS)
    log = tmp_path / "hooks.log"
    address = f"127.0.0.1:{free_port()}"
    options = ["--on-starting", "myhooks:on_starting", "--when-ready", "myhooks.when_ready",
               "--post-fork", "myhooks:post_fork", "--post-worker-init", "myhooks.py",
               "--pre-request", "myhooks:pre_request", "--post-request", "myhooks.post_request",
               "--worker-exit", "myhooks:worker_exit", "--child-exit", "myhooks:child_exit",
               "--on-exit", "myhooks:on_exit"]
    with run_fcgibridge(APP, "-b", address, *options, address=address, cwd=tmp_path,
                        env={"HOOKS_LOG": str(log)}) as proc:
        me = str(proc.pid)
        wait_until(lambda: named(log, "when_ready"), what="when_ready")
        FastCGIClient(address).request("GET", "/one")
        wait_until(lambda: named(log, "post_request"), what="post_request")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert lines(log) == [["on_starting", me, APP], ["post_worker_init", me, "1"], ["when_ready", me],
                          ["pre_request", me, "1", "/one"], ["post_request", me, "1", "/one"],
                          ["worker_exit", me, "1"], ["on_exit", me]]


def test_a_failing_hook_is_logged_with_its_name_and_the_server_goes_on(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def post_fork(config, worker):\n    raise RuntimeError('boom in post_fork')\n"
                                     "def pre_request(worker, request):\n    raise ValueError('boom in pre')\n"
                                     "def post_request(worker, request):\n    raise ValueError('boom in post')\n")
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "-w", "2", "--hooks", "bad", address=address, cwd=tmp_path) as proc:
        wait_until(lambda: len(children_of(proc.pid)) == 2)
        response = FastCGIClient(address).request("GET", "/")
        assert response.status == 200 and response.body.startswith(b"app ")
        wait_until(lambda: "hook post_request failed" in process_log(proc), what="the post_request failure logged")
        output = process_log(proc)
        assert "hook post_fork failed" in output and "boom in post_fork" in output
        assert "hook pre_request failed" in output and "ValueError: boom in pre" in output
        assert len(children_of(proc.pid)) == 2


def test_a_failing_post_worker_init_stops_the_boot(tmp_path: Path) -> None:
    (tmp_path / "init.py").write_text("def post_worker_init(config, worker):\n    raise RuntimeError('no tracer')\n")
    for workers in ("1", "2"):
        result = fcgibridge(APP, "-b", f"127.0.0.1:{free_port()}", "-w", workers, "--post-worker-init",
                            "init:post_worker_init", cwd=tmp_path)
        assert result.returncode == 3, result.stderr  # BOOT_FAILED
        assert "hook post_worker_init failed" in result.stderr and "RuntimeError: no tracer" in result.stderr


def test_worker_exit_runs_in_a_worker_whose_app_does_not_import(tmp_path: Path) -> None:
    """post_fork ran, so worker_exit runs too (a pool opened in post_fork is closed), once;
    child_exit and on_exit once each; in a single process worker_exit and on_exit too."""
    (tmp_path / "hooks.py").write_text(HOOKS)
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('no database')\n")
    log = tmp_path / "hooks.log"
    for workers in ("2", "1"):
        log.unlink(missing_ok=True)
        result = fcgibridge("broken_app:app", "-b", f"127.0.0.1:{free_port()}", "-w", workers, "--hooks", "hooks.py",
                            cwd=tmp_path, env={"HOOKS_LOG": str(log)})
        assert result.returncode == 2 and "raised RuntimeError: no database" in result.stderr, result.stderr
        names = [words[0] for words in lines(log)]
        if workers == "2":
            forked = [words[0] for words in named(log, "post_fork")]
            assert len(forked) == 1  # the first worker fails the boot: no other is forked
            assert [words[0] for words in named(log, "worker_exit")] == forked
            assert [words[1] for words in named(log, "child_exit")] == forked
            assert names == ["on_starting", "post_fork", "worker_exit", "child_exit", "on_exit"]
        else:
            assert names == ["on_starting", "worker_exit", "on_exit"]


def test_on_exit_follows_on_starting_when_the_port_is_taken(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(HOOKS)
    log = tmp_path / "hooks.log"
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        result = fcgibridge(APP, "-b", f"127.0.0.1:{port}", "--hooks", "hooks.py", cwd=tmp_path,
                            env={"HOOKS_LOG": str(log)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert [words[0] for words in lines(log)] == ["on_starting", "on_exit"]


def test_the_hooks_module_and_a_hook_option_naming_it_share_one_module(tmp_path: Path) -> None:
    """--hooks state.py and --worker-exit state:worker_exit: what post_worker_init keeps in
    the module, worker_exit finds (the file was imported twice, as two modules)."""
    (tmp_path / "state.py").write_text("import os\n_pool = {}\n"
                                       "def post_worker_init(config, worker):\n    _pool['db'] = 'open'\n"
                                       "def worker_exit(config, worker):\n"
                                       "    open(os.environ['HOOKS_LOG'], 'a').write(_pool.get('db', 'missing'))\n")
    log = tmp_path / "hooks.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--hooks", "state.py", "--worker-exit", "state:worker_exit",
                        address=address, cwd=tmp_path, env={"HOOKS_LOG": str(log)}) as proc:
        FastCGIClient(address).request("GET", "/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert log.read_text() == "open"


def test_a_hook_that_does_not_import_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text("when_ready = 3\ndef fine(config): pass\n")
    (tmp_path / "broken.py").write_text("import no_such_module_xyz\n")
    cases = [
        (["--post-fork", "no_such_module_xyz:post_fork"], "--post-fork no_such_module_xyz:post_fork: no module named"),
        (["--on-exit", "hooks:nothing"], "--on-exit hooks:nothing: module 'hooks' has no attribute 'nothing'"),
        (["--when-ready", "hooks.when_ready"], "--when-ready hooks.when_ready: names a int, not a function"),
        (["--on-reload", "justaname"], "--on-reload justaname: expected a dotted path"),
        (["--hooks", "missing.py"], "--hooks missing.py: file missing.py does not exist"),
        (["--hooks", "broken.py"], "--hooks broken.py: module 'broken' was found, but importing it raised "
                                   "ModuleNotFoundError: No module named 'no_such_module_xyz' ("),
        (["--hooks", "no_such_module_xyz"], "--hooks no_such_module_xyz: no module named 'no_such_module_xyz'"),
    ]
    for options, message in cases:
        for extra in ([], ["--check-config"]):
            result = fcgibridge(APP, "-b", f"127.0.0.1:{free_port()}", *options, *extra, cwd=tmp_path)
            assert result.returncode == 2, (options, extra, result.stderr)
            assert result.stderr.startswith(f"fcgibridge: error: {message}"), result.stderr
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    ok = fcgibridge(APP, "--on-exit", "hooks:fine", "--hooks", "hooks", "--check-config", cwd=tmp_path)
    assert (ok.returncode, ok.stdout) == (0, f"OK: {APP} (WSGI app)\n"), ok.stderr


def test_unset_request_hooks_add_nothing_to_a_request(tmp_path: Path) -> None:
    (tmp_path / "only_exit.py").write_text("def on_exit(config): pass\ndef pre_request(worker, request): pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert Hooks.load(Config(app=APP)).request_hooks() == (None, None)
        pre, post = Hooks.load(Config(app=APP, hooks="only_exit")).request_hooks()
        assert pre is not None and post is None
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_exit", None)


def test_request_hooks_chain_with_the_workers_own(tmp_path: Path) -> None:
    """--max-requests and --timeout keep counting and timing with pre/post_request set."""
    (tmp_path / "hooks.py").write_text(HOOKS)
    log = tmp_path / "hooks.log"
    address = f"127.0.0.1:{free_port()}"
    with run_fcgibridge(APP, "-b", address, "--max-requests", "2", "--timeout", "30", "--hooks", "hooks.py",
                        address=address, cwd=tmp_path, env={"HOOKS_LOG": str(log)}) as proc:
        wait_until(lambda: children_of(proc.pid), what="the worker")
        first = children_of(proc.pid)
        for path in ("/a", "/b"):
            FastCGIClient(address).request("GET", path)
        wait_until(lambda: "served 2 requests (--max-requests)" in process_log(proc), what="the count")
        wait_until(lambda: children_of(proc.pid) and not children_of(proc.pid) & first, what="a replacement")
        assert [words[2] for words in named(log, "pre_request")] == ["/a", "/b"]
        assert [words[2] for words in named(log, "post_request")] == ["/a", "/b"]
