"""fcgibridge's pytest plugin: a private PHP-FPM and fcgibridge servers, for tests.

pytest loads it through the ``pytest11`` entry point wherever fcgibridge is installed
(``pip install fcgibridge[pytest]``). Its fixtures:

- ``php_fpm``: a PHP-FPM of the test's own, on a temporary unix socket; ``.address``,
  ``.root`` (the document root: write scripts into it), ``.log`` (its error log), ``.pid``.
  ``@pytest.mark.php_fpm(root=..., ini={...})`` changes the root or php.ini values;
  ``php_fpm_factory(root=..., ini=...)`` starts more of them.
- ``fastcgi_server``: ``fastcgi_server(app)`` serves a WSGI or ASGI app with fcgibridge
  on a temporary unix socket, in a thread, or as a real ``fcgibridge`` process with
  ``process=True`` (the app then given as ``"module:app"``).
- ``fastcgi_client``: ``fastcgi_client(target)`` is a :class:`~fcgibridge.client.FastCGIClient`
  for an address or anything with an ``.address``; without a target it is bound to
  ``php_fpm`` (root included).
- ``fastcgi_httpx``: the same, as an ``httpx.Client`` over
  :class:`fcgibridge.httpx.FastCGITransport`.

Every server and client a fixture made is stopped or closed at the test's teardown;
processes are stopped by their PID. A test that needs PHP-FPM fails, never skips, when it
is missing. Importing this module loads the standard library only (and pytest, already
loaded): fcgibridge's server, client and httpx are imported when a fixture first needs
them, since every pytest session on the machine loads the plugin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import pytest

if TYPE_CHECKING:
    import asyncio

    import httpx

    from fcgibridge.client import FastCGIClient
    from fcgibridge.config import Config
    from fcgibridge.process.worker import Worker

#: The environment variable naming the php-fpm binary (``--php-fpm`` beats it).
PHP_FPM_ENV = "FCGIBRIDGE_PHP_FPM"

#: How long a server may take to accept connections once started, in seconds.
START_TIMEOUT = 15.0

# --------------------------------------------------------------------------- sockets and processes


def listening_socket(address: str | tuple[str, int] = ("127.0.0.1", 0)) -> socket.socket:
    """A non-blocking listening socket: a unix socket at a path, or TCP at (host, port)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def wait_for_port(address: str, timeout: float = START_TIMEOUT, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until something accepts connections at ``address`` (HOST:PORT or unix:PATH);
    RuntimeError when ``proc`` exits first or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {address}")
        family, target = (socket.AF_UNIX, address[5:]) if address.startswith("unix:") else (
            socket.AF_INET, (address.rpartition(":")[0], int(address.rpartition(":")[2])))
        with socket.socket(family) as sock:
            try:
                sock.connect(target)
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {address} after {timeout} s")


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Send ``sig`` to ``proc`` (by its PID) and reap it; SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def socket_directory() -> Path:
    """A new private directory under the system's temporary one, for unix sockets.

    A socket's path must stay under about 100 bytes, which pytest's ``tmp_path`` (the test's
    name in it) can pass; the caller removes the directory."""
    return Path(tempfile.mkdtemp(prefix="fcgibridge-"))


def _output_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def start_process(command: Sequence[str], *, output: Path, addresses: Sequence[str],
                  cwd: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                  ) -> subprocess.Popen[bytes]:
    """Start ``command``, its output in the file ``output`` (a pipe nobody reads could fill
    up and stall it), and wait until it accepts connections at every address. When it does
    not, it is stopped and RuntimeError says why, with its output."""
    with open(output, "wb") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    try:
        for address in addresses:
            wait_for_port(address, proc=proc)
    except RuntimeError as exc:
        stop_process(proc)
        raise RuntimeError(f"{exc}; its output:\n{_output_of(output)}") from None
    return proc


class ServerProcess:
    """What the plugin's server processes share: the process (once started), its PID and
    its output, kept in the file ``output_path``; stopped by its PID."""

    #: What it is, for the error before it started.
    name = "the process"

    def __init__(self, output_path: Path) -> None:
        self.output_path = output_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The PID of the process (PHP-FPM's master, fcgibridge's supervisor)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    @property
    def output(self) -> str:
        """What the process printed so far."""
        return _output_of(self.output_path)

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM, then SIGKILL if it lingers)."""
        if self.proc is not None:
            stop_process(self.proc)


class Factory:
    """What the fixtures' factories share: what each made is stopped or closed, last first,
    by :meth:`close` at the test's teardown."""

    def __init__(self) -> None:
        self.made = 0
        self.stack = contextlib.ExitStack()

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- PHP-FPM


class PhpFpmMissing(Exception):
    """No php-fpm binary where it was looked for; the message says how to get one."""


#: Where php-fpm may be when it is not on PATH (Debian's sbin is not on a user's PATH).
_PHP_FPM_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")


def _version_key(path: str) -> tuple[int, ...]:
    """``php-fpm8.10`` after ``php-fpm8.2``: the numbers in the name."""
    return tuple(int(part) for part in re.findall(r"\d+", Path(path).name))


def find_php_fpm(explicit: str | None = None) -> str:
    """The php-fpm binary: ``explicit`` (the ``--php-fpm`` option), else ``$FCGIBRIDGE_PHP_FPM``,
    else ``php-fpm`` on PATH, else the newest ``php-fpmX.Y`` on PATH or in ``/usr/sbin``.

    Raises :class:`PhpFpmMissing` saying how to install it or point at it."""
    for where, given in (("--php-fpm", explicit), (PHP_FPM_ENV, os.environ.get(PHP_FPM_ENV))):
        if given:
            found = shutil.which(given)
            if found is None:
                raise PhpFpmMissing(f"php-fpm is needed by this test, and {where}={given} is no executable file. "
                                    + _INSTALL_HINT)
            return found
    found = shutil.which("php-fpm")
    if found:
        return found
    directories = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d] + list(_PHP_FPM_DIRS)
    for directory in directories:
        versions = [p for p in glob.glob(os.path.join(glob.escape(directory), "php-fpm[0-9]*"))
                    if os.access(p, os.X_OK)]
        if versions:
            return max(versions, key=_version_key)
    raise PhpFpmMissing("php-fpm is needed by this test and was not found (php-fpm or php-fpmX.Y on PATH "
                        f"or in {', '.join(_PHP_FPM_DIRS)}). " + _INSTALL_HINT)


_INSTALL_HINT = ("Install it (Debian/Ubuntu: apt-get install php-fpm; Fedora: dnf install php-fpm; "
                 f"macOS: brew install php) or give its path: --php-fpm=PATH or {PHP_FPM_ENV}=PATH.")


def _php_fpm_listen(address: str) -> str:
    """An fcgibridge address (``unix:PATH``, ``HOST:PORT``) as php-fpm's ``listen`` value."""
    return address.removeprefix("unix:")


class PhpFpm(ServerProcess):
    """A private PHP-FPM: its own ``php-fpm.conf`` in ``directory``, one static pool of
    ``children`` per address in ``listen`` (default: one unix socket in a new directory),
    run in the foreground and stopped by its PID.

    ``ini`` values are each pool's ``php_admin_value`` entries. With ``system_ini`` PHP
    reads the system's php.ini and its extensions (what the app meets in production);
    without, none (``php-fpm -n``). As root the pools run as root (``-R``); as another
    user, as that user.
    """

    name = "PHP-FPM"

    def __init__(self, directory: Path, *, binary: str, root: Path, listen: Sequence[str] = (),
                 children: int = 2, ini: Mapping[str, str] | None = None, system_ini: bool = True) -> None:
        super().__init__(directory / "php-fpm.out")
        self.directory = directory
        self.binary = binary
        self.root = root
        self._sockets: Path | None = None
        if not listen:
            self._sockets = socket_directory()
            listen = (f"unix:{self._sockets / 'php-fpm.sock'}",)
        self.addresses = list(listen)
        self.children = children
        self.ini = dict(ini or {})
        self.system_ini = system_ini
        self.conf = directory / "php-fpm.conf"
        self.log_path = directory / "php-fpm.log"

    @property
    def address(self) -> str:
        """The first pool's address (``unix:PATH`` by default)."""
        return self.addresses[0]

    @property
    def log(self) -> str:
        """The error log so far: PHP-FPM's own lines and what the scripts logged (``error_log()``,
        warnings); see :meth:`wait_for_log`."""
        return _output_of(self.log_path)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The error log once it holds ``text``; AssertionError with the log when it does not
        within ``timeout`` seconds. A script's lines reach the log through the master a
        moment after its response (PHP-FPM reads them from the child's stderr), so a test
        waits for them rather than read :attr:`log` at once."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log):
            if time.monotonic() >= deadline:
                raise AssertionError(f"{text!r} not in PHP-FPM's log after {timeout:g} s:\n{log}")
            time.sleep(0.02)
        return log

    def script(self, name: str) -> str:
        """The path of script ``name`` under the document root (for ``SCRIPT_FILENAME``)."""
        return str(self.root / name)

    def config_text(self) -> str:
        """The whole ``php-fpm.conf``."""
        text = f"[global]\npid = {self.directory / 'php-fpm.pid'}\nerror_log = {self.log_path}\n"
        text += "daemonize = no\nlog_level = notice\n"
        for number, address in enumerate(self.addresses):
            text += f"\n[pool{number}]\nlisten = {_php_fpm_listen(address)}\n"
            if os.geteuid() == 0:
                text += "user = root\ngroup = root\n"
            text += f"pm = static\npm.max_children = {self.children}\n"
            text += "catch_workers_output = yes\ndecorate_workers_output = no\nclear_env = no\n"
            text += f"chdir = {self.root}\n"
            text += "".join(f"php_admin_value[{name}] = {value}\n" for name, value in self.ini.items())
        return text

    def start(self) -> PhpFpm:
        """Start it and wait until every pool accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())
        command = [self.binary, "-F", "-y", str(self.conf), "-p", str(self.directory)]
        if not self.system_ini:
            command.append("-n")
        if os.geteuid() == 0:
            command.append("-R")
        try:
            self.proc = start_process(command, output=self.output_path, addresses=self.addresses, cwd=self.directory)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"PHP-FPM ({' '.join(command)}) did not start: {exc}\n{self.log}") from None
        return self

    def stop(self) -> None:
        """Stop the master by its PID (it stops its children) and remove the socket directory."""
        super().stop()
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)

    def __enter__(self) -> PhpFpm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PhpFpmFactory(Factory):
    """``php_fpm_factory(root=..., ini=..., children=..., system_ini=...)`` starts a
    :class:`PhpFpm` in the test's temporary directory."""

    def __init__(self, directory: Path, binary_option: str | None) -> None:
        super().__init__()
        self.directory = directory
        self.binary_option = binary_option

    def __call__(self, *, root: str | os.PathLike[str] | None = None, ini: Mapping[str, str] | None = None,
                 children: int = 2, system_ini: bool = True) -> PhpFpm:
        try:
            binary = find_php_fpm(self.binary_option)
        except PhpFpmMissing as exc:
            pytest.fail(str(exc), pytrace=False)
        self.made += 1
        directory = self.directory / f"php-fpm{self.made}"
        directory.mkdir(parents=True)
        server = PhpFpm(directory, binary=binary, root=Path(root) if root else directory / "root",
                        children=children, ini=ini, system_ini=system_ini)
        self.stack.callback(server.stop)
        return server.start()


# --------------------------------------------------------------------------- fcgibridge servers


class ServerThread:
    """A worker serving ``app`` on its own event loop in a background thread.

    ``interface`` is an :class:`~fcgibridge.importer.Interface` value (``wsgi``,
    ``asgi3``, ...); ``sock`` a listening socket (:func:`listening_socket`)."""

    def __init__(self, app: Any, interface: str, sock: socket.socket, config: Config) -> None:
        from fcgibridge.importer import Interface, LoadedApp
        from fcgibridge.process.runtime import Runtime
        from fcgibridge.process.worker import Worker, new_event_loop

        self.sock = sock
        name = sock.getsockname()
        self.address = f"unix:{name}" if isinstance(name, str) else f"{name[0]}:{name[1]}"
        self.loop: asyncio.AbstractEventLoop = new_event_loop(config.loop)
        self.worker: Worker = Worker(LoadedApp(app, Interface(interface), "test"), [sock], Runtime(config))
        self.ready = threading.Event()
        self.result: BaseException | int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        try:
            self.result = self.loop.run_until_complete(self.worker.serve(self.ready.set))
        except BaseException as exc:  # reported to the test
            self.result = exc
            self.ready.set()
        finally:
            self.loop.close()

    def start(self) -> ServerThread:
        """Start serving; raises what the worker raised while starting."""
        self.thread.start()
        if not self.ready.wait(START_TIMEOUT):
            raise RuntimeError("server thread did not start")
        if isinstance(self.result, BaseException):
            raise self.result
        return self

    def stop(self, timeout: float = 10) -> None:
        """Stop gracefully; raises what the worker raised while serving."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.worker.stop)
            self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("server thread did not stop")
        if isinstance(self.result, BaseException):
            raise self.result

    @property
    def state(self) -> Any:
        """The worker's state (its adapter, limits, counters)."""
        return self.worker.state


def resolve_interface(app: Any, interface: str) -> str:
    """The :class:`~fcgibridge.importer.Interface` value for ``interface``: ``auto`` is
    told from ``app``'s signature, ``asgi`` means ASGI 3."""
    from fcgibridge.importer import Interface, detect_interface

    if interface == "auto":
        return str(detect_interface(app, name=getattr(app, "__name__", None)))
    return str(Interface("asgi3" if interface == "asgi" else interface))


@contextlib.contextmanager
def serve(app: Any, interface: str = "auto", *, unix: str | os.PathLike[str] | None = None,
          **options: Any) -> Iterator[ServerThread]:
    """Serve ``app`` in a thread for the duration of the block: on a unix socket at
    ``unix``, else on a free loopback TCP port. ``options`` are
    :class:`~fcgibridge.config.Config` fields (``limit_concurrency=2``, ...)."""
    from fcgibridge.config import Config

    config = dataclasses.replace(Config(app="test"), **options)
    resolved = resolve_interface(app, interface)
    sock = listening_socket(os.fspath(unix) if unix else ("127.0.0.1", 0))
    try:
        server = ServerThread(app, resolved, sock, config).start()
    except BaseException:
        sock.close()
        raise
    try:
        yield server
    finally:
        server.stop()


def option_flags(options: Mapping[str, Any]) -> list[str]:
    """``fcgibridge`` command-line flags for :class:`~fcgibridge.config.Config` fields:
    ``workers=2`` → ``--workers 2``, ``preload=True`` → ``--preload``, a list → the flag
    repeated. TypeError for a name that is no option."""
    from fcgibridge.config import Config

    fields = {f.name: f for f in dataclasses.fields(Config)}
    flags: list[str] = []
    for name, value in options.items():
        if name not in fields or name == "app":
            raise TypeError(f"{name!r} is not an fcgibridge option (see fcgibridge --help)")
        given = fields[name].metadata["option"].flags
        flag = next((f for f in given if f.startswith("--")), "--" + name.replace("_", "-"))
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag.removeprefix("--"))
        else:
            for item in value if isinstance(value, list | tuple) else [value]:
                flags += [flag, str(item)]
    return flags


def fcgibridge_command(*args: str) -> list[str]:
    """The ``fcgibridge`` command line with this interpreter (and so its installed packages)."""
    return [sys.executable, "-m", "fcgibridge", *args]


class FcgibridgeProcess(ServerProcess):
    """A real ``fcgibridge ARGS...`` process (workers, signals, reloads) serving at
    ``address``, its output in the file ``output``; stopped by its PID.

    ``env`` is its whole environment; by default this one's, with this interpreter's
    ``sys.path`` on ``PYTHONPATH``, so that the app imports there as it does in the test."""

    name = "the fcgibridge process"

    def __init__(self, args: Sequence[str], *, address: str, output: Path, cwd: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(output)
        self.args = list(args)
        self.address = address
        self.cwd = cwd
        if env is None:
            paths = [os.environ.get("PYTHONPATH", ""), *sys.path]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        self.env = dict(env)

    def start(self) -> FcgibridgeProcess:
        """Start it and wait until it accepts connections."""
        self.proc = start_process(fcgibridge_command(*self.args), output=self.output_path, addresses=[self.address],
                                  cwd=self.cwd, env=self.env)
        return self


class ServerFactory(Factory):
    """``fastcgi_server(app, interface="auto", process=False, **options)``: see
    :func:`fastcgi_server`."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def __call__(self, app: Any, interface: str = "auto", *, process: bool = False,
                 **options: Any) -> ServerThread | FcgibridgeProcess:
        self.made += 1
        sockets = socket_directory()
        self.stack.callback(shutil.rmtree, sockets, ignore_errors=True)
        path = sockets / "fcgi.sock"
        if not process:
            return self.stack.enter_context(serve(app, interface, unix=path, **options))
        if not isinstance(app, str):
            raise TypeError(f"process=True needs the app as an import string ('module:app'), not {app!r}")
        if interface != "auto":
            options = {**options, "interface": "asgi3" if interface == "asgi" else interface}
        server = FcgibridgeProcess([app, "-b", f"unix:{path}", *option_flags(options)], address=f"unix:{path}",
                                   output=self.directory / f"fcgibridge{self.made}.log", cwd=os.getcwd())
        self.stack.callback(server.stop)
        return server.start()

# --------------------------------------------------------------------------- clients


def _target_of(request: pytest.FixtureRequest, target: object) -> tuple[str, str | None]:
    """(address, document root) of what a client fixture was given: an address, an object
    with ``.address`` (and maybe ``.root``), or nothing: the test's ``php_fpm``."""
    if target is None:
        target = request.getfixturevalue("php_fpm")
    if isinstance(target, str):
        return target, None
    address = getattr(target, "address", None)
    if not isinstance(address, str):
        raise TypeError(f"a FastCGI address ('unix:PATH', 'HOST:PORT') or a server with .address, not {target!r}")
    root = getattr(target, "root", None)
    return address, os.fspath(root) if root is not None else None


class _ClientFactory(Factory):
    """What both client factories share: the test's request, for its ``php_fpm``."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        super().__init__()
        self.request = request


class ClientFactory(_ClientFactory):
    """``fastcgi_client(target=None, **options)``: see :func:`fastcgi_client`."""

    def __call__(self, target: object = None, **options: Any) -> FastCGIClient:
        from fcgibridge.client import FastCGIClient

        address, root = _target_of(self.request, target)
        options.setdefault("root", root)
        client = FastCGIClient(address, **options)
        self.stack.callback(client.close)
        return client


class HttpxFactory(_ClientFactory):
    """``fastcgi_httpx(target=None, base_url=..., **transport_options)``: see :func:`fastcgi_httpx`."""

    def __call__(self, target: object = None, *, base_url: str = "http://testserver",
                 **options: Any) -> httpx.Client:
        try:
            import httpx

            from fcgibridge.httpx import FastCGITransport
        except ImportError as exc:
            pytest.fail(f"fastcgi_httpx needs httpx: pip install 'fcgibridge[httpx]' ({exc})", pytrace=False)
        address, root = _target_of(self.request, target)
        if root is None and isinstance(target, ServerThread | FcgibridgeProcess):
            root = "/"  # the transport wants a document root; a Python app reads no scripts from it
        options.setdefault("root", root)
        client = httpx.Client(transport=FastCGITransport(address, **options), base_url=base_url)
        self.stack.callback(client.close)
        return client


# --------------------------------------------------------------------------- hooks and fixtures


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fcgibridge", "fcgibridge (PHP-FPM and FastCGI fixtures)")
    group.addoption("--php-fpm", metavar="PATH", default=None,
                    help=f"the php-fpm binary for the php_fpm fixture (default: ${PHP_FPM_ENV}, "
                    "else php-fpm on PATH or /usr/sbin/php-fpm*)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "php_fpm(root=None, ini=None, children=2, system_ini=True): how the php_fpm fixture starts "
        "PHP-FPM (document root, php.ini values)")


@pytest.fixture
def php_fpm_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PhpFpmFactory]:
    """``php_fpm_factory(root=None, ini=None, children=2, system_ini=True)`` starts a
    private PHP-FPM (:class:`PhpFpm`); each is stopped after the test."""
    with PhpFpmFactory(tmp_path, request.config.getoption("--php-fpm")) as factory:
        yield factory


@pytest.fixture
def php_fpm(request: pytest.FixtureRequest, php_fpm_factory: PhpFpmFactory) -> PhpFpm:
    """A private PHP-FPM on a temporary unix socket (:class:`PhpFpm`: ``.address``,
    ``.root``, ``.log``, ``.pid``); ``@pytest.mark.php_fpm(root=..., ini={...})`` sets
    how it starts."""
    marker = request.node.get_closest_marker("php_fpm")
    return php_fpm_factory(**(marker.kwargs if marker else {}))


@pytest.fixture
def fastcgi_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``fastcgi_server(app, interface="auto", process=False, **options)`` serves a WSGI or
    ASGI app with fcgibridge on a temporary unix socket and returns the server (its
    ``.address``). ``interface`` is ``auto``, ``wsgi`` or ``asgi``; ``options`` are
    fcgibridge's options by their Config names (``workers=2``). In a thread of this
    process by default; with ``process=True`` as a real ``fcgibridge`` process, ``app``
    then an import string. Stopped after the test."""
    with ServerFactory(tmp_path) as factory:
        yield factory


@pytest.fixture
def fastcgi_client(request: pytest.FixtureRequest) -> Iterator[ClientFactory]:
    """``fastcgi_client(target=None, **options)`` is a :class:`~fcgibridge.client.FastCGIClient`
    for ``target``: an address, or a server with ``.address`` (and ``.root``, the
    default document root); without one, the test's ``php_fpm``. ``options`` are the
    client's (``timeout``, ``keep_alive``, ``root``, ...). Closed after the test."""
    with ClientFactory(request) as factory:
        yield factory


@pytest.fixture
def fastcgi_httpx(request: pytest.FixtureRequest) -> Iterator[HttpxFactory]:
    """``fastcgi_httpx(target=None, base_url="http://testserver", **options)`` is an
    ``httpx.Client`` over :class:`fcgibridge.httpx.FastCGITransport` for ``target``, as
    for ``fastcgi_client``; ``options`` go to the transport. Closed after the test."""
    with HttpxFactory(request) as factory:
        yield factory
